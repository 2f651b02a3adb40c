"End-to-end: the `lessonlib-train` command on a small folder of images, and its bad inputs."
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from lessonlib.data import get_dataset

OUTPUTS = ['lr_find.png', 'schedule.png', 'augmentations.png', 'confusion.png', 'top_losses.png', 'metrics.json',
           'model.safetensors']


def _cmd(*args, env=None):
    exe = Path(sys.executable).with_name('lessonlib-train')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from lessonlib.train import main; sys.exit(main())']
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'LESSONLIB_QUIET': '1', 'MPLBACKEND': 'Agg', **(env or {})}
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=e, timeout=900)


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    "A 4-class, 24+8 images per class copy of the bundled sample, with a space and non-ASCII in its path."
    src, dest = get_dataset('fashion-sample'), tmp_path_factory.mktemp('train') / 'my clothés'
    for split, n in (('train', 24), ('valid', 8)):
        for cls in sorted((src / split).iterdir())[:4]:
            (dest / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]: shutil.copy(f, dest / split / cls.name / f.name)
    return dest


def test_train_writes_everything(small, tmp_path):
    out, cache = tmp_path / 'run', tmp_path / 'cache'
    r = _cmd(small, '--sz', 32, '--bs', 16, '--out', out, '--cache-dir', cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith('.')]   # the cache went where it was told…
    assert not (small / 'tmp').exists()                                                      # …not into the dataset
    assert 'has no effect while precompute' not in r.stderr, r.stderr[-3000:]   # step 1 precomputes on purpose: no warning…
    assert 'augmentation starts at step 4' in r.stdout                   # …the log says what happens instead
    for name in OUTPUTS: assert (out / name).stat().st_size > 0, name
    m = json.loads((out / 'metrics.json').read_text())
    assert m['n_train'] == 96 and m['n_valid'] == 32 and len(m['classes']) == 4
    assert [s['step'][0] for s in m['steps']] == ['1', '2', '3', '4', '7', '8', 'T']
    assert 0 <= m['tta_accuracy'] <= 1 and m['seconds_total'] > 0
    assert 1e-4 <= m['lrs_unfrozen'][-1] <= 1e-3
    assert m['bn_frozen'] is True                      # 96 images: BatchNorm statistics stay frozen (auto)
    np.testing.assert_allclose(np.array(m['lrs_unfrozen'][1:]) / m['lrs_unfrozen'][:-1], [3, 3])
    from lessonlib.export import load_model
    pred = load_model(out / 'model.safetensors')
    label, idx, probs = pred.predict(next((small / 'valid').rglob('*.png')))
    assert label in m['classes'] and abs(float(probs.sum()) - 1) < 1e-4


def test_train_bad_inputs(tmp_path):
    r = _cmd(tmp_path / 'no such folder', '--out', tmp_path / 'out')
    assert r.returncode == 2 and 'no such folder' in r.stderr, r.stderr
    (tmp_path / 'flat').mkdir(); (tmp_path / 'flat' / 'a.png').write_bytes(b'')
    r = _cmd(tmp_path / 'flat', '--out', tmp_path / 'out2')
    assert r.returncode == 2 and 'train' in r.stderr, r.stderr
    r = _cmd('--sz', 4)
    assert r.returncode == 2 and '--sz' in r.stderr


def _warns_then_stops(root):
    "A dataset that warns (a loose file in train/), then fails (a class only in valid/): the warning costs no training."
    from PIL import Image
    for split, cls in (('train', 'a'), ('valid', 'a'), ('valid', 'b')):
        (root / split / cls).mkdir(parents=True); Image.new('RGB', (8, 8)).save(root / split / cls / 'x.png')
    (root / 'train' / 'notes.txt').write_text('not an image')
    return root


def test_warnings_print_as_plain_lines(tmp_path):
    r = _cmd(_warns_then_stops(tmp_path / 'ds'), '--out', tmp_path / 'out')
    assert r.returncode == 2 and "class(es) ['b']" in r.stderr, r.stderr
    assert any(l.startswith('warning: ') and 'notes.txt' in l for l in r.stderr.splitlines()), r.stderr
    assert 'UserWarning' not in r.stderr and 'sys.exit(main())' not in r.stderr, r.stderr


