"""Data-parallel training (issue #18) on CPU with the gloo backend: 2 processes started by `torchrun` against 1 process.

Each test starts real processes (`torchrun --standalone`), so the module is the slowest part of `make test` that it adds
(about two minutes on 2 cores): small images (sz 32), a few hundred files, heads trained on cached activations.
"""
import json, os, shutil, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone']

# One job for every test: it prints one JSON line per process ('{"rank": ..}') with what the test compares.
JOB = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    import torch
    from torch import nn
    from lessonlib.core import set_seed, tensor_digest
    from lessonlib.data import ImageData
    from lessonlib.augment import tfms_from_model
    from lessonlib.learner import ConvLearner
    import lessonlib.precompute, lessonlib.export, lessonlib.schedules
    from lessonlib.distributed import init_distributed, rank, world_size, dist_backend
    a = json.loads(sys.argv[1])
    init_distributed(device=a.get('device') if os.environ.get('RANK') == '1' else None)   # a test makes rank 1 differ
    set_seed(0)
    root = Path(a['root'])
    data = ImageData.from_paths(root, tfms=tfms_from_model('efficientnet_lite0', 32), bs=a['bs'], num_workers=0)
    if a.get('kill_in_build') and rank() == 1:         # die (SIGKILL: no clean-up) while the cache is being built
        calls = [0]
        def die(m, i, o):
            calls[0] += 1
            if calls[0] > 40: os.kill(os.getpid(), 9)
        nn.modules.module.register_module_forward_hook(die)
    kw = dict(ps=0., xtra_fc=[]) if a.get('plain_head') or a.get('bn_head') else {}
    learn = ConvLearner.pretrained('efficientnet_lite0', data, cache_dir=a['cache'], opt_func=a.get('opt', 'adamw'), **kw)
    if a.get('plain_head'): learn.model[1][2] = nn.Identity()     # no BatchNorm: batch statistics differ per process
    learn.precompute = True
    digests, param_digests, validate = [], [], learn.validate
    def recording_validate(*args, **kwargs):         # at the end of every epoch: weights before, weights + statistics after
        param_digests.append(tensor_digest(dict(learn.model.named_parameters())))
        res = validate(*args, **kwargs)
        digests.append(tensor_digest(learn.model.state_dict())); return res
    learn.validate = recording_validate
    status = learn.activation_cache().status
    learn.fit_one_cycle(a['epochs'], a['lr']) if a.get('one_cycle') else learn.fit(a['lr'], a['epochs'])
    res = learn.validate()
    if a.get('export'): learn.export(a['export'])
    head = {k: v.tolist() for k, v in learn.head.state_dict().items() if v.is_floating_point()}
    sys.stdout.write(json.dumps({'rank': rank(), 'world': world_size(), 'backend': dist_backend(), 'status': status, 'valid': res,
                      'digests': digests, 'param_digests': param_digests, 'head': head if rank() == 0 else None}) + '\\n')
    sys.stdout.flush()                                  # one write per line: the processes share stdout