def test_plain_warnings_only_inside_main(tmp_path, capsys):
    import warnings
    import lessonlib.train as T
    before = warnings.showwarning
    with pytest.raises(SystemExit): T.main([str(_warns_then_stops(tmp_path / 'ds')), '--out', str(tmp_path / 'out')])
    assert 'warning: ' in capsys.readouterr().err and warnings.showwarning is before   # library users keep normal warnings


@pytest.mark.parametrize('flag, key, want', [([], 'bn_freeze', None), (['--bn-freeze', 'on'], 'bn_freeze', True),
                                             (['--bn-freeze', 'off'], 'bn_freeze', False), ([], 'n_cycle', 2),
                                             (['--cycles', '3'], 'n_cycle', 3), ([], 'cache_dir', None),
                                             (['--cache-dir', 'c'], 'cache_dir', 'c'), ([], 'aug_epochs', 2),
                                             (['--aug-epochs', '0'], 'aug_epochs', 0)])
def test_flags_reach_run_recipe(monkeypatch, flag, key, want):
    import lessonlib.train as T
    seen = {}
    monkeypatch.setattr(T, 'run_recipe', lambda *a, **kw: seen.update(kw))
    assert T.main(flag) == 0 and seen[key] == want and type(seen[key]) is type(want)


def test_run_recipe_closes_its_data(small, tmp_path, monkeypatch):
    "run_recipe stops its loaders' workers when it ends, also when a step fails (here TTA)."
    import lessonlib.train as T
    closed = []
    monkeypatch.setattr(T.ImageData, 'close', lambda self: closed.append(self))
    def broken_tta(self, *a, **k): raise RuntimeError('TTA broke')
    monkeypatch.setattr(T.ConvLearner, 'TTA', broken_tta)
    with pytest.raises(RuntimeError, match='TTA broke'):
        T.run_recipe(small, sz=32, bs=16, out=tmp_path/'run', n_cycle=1, aug_epochs=0, log=lambda *a: None, cache_dir=tmp_path/'cache')
    assert len(closed) == 1 and isinstance(closed[0], T.ImageData)


def test_bn_freeze_flag_bad_value():
    r = _cmd('--bn-freeze', 'maybe')
    assert r.returncode == 2 and '--bn-freeze' in r.stderr


def test_train_multi_label_csv(tmp_path):
    "A small collage set (lesson 13) in the planet layout: detected as multi-label, F2 at 0.5 and at fitted thresholds reported."
    import lessonlib.external as E
    from test_external import _fake_fashion
    src = _fake_fashion(tmp_path/'idx', n_train=600, n_test=10)
    ds = E._build_atomically(tmp_path/'collage', lambda tmp: E._build_collage(tmp, src, n=80))
    out = tmp_path/'run'
    r = _cmd(ds, '--csv', 'labels.csv', '--sz', 32, '--bs', 16, '--out', out, '--aug-epochs', 0)   # as bench/multilabel.py runs it
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert [s['step'][0] for s in m['steps']] == ['1', '2', '3', '7', '8', 'T'] and 'augmentation starts at step 7' in r.stdout
    assert m['multi_label'] is True and m['n_train'] == 64 and m['n_valid'] == 16 and len(m['classes']) == 10
    assert all('valid_f2' in s for s in m['steps'] if s['step'][0] in '348')
    assert 0 <= m['tta_f2_at_0.5'] <= m['tta_f2_fitted'] <= 1 and 0 <= m['tta_f2_cross_fitted'] <= 1
    assert sorted(m['thresholds']) == m['classes'] and 'F2' in r.stdout
    assert (out/'f2_thresholds.png').stat().st_size > 0 and not (out/'confusion.png').exists()
    from lessonlib.export import load_model
    pred = load_model(out/'model.safetensors')
    np.testing.assert_allclose(pred.thresh, [m['thresholds'][c] for c in m['classes']])
    tags, idx, probs = pred.predict(next((ds/'train').glob('*.png')))
    assert isinstance(tags, list) and set(tags) <= set(m['classes'])
    r = _cmd(ds, '--csv', 'labels.csv', '--multi', '--sz', 4)              # the flag parses; bad size still refused
    assert r.returncode == 2 and '--sz' in r.stderr