''')


def _rows(*outputs):
    "The per-rank JSON lines that the jobs print, in rank order."
    return sorted((json.loads(l) for o in outputs for l in o.splitlines() if l.startswith('{"rank"')), key=lambda d: d['rank'])


def _run(tmp, args, n=None, timeout=600, env=None):
    "Run the job in `n` processes under torchrun (n=None: one plain process); (returncode, [per-rank dicts], output)."
    script = tmp/'job.py'
    script.write_text(JOB)
    cmd = ([*TORCHRUN, f'--nproc_per_node={n}'] if n else [sys.executable]) + [str(script), json.dumps(args)]
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'LESSONLIB_QUIET': '1', 'PYTHONPATH': str(ROOT), **(env or {})}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=tmp)
    return r.returncode, _rows(r.stdout), r.stdout + r.stderr


def _copy(src, dest, n_train, n_valid, n_classes):
    for split, n in (('train', n_train), ('valid', n_valid)):
        for cls in sorted((src/split).iterdir())[:n_classes]:
            (dest/split/cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]: shutil.copy(f, dest/split/cls.name/f.name)
    return dest


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    from lessonlib.data import get_dataset
    src, base = get_dataset('fashion-sample'), tmp_path_factory.mktemp('dist')
    return {'even': _copy(src, base/'even', 32, 16, 4),          # 128 training images: 2 batches of 64, 4 of 32
            'more': _copy(src, base/'more', 60, 40, 10),         # 600 training, 400 validation images, 10 classes
            'large': _copy(src, base/'large', 200, 100, 10)}     # 2,000 training, 1,000 validation images


def _head(rows): return {k: np.array(v) for k, v in rows[0]['head'].items()}


def test_two_processes_of_32_equal_one_of_64(folders, tmp_path):
    "Deterministic head (no BatchNorm, no dropout): 2 x batch 32 ends where 1 x batch 64 does, within 1e-5. The cache built by 2 processes is reused by 1."
    # SGD: Adam divides by the gradient's size, so a gradient that is ~0 steps by ±lr on float noise alone
    cache = str(tmp_path/'cache')
    args = dict(root=str(folders['even']), cache=cache, lr=0.1, epochs=1, plain_head=True, opt='sgd')
    rc, two, out = _run(tmp_path, {**args, 'bs': 32}, n=2)
    assert rc == 0, out[-3000:]
    rc, one, out1 = _run(tmp_path, {**args, 'bs': 64}, n=1)
    assert rc == 0, out1[-3000:]
    assert [r['world'] for r in two] == [2, 2] and two[0]['backend'] == 'gloo' and one[0]['world'] == 1
    assert two[0]['status'] == 'built' and one[0]['status'] == 'reused'     # the content key has no world size in it
    h2, h1 = _head(two), _head(one)
    assert h2.keys() == h1.keys() and h1
    for k in h1: np.testing.assert_allclose(h2[k], h1[k], rtol=0, atol=1e-5, err_msg=k)
    moved = max(float(np.abs(h1[k]).max()) for k in h1)
    assert moved > 1e-3                                                         # the head did train
    assert two[0]['valid'] == two[1]['valid']
    np.testing.assert_allclose(two[0]['valid']['valid_loss'], one[0]['valid']['valid_loss'], atol=1e-4)


def test_batchnorm_head_two_processes_of_32_equal_one_of_64(folders, tmp_path):
    "BatchNorm head, no dropout: BatchNorm normalises over both processes' rows, so 2 x 32 ends where 1 x 64 does (weights and running statistics)."
    args = dict(root=str(folders['even']), cache=str(tmp_path/'cache'), lr=0.1, epochs=1, bn_head=True, opt='sgd')
    rc, two, out = _run(tmp_path, {**args, 'bs': 32}, n=2)
    assert rc == 0, out[-3000:]
    rc, one, out1 = _run(tmp_path, {**args, 'bs': 64}, n=1)
    assert rc == 0, out1[-3000:]
    h2, h1 = _head(two), _head(one)
    assert any('running_var' in k for k in h1)
    for k in h1: np.testing.assert_allclose(h2[k], h1[k], rtol=0, atol=1e-5, err_msg=k)
    assert two[0]['digests'] == two[1]['digests']


SYNC_BN_JOB = textwrap.dedent('''
    import json, sys, torch
    from torch import nn
    import torch.distributed as dist
    from timm.layers import BatchNormAct2d
    from lessonlib.distributed import init_distributed, sync_batchnorm, rank, world_size
    init_distributed(); torch.manual_seed(0)
    layers = {'1d': nn.BatchNorm1d(5), '2d': nn.BatchNorm2d(3), 'timm': BatchNormAct2d(3, act_layer=nn.ReLU)}
    xs = {'1d': torch.randn(8, 5) * 3 + 1, '2d': torch.randn(8, 3, 4, 4) * 2 - 1, 'timm': torch.randn(8, 3, 4, 4) + 0.5}
    out = {}
    for name, bn in layers.items():
        nn.init.normal_(bn.weight); nn.init.normal_(bn.bias); bn.train()
        sync_batchnorm(bn)
        x = xs[name].chunk(world_size())[rank()].clone().requires_grad_()
        y = bn(x); (y ** 3).mean().backward()              # a loss whose gradient depends on every output
        grads = [p.grad.clone() for p in bn.parameters()]
        for g in grads: dist.all_reduce(g) if world_size() > 1 else None
        out[name] = {'y': y.tolist(), 'dx': x.grad.tolist(), 'dw': [(g / world_size()).tolist() for g in grads],
                     'mean': bn.running_mean.tolist(), 'var': bn.running_var.tolist(), 'type': type(bn).__name__}
    sys.stdout.write(json.dumps({'rank': rank(), 'out': out}) + '\\n'); sys.stdout.flush()
''')


def test_sync_batchnorm_equals_one_batch(tmp_path):
    "BatchNorm1d, BatchNorm2d and timm's BatchNormAct2d on 2 processes x 4 rows: outputs, gradients and running statistics of 1 x 8."
    script = tmp_path/'sync_bn.py'; script.write_text(SYNC_BN_JOB)
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    runs = {}
    for n in (2, None):
        cmd = [*TORCHRUN, '--nproc_per_node=2', str(script)] if n else [sys.executable, str(script)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=e, cwd=tmp_path)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        runs[n] = _rows(r.stdout)
    whole = runs[None][0]['out']
    for name, ref in whole.items():
        got = [row['out'][name] for row in runs[2]]
        assert got[0]['type'] == 'Sync' + ref['type']
        np.testing.assert_allclose(np.concatenate([g['y'] for g in got]), ref['y'], atol=1e-5, err_msg=name)
        # a row's gradient on its process covers both losses (the all-reduce's backward); DDP then halves the weights' gradients
        np.testing.assert_allclose(np.concatenate([g['dx'] for g in got]) / 2, ref['dx'], atol=1e-5, err_msg=name)
        for g in got:
            for a, b in zip(g['dw'], ref['dw']): np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(g['mean'], ref['mean'], atol=1e-6, err_msg=name)
            np.testing.assert_allclose(g['var'], ref['var'], atol=1e-5, err_msg=name)
    assert np.min(whole['timm']['y']) == 0 and np.min(np.concatenate([r['out']['timm']['y'] for r in runs[2]])) == 0   # timm's ReLU kept


def test_default_head_matches_one_process_and_ranks_stay_identical(folders, tmp_path):
    "Default head (BatchNorm, dropout), 16 one-cycle epochs: accuracy within 0.02 of one process; every epoch all ranks hold the same weights."
    # The runs differ only in their random numbers (dropout masks). bench/margins.py runs this test on seeds 0-4 x 1, 2
    # threads (LESSONLIB_SEED, OMP_NUM_THREADS); three constant-rate epochs on 600 images scattered by up to 0.045 from dropout alone.
    from lessonlib.core import set_seed, check_at_least
    set_seed(0)                                                                # the seed the jobs use, for check_at_least's record
    env = {'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    args = dict(root=str(folders['large']), cache=str(tmp_path/'cache'), lr=3e-3, epochs=16, one_cycle=True)
    rc, two, out = _run(tmp_path, {**args, 'bs': 32}, n=2, env=env)
    assert rc == 0, out[-3000:]
    rc, one, out1 = _run(tmp_path, {**args, 'bs': 64}, env=env)              # plain python: no torchrun at all
    assert rc == 0, out1[-3000:]
    assert one[0]['world'] == 1 and one[0]['backend'] is None and one[0]['status'] == 'reused'
    assert len(two[0]['digests']) == 17 and two[0]['digests'] == two[1]['digests']   # bit-identical after every epoch (16) and at the end
    assert two[0]['param_digests'] == two[1]['param_digests']                  # the weights, even before BatchNorm statistics are shared
    assert two[0]['valid'] == two[1]['valid']                                  # every rank reports the same numbers
    acc2, acc1 = two[0]['valid']['accuracy'], one[0]['valid']['accuracy']
    print('accuracy: 2 processes', acc2, '1 process', acc1)
    check_at_least(acc1, 0.6, 'distributed: 1-process accuracy, default head')
    check_at_least(0.02 - abs(acc2 - acc1), 0, 'distributed: 0.02 minus |2-process - 1-process accuracy|')


def test_two_nodes_by_rendezvous(folders, tmp_path):
    "Two `torchrun --nnodes=2` launchers meeting at a c10d rendezvous endpoint (two machines, played on this one) train as one 2-process run."
    import socket
    with socket.socket() as sock: sock.bind(('127.0.0.1', 0)); port = sock.getsockname()[1]
    args = dict(root=str(folders['even']), cache=str(tmp_path/'cache'), lr=0.1, epochs=1, plain_head=True, opt='sgd', bs=32)
    script = tmp_path/'job.py'; script.write_text(JOB)
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'LESSONLIB_QUIET': '1', 'PYTHONPATH': str(ROOT)}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', '--nproc_per_node=1', '--rdzv-backend=c10d',
           f'--rdzv-endpoint=127.0.0.1:{port}', '--rdzv-id=lessonlib-test', str(script), json.dumps(args)]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e, cwd=tmp_path) for _ in range(2)]
    outs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], '\n'.join(o[-2000:] for o in outs)
    rows = _rows(*outs)
    assert [(r['rank'], r['world']) for r in rows] == [(0, 2), (1, 2)]
    assert rows[0]['digests'] == rows[1]['digests'] and rows[0]['valid'] == rows[1]['valid']
    rc, one, out1 = _run(tmp_path, {**args, 'bs': 64}, n=1)                    # the same cache, the same steps in one process
    assert rc == 0 and one[0]['status'] == 'reused', out1[-3000:]
    h2, h1 = _head(rows), _head(one)
    for k in h1: np.testing.assert_allclose(h2[k], h1[k], rtol=0, atol=1e-5, err_msg=k)


def test_killed_rank_stops_the_run_and_leaves_no_half_written_cache(folders, tmp_path):
    "Rank 1 is killed (SIGKILL) while the cache is built: the run ends with an error naming it, no hang, no final cache folder."
    cache = tmp_path/'cache'
    args = dict(root=str(folders['more']), cache=str(cache), bs=32, lr=1e-2, epochs=1, kill_in_build=True,
                export=str(tmp_path/'model.safetensors'))
    rc, rows, out = _run(tmp_path, args, n=2, timeout=300, env={'LESSONLIB_DIST_TIMEOUT': '60'})
    assert rc != 0 and rows == []
    assert 'SIGKILL' in out or 'Signal 9' in out, out[-3000:]
    finished = [p for p in cache.iterdir() if not p.name.startswith('.') and p.is_dir()] if cache.exists() else []
    assert finished == [], finished                       # a cache folder appears only complete (rank 0 renames it)
    assert not (tmp_path/'model.safetensors').exists()
    assert not list(tmp_path.rglob('*.tmp'))


def test_bad_starts_name_the_problem(folders, tmp_path):
    "More processes than batches, a backend this PyTorch lacks, processes on different devices: a clear error at start."
    args = dict(root=str(folders['even']), cache=str(tmp_path/'cache'), lr=1e-2, epochs=1)
    rc, rows, out = _run(tmp_path, {**args, 'bs': 128}, n=2)
    assert rc != 0 and '2 processes, but the training set has only 128 images = 1 mini-batch(es) of 128' in out, out[-3000:]
    rc, rows, out = _run(tmp_path, {**args, 'bs': 32}, n=2, env={'LESSONLIB_DIST_BACKEND': 'mpi'})
    assert rc != 0 and "backend 'mpi' is not available" in out, out[-3000:]
    rc, rows, out = _run(tmp_path, {**args, 'bs': 32, 'device': 'meta'}, n=2)   # rank 1 claims another device
    assert rc != 0 and 'The processes disagree on the device type (rank 0: cpu, rank 1: meta)' in out, out[-3000:]


def test_torchrun_train_command(folders, tmp_path):
    "`torchrun --standalone --nproc_per_node=2 -m lessonlib.train` runs the recipe; rank 0 writes; metrics.json has world_size 2."
    out = tmp_path/'run'
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'LESSONLIB_QUIET': '1', 'MPLBACKEND': 'Agg', 'PYTHONPATH': str(ROOT)}
    r = subprocess.run([*TORCHRUN, '--nproc_per_node=2', '-m', 'lessonlib.train', str(folders['even']), '--sz', '32',
                        '--bs', '16', '--out', str(out)], capture_output=True, text=True, timeout=900, env=e)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert m['world_size'] == 2 and m['backend'] == 'gloo' and m['n_train'] == 128
    assert r.stdout.count('augmentation starts at step 4') == 1               # one log, from rank 0
    for name in ('lr_find.png', 'confusion.png', 'model.safetensors'): assert (out/name).stat().st_size > 0
    assert not list(out.glob('.*'))                                             # no temporary file left
    from lessonlib.export import load_model
    assert load_model(out/'model.safetensors').classes == m['classes']


def test_single_process_helpers():
    "Without torchrun the helpers are the identity: one process, rank 0, nothing to gather."
    from lessonlib.distributed import world_size, rank, is_main, mean_over_ranks, gather_rows, shard_loader, ShardSampler, from_main
    assert (world_size(), rank(), is_main()) == (1, 0, True)
    assert mean_over_ranks(torch.tensor(2.5)) == 2.5 and from_main('x') == 'x'
    t = torch.arange(6.)
    assert gather_rows(t) is t
    dl = torch.utils.data.DataLoader(range(10), batch_size=4)
    assert shard_loader(dl) is dl
    s = ShardSampler(10, shuffle=False, rank_=1, world=3)                      # rows 1, 4, 7
    assert list(s) == [1, 4, 7] and len(s) == 3
    parts = []
    for r in range(3): torch.manual_seed(0); parts.append(list(ShardSampler(10, shuffle=True, rank_=r, world=3)))
    assert all(len(p) == 4 for p in parts) and sorted(set(sum(parts, []))) == list(range(10))   # padded to 12: 4 each


def test_close_stops_the_shares_workers(tmp_path, monkeypatch):
    "ImageData.close() also stops the workers of this process's share of a loader (shard_loader's copy), even while it is held."
    import lessonlib.distributed as D
    from lessonlib.data import ImageData
    from test_data import tiny_folder, loader_workers
    data = ImageData.from_paths(tiny_folder(tmp_path, n_train=6), bs=2, num_workers=2)
    for name, value in (('is_distributed', True), ('world_size', 2), ('rank', 0)): monkeypatch.setattr(D, name, lambda v=value: v)
    share = D.shard_loader(data.val_dl)                       # not shuffled: no collective call is needed
    assert next(iter(share))[1].shape == (2,) and share is not data.val_dl
    workers = loader_workers(share)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    data.close()
    assert not any(w.is_alive() for w in workers)
