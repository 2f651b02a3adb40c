"Tests of lessonlib.precompute (and its engine, lessonlib.cache_store) on a tiny conv net and tiny image folders (fast: no pretrained weights)."
import os, sys, json, time, shutil, contextlib, signal, random, subprocess, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
from PIL import Image
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from fastcore.test import test_eq as eq, test_ne as ne, test_fail as fails
import lessonlib.precompute as P
import lessonlib.cache_store as S
from lessonlib.precompute import (ActivationCache, cache_key, cache_parts, file_manifest, describe_changes,
                                  warn_augs_ignored, PrecomputeAugWarning, CacheLoader)

os.environ.setdefault('LESSONLIB_QUIET', '1')
TOL = dict(atol=2e-3, rtol=2e-3)   # float16 storage

# ---- tiny stand-ins for lessonlib.data (the cache only needs fnames, y, tfm.describe() and ds[i] -> (x, y)) ----
class TinyTfm:
    def __init__(self, sz, augs=(), mean=(0.5,)*3, std=(0.5,)*3): self.sz, self.augs, self.mean, self.std = sz, list(augs), mean, std
    is_aug = property(lambda self: bool(self.augs))
    def describe(self): return {'sz': self.sz, 'mean': list(self.mean), 'std': list(self.std), 'augs': [repr(a) for a in self.augs]}
    def __call__(self, img):
        x = TF.resize(TF.pil_to_tensor(img), [self.sz, self.sz], antialias=True)
        for a in self.augs: x = a(x)
        return TF.normalize(x.float() / 255, self.mean, self.std)

class TinyDS(torch.utils.data.Dataset):
    def __init__(self, fnames, y, tfm): self.fnames, self.y, self.tfm = list(fnames), np.asarray(y), tfm
    def __len__(self): return len(self.fnames)
    def __getitem__(self, i): return self.tfm(Image.open(self.fnames[i]).convert('RGB')), self.y[i]

def make_images(root, n_per_class=8, classes=('a', 'b', 'c'), size=20, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in [('train', n_per_class), ('valid', max(2, n_per_class // 3))]:
        for c in classes:
            (root/split/c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root/split/c/f'{i}.png')
    return Path(root)

AUGS = lambda sz: [T.RandomHorizontalFlip(0.5), T.RandomResizedCrop(sz, scale=(0.5, 1), antialias=True)]

def datasets(root, sz=16, y_index=False):
    "train/valid TinyDS; with `y_index` the target of row i is i (to check row/target alignment)."
    out = {}
    for split in ['train', 'valid']:
        fn = sorted((Path(root)/split).glob('*/*.png'))
        y = np.arange(len(fn)) if y_index else np.array([ord(f.parent.name) - ord('a') for f in fn])
        out[split] = TinyDS(fn, y, TinyTfm(sz))
    return out

def aug_ds(dss, sz=16): return TinyDS(dss['train'].fnames, dss['train'].y, TinyTfm(sz, AUGS(sz)))

def body(seed=0, slow=0.0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(Slow(slow), m) if slow else m

class Slow(nn.Module):
    "Sleeps in forward so that a build takes long enough to be killed in the middle."
    def __init__(self, secs): super().__init__(); self.secs = secs
    def extra_repr(self): return f'secs={self.secs}'
    def forward(self, x): time.sleep(self.secs); return x

def direct(fn, ds):
    "Features by a direct forward of the whole dataset (the reference)."
    fn.eval()
    with torch.no_grad(): return fn(torch.stack([ds[i][0] for i in range(len(ds))])).numpy()

@pytest.fixture(scope='module')
def root(tmp_path_factory): return make_images(tmp_path_factory.mktemp('imgs'))

def build(root, cache_dir, fn=None, **kw):
    dss = kw.pop('dss', None) or datasets(root)
    return ActivationCache.build_or_open(fn or body(), dss, {'arch': 'tiny'}, cache_dir, bs=kw.pop('bs', 5), **kw)

# ---------------------------------------------------------------------------------------------------------------
def test_features_equal_direct_forward(root, tmp_path):
    fn, dss = body(), datasets(root)
    fn.train()                                            # the build must switch to eval and restore this
    c = ActivationCache.build_or_open(fn, dss, {'arch': 'tiny'}, tmp_path/'c', bs=5)
    assert fn.training and fn[1].training
    eq(c.status, 'built'); eq(c.path.parent, tmp_path/'c')
    for s in ['train', 'valid']:
        f = c.features(s)
        assert isinstance(f, np.memmap) and f.dtype == np.float16
        np.testing.assert_allclose(f.astype(np.float32), direct(fn, dss[s]), **TOL)
        eq(c.targets(s), dss[s].y)
    c32 = ActivationCache.build_or_open(fn, dss, {'arch': 'tiny'}, tmp_path/'c', dtype='float32', bs=5)
    ne(c32.key, c.key)
    np.testing.assert_allclose(c32.features('train'), direct(fn, dss['train']), atol=1e-5, rtol=1e-5)
    # reopening: same folder, no build
    c2 = ActivationCache.build_or_open(body(), datasets(root), {'arch': 'tiny'}, tmp_path/'c')
    eq((c2.status, c2.path, c2.key), ('reused', c.path, c.key))
    eq(c2.verify(), [])
    assert 'reused' in c2.describe() and str(c.path) in repr(c2)

def test_building_leaves_the_random_numbers_alone(root, tmp_path):
    "Same seed, same training afterwards, whether the cache was built in this run or found on disk."
    after = []
    for status in ('built', 'reused'):
        torch.manual_seed(0)
        c = ActivationCache.build_or_open(body(), datasets(root), {'arch': 'tiny'}, tmp_path/'c', bs=5, num_workers=2)
        eq(c.status, status); after.append(torch.rand(3))
    eq(after[0], after[1])

def test_default_cache_dir_is_under_the_dataset(tmp_path):
    r = make_images(tmp_path/'data', n_per_class=2)
    c = ActivationCache.build_or_open(body(), datasets(r), {}, None)
    eq(c.path.parent, r/'tmp'/'lessonlib-cache')
    assert (r/'tmp'/'lessonlib-cache'/'index.json').exists()
    eq(sorted(p.name for p in c.path.iterdir()), ['files.json', 'manifest.json', 'train.npy', 'valid.npy'])

def key_of(root, **kw):
    fn = kw.pop('fn', None) or body()
    return cache_key(cache_parts(fn, kw.pop('dss', None) or datasets(root, **kw), {'arch': 'tiny'}, root=root))

def test_key_changes_exactly_when_the_numbers_can(tmp_path):
    r = make_images(tmp_path/'d', n_per_class=3)
    k = key_of(r)
    eq(key_of(r), k)                                   # same everything: same key
    dss = datasets(r); dss['train'].y = dss['train'].y[::-1].copy()
    eq(key_of(r, dss=dss), k)                          # labels do not change the features
    ne(key_of(r, sz=24), k)                            # sz
    ne(key_of(r, fn=body(seed=1)), k)                  # weights
    f = sorted((r/'train').glob('*/*.png'))[0]
    st = f.stat()
    data = bytearray(f.read_bytes()); data[-20] ^= 0xFF
    f.write_bytes(bytes(data)); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))   # same size and mtime:
    eq(key_of(r), k)                                   # documented limit (size + mtime_ns, like make/rsync)
    f.write_bytes(bytes(data)); k2 = key_of(r)              # a real write moves mtime
    ne(k2, k)
    (r/'train'/'a'/'extra.png').write_bytes(sorted((r/'train').glob('*/*.png'))[1].read_bytes()); k3 = key_of(r)
    ne(k3, k2)                                         # one file added
    dss = datasets(r); dss['train'].fnames = dss['train'].fnames[::-1]
    ne(key_of(r, dss=dss), k3)                         # file order
    (r/'train'/'a'/'extra.png').unlink()
    eq(key_of(r), k2)                                  # back to the same list: back to the same key
    eq(cache_key({'a': 1, 'b': [1, 2]}), cache_key({'b': (1, 2), 'a': 1}))

def test_cache_format_2_keys_weights_with_tensor_digest(root, tmp_path):
    "Format 2 fingerprints the weights with core's tensor_digest; a format-1 cache has another key and is never opened as ours."
    from lessonlib.core import tensor_digest
    fn = body()
    eq(P.module_fingerprint(fn)['weights'], tensor_digest(fn.state_dict())[:16])
    parts = cache_parts(fn, datasets(root), {'arch': 'tiny'}, root=root)
    eq((parts['format'], P.CACHE_FORMAT), (2, 2))
    ne(cache_key({**parts, 'format': 1}), cache_key(parts))
    c = build(root, tmp_path/'c')
    m = json.loads((c.path/'manifest.json').read_text()); m['format'] = 1
    (c.path/'manifest.json').write_text(json.dumps(m))
    fails(lambda: S.open_folder(c.path, c.key, {}), exc=S.CacheCorrupt, contains='format')

def test_manifest_checksums_keep_their_layout(root, tmp_path):
    "The checksums now come from core's file_sha256: the same digests as before (full, and quick = 16 sampled blocks)."
    import hashlib
    from lessonlib.core import file_sha256
    def digest_v1(path, quick=False, block=2**20):          # precompute's own `_digest` before #15, verbatim
        size = os.path.getsize(path)
        with open(path, 'rb') as f:
            if not quick or size <= 16 * block: return hashlib.file_digest(f, 'sha256').hexdigest()
            h = hashlib.sha256()
            for i in range(16): f.seek(i * (size - block) // 15); h.update(f.read(block))
        return h.hexdigest()
    c = build(root, tmp_path/'c')
    for name, m in c.manifest['files'].items():
        eq((m['sha256'], m['quick']), (digest_v1(c.path/f'{name}.npy'), digest_v1(c.path/f'{name}.npy', quick=True)))
    f = tmp_path/'big.bin'; f.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    eq(file_sha256(f, quick=True, block=64), digest_v1(f, quick=True, block=64))
    ne(file_sha256(f, quick=True, block=64), file_sha256(f))

def test_file_manifest_relative_and_missing(tmp_path):
    (tmp_path/'x').mkdir(); (tmp_path/'x'/'1.png').write_bytes(b'12345')
    (rel, size, mt), = file_manifest([tmp_path/'x'/'1.png'], tmp_path)
    eq((rel, size), ('x/1.png', 5))
    fails(lambda: file_manifest([tmp_path/'nope.png'], tmp_path), contains='nope.png')

def test_changes_and_index(tmp_path):
    r = make_images(tmp_path/'d', n_per_class=3)
    c1 = build(r, tmp_path/'c')
    eq(c1.changes, [])
    for i in range(3): Image.open(sorted((r/'train').glob('*/*.png'))[0]).save(r/'train'/'b'/f'new{i}.png')
    c2 = build(r, tmp_path/'c', dss=datasets(r, sz=24))
    eq(c2.changes, ['train: 3 files added', 'sz 16 → 24'])
    assert '3 files added' in c2.describe()
    c3 = build(r, tmp_path/'c', dss=datasets(r, sz=16))
    eq(c3.changes, ['sz 24 → 16'])                       # vs c2, the most recently used one
    idx = json.loads((tmp_path/'c'/'index.json').read_text())
    eq(len(idx['caches']), 3)

def test_loader_streams_aligned_float32(root, tmp_path):
    dss = datasets(root, y_index=True)
    c = build(root, tmp_path/'c', dss=dss)
    f = c.features('train')
    dl = c.loader('train', bs=7, shuffle=True)
    eq(len(dl), 4)
    ys = []
    for xb, yb in dl:
        eq(xb.dtype, torch.float32)
        eq(xb, torch.from_numpy(np.asarray(f[yb.numpy()], np.float32)))
        ys += yb.tolist()
    eq(sorted(ys), list(range(len(f))))
    xb, yb = next(iter(c.loader('valid', bs=4)))
    eq(yb.tolist(), [0, 1, 2, 3])
    eq(len(c.loader('train', bs=7, drop_last=True)), 3)

def test_unwritable_cache_folder_falls_back_to_memory(root, tmp_path, warned_here):
    (tmp_path/'afile').write_text('not a folder')
    with pytest.warns(UserWarning, match='not writable') as rec:
        c = build(root, tmp_path/'afile'/'cache')
    warned_here(rec, 'not writable')
    eq((c.path, c.status), (None, 'in memory'))
    np.testing.assert_allclose(c.features('train').astype(np.float32), direct(body(), datasets(root)['train']), **TOL)
    xb, yb = next(iter(c.loader('train', bs=4, shuffle=True)))
    eq(xb.shape, (4, 16))
    assert 'in memory' in c.describe()

def test_read_only_folder_with_a_valid_cache_opens(root, tmp_path, monkeypatch):
    c = build(root, tmp_path/'c')
    monkeypatch.setattr(P, 'not_writable', lambda d: PermissionError('read-only'))   # as precompute sees it
    with warnings.catch_warnings(): warnings.simplefilter('error'); c2 = build(root, tmp_path/'c')
    eq((c2.status, c2.path), ('reused', c.path))

def test_readonly_folder(root, tmp_path, readonly):
    d = tmp_path/'ro'; d.mkdir()
    readonly(d)
    with pytest.warns(UserWarning, match='not writable'): c = build(root, d/'cache')
    eq((c.path, c.status), (None, 'in memory'))
    eq(list(d.iterdir()), [])                               # nothing was written

@pytest.mark.parametrize('damage', ['flip', 'truncate', 'manifest', 'delete'])
def test_corrupted_cache_is_detected_and_rebuilt(root, tmp_path, damage, warned_here):
    c = build(root, tmp_path/'c')
    ref = np.array(c.features('train')); del c
    folder = next(p for p in (tmp_path/'c').iterdir() if p.is_dir())
    f = folder/'train.npy'
    if damage == 'flip':
        b = bytearray(f.read_bytes()); b[len(b) // 2] ^= 0x40; f.write_bytes(bytes(b))
    elif damage == 'truncate': f.write_bytes(f.read_bytes()[:-10])
    elif damage == 'manifest': (folder/'manifest.json').write_text('{"key": ')
    else: f.unlink()
    with pytest.warns(UserWarning, match='corrupted cache detected') as rec: c2 = build(root, tmp_path/'c')
    warned_here(rec, 'corrupted cache detected')
    eq(c2.status, 'rebuilt'); eq(c2.verify(), [])
    np.testing.assert_allclose(c2.features('train'), ref, **TOL)
    eq([p.name for p in (tmp_path/'c').iterdir() if p.name.startswith('.')], [])

def test_big_cache_open_checks_sizes_and_samples(root, tmp_path, monkeypatch):
    c = build(root, tmp_path/'c')
    monkeypatch.setattr(S, 'FULL_VERIFY_BYTES', 0)      # as for a big cache: open checks sizes + sampled blocks only
    eq(build(root, tmp_path/'c').status, 'reused')
    eq(c.verify(full=False), []); eq(c.verify(), [])
    f = c.path/'valid.npy'; f.write_bytes(f.read_bytes() + b'x')
    eq(c.verify(full=False), [f'valid.npy has {f.stat().st_size} bytes, expected {f.stat().st_size - 1}'])
    with pytest.warns(UserWarning, match='valid.npy has'): eq(build(root, tmp_path/'c').status, 'rebuilt')

def test_ctrl_c_leaves_no_complete_cache_and_resumes(root, tmp_path):
    class Interrupt(nn.Module):
        def __init__(self, n): super().__init__(); self.n = n
        def forward(self, x):
            self.n -= 1
            if self.n < 0: raise KeyboardInterrupt
            return x
    ref = build(root, tmp_path/'ref')
    fn = nn.Sequential(Interrupt(3), body())
    old = S.CHECKPOINT_SECS; S.CHECKPOINT_SECS = 0
    try:
        with pytest.raises(KeyboardInterrupt): build(root, tmp_path/'c', fn=fn)
    finally: S.CHECKPOINT_SECS = old
    assert build(root, tmp_path/'c', fn=fn, build=False) is None   # nothing opens as complete
    partial = [p for p in (tmp_path/'c').iterdir() if p.name.startswith('.partial')]
    eq(len(partial), 1)
    eq(json.loads((partial[0]/'progress.json').read_text())['done'], {'train': 15})
    fn[0].n = 10**9
    c = build(root, tmp_path/'c', fn=fn)
    eq(c.status, 'resumed')
    np.testing.assert_allclose(c.features('train'), ref.features('train'), **TOL)
    eq([p.name for p in (tmp_path/'c').iterdir() if p.name.startswith('.')], [])

def test_augmented_views(root, tmp_path, warned_here):
    dss = datasets(root)
    ads = aug_ds(dss)
    with pytest.warns(PrecomputeAugWarning) as rec:
        warn_augs_ignored(TinyTfm(16, [T.RandomVerticalFlip()]))
    warned_here(rec, 'no effect while precompute is on')
    c = build(root, tmp_path/'c', dss=dss, n_augs=3, aug_ds=ads)
    a = c.aug_features()
    eq(a.shape, (3, len(dss['train']), 16))
    c2 = build(root, tmp_path/'c2', dss=datasets(root), n_augs=3, aug_ds=aug_ds(datasets(root)))
    np.testing.assert_allclose(c2.aug_features(), a, **TOL)               # deterministic (seeded per view and image)
    plain = np.asarray(c.features('train'), np.float32)
    for v in range(3): assert np.abs(a[v].astype(np.float32) - plain).max() > 1e-2   # views are augmented
    assert np.abs(a[0].astype(np.float32) - a[1]).max() > 1e-2
    # a view is what the augmented dataset gives under its seed
    fn = body(); fn.eval()
    with torch.no_grad(): x = fn(P._SeededView(ads, 0, 2)[5][0][None])[0].numpy()
    np.testing.assert_allclose(a[2, 5].astype(np.float32), x, **TOL)
    # each epoch draws one view per image, cycling through all K over K epochs
    views = np.stack([c.views(e) for e in range(3)])
    for i in range(views.shape[1]): eq(sorted(views[:, i]), [0, 1, 2])
    dl = c.loader('train', bs=100, shuffle=True, epoch=1)
    xb, yb = next(iter(dl))
    eq(xb.shape, (len(dss['train']), 16))
    plain_dl = c.loader('train', bs=100, shuffle=True, aug=False)
    assert plain_dl.views is None and dl.views is not None
    ne(c.key, build(root, tmp_path/'c', dss=dss, n_augs=2, aug_ds=ads).key)
    fails(lambda: build(root, tmp_path/'c', dss=dss, n_augs=2), contains='aug_ds')
    other = TinyDS(dss['valid'].fnames, dss['valid'].y, TinyTfm(16, AUGS(16)))
    fails(lambda: build(root, tmp_path/'c', dss=dss, n_augs=2, aug_ds=other), contains='same files')

def test_bad_arguments(root, tmp_path):
    fails(lambda: build(root, tmp_path/'c', dtype='int8'), contains='dtype')
    fails(lambda: build(root, tmp_path/'c', n_augs=-1), contains='n_augs')
    class NoFiles(torch.utils.data.Dataset):
        def __len__(self): return 1
    fails(lambda: ActivationCache.build_or_open(body(), {'train': NoFiles()}, {}, tmp_path/'c', root=tmp_path),
              contains='fnames')

# ---- kill -9 at random moments -----------------------------------------------------------------------------------
# A "zygote" process imports everything once; for each run it forks a fresh builder process, which we SIGKILL at a
# random moment (importing torch for each of 12 runs would take most of the time budget on 2 shared cores).
ZYGOTE = r"""
import os, sys
sys.path.insert(0, {tests!r})
import lessonlib.precompute as P, lessonlib.cache_store as S
import test_precompute as T
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        S.CHECKPOINT_SECS = 0.0
        dss = T.datasets({root!r}, y_index=True)
        fn, ads = T.body(slow=0.01), T.aug_ds(dss)
        print('READY', os.getpid(), flush=True)
        c = P.ActivationCache.build_or_open(fn, dss, {{'arch': 'tiny'}}, {cache!r}, bs=2, n_augs=2, aug_ds=ads)
        print('DONE', c.status, flush=True); os._exit(0)
    _, status = os.waitpid(pid, 0)
    print('EXIT', status, flush=True)
"""

def test_kill_9_at_random_moments_never_yields_wrong_features(root, tmp_path):
    dss = datasets(root, y_index=True)
    kw = dict(bs=2, n_augs=2, aug_ds=aug_ds(dss), dss=dss, fn=body(slow=0.01))
    ref = build(root, tmp_path/'ref', **{**kw, 'fn': body()})          # a clean build (no Slow layer: another key)
    def same(c):
        for s in ['train', 'valid']: np.testing.assert_allclose(c.features(s), ref.features(s), **TOL)
        np.testing.assert_allclose(c.aug_features(), ref.aug_features(), **TOL)
    cache = tmp_path/'c'
    script = ZYGOTE.format(tests=str(Path(__file__).parent), root=str(root), cache=str(cache))
    z = subprocess.Popen([sys.executable, '-c', script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, 'LESSONLIB_QUIET': '1', 'OMP_NUM_THREADS': '1'})
    def start():
        z.stdin.write('go\n'); z.stdin.flush()
        tag, pid = z.stdout.readline().split(); assert tag == 'READY'
        return int(pid)
    def reap(): 
        while not (line := z.stdout.readline()).startswith('EXIT'): pass
        return int(line.split()[1])
    def left():
        "Fraction of the rows the next run still has to compute (from the partial build's progress)."
        pr = next(iter(cache.glob('.partial-*/progress.json')), None)
        done = sum(json.loads(pr.read_text())['done'].values()) if pr else 0
        return 1 - done / (len(dss['train']) * 3 + len(dss['valid']))   # train, valid and 2 augmented views
    rng, statuses, killed, runs = random.Random(0), [], 0, 0
    try:
        start(); t0 = time.perf_counter(); reap(); t_build = time.perf_counter() - t0   # calibrate: one full build
        same(build(root, cache, build=False, **kw)); shutil.rmtree(next(cache.glob('[0-9a-f]*')))
        while killed < 10 and runs < 25:
            runs += 1
            pid = start()
            time.sleep(rng.uniform(0, 1.1 * t_build * left()))         # usually mid-build, now and then just after
            with contextlib.suppress(ProcessLookupError): os.kill(pid, signal.SIGKILL)
            killed += reap() == signal.SIGKILL                        # waitpid status of a SIGKILLed child
            c = build(root, cache, build=False, **kw)                 # whatever opens as complete must be right
            if c is not None: same(c); statuses.append('complete')
            if runs % 3 == 0 or c is not None:                         # resume (or rebuild), compare, start over
                c = build(root, cache, **kw); same(c); statuses.append(c.status)
                shutil.rmtree(c.path)
    finally: z.kill(); z.wait()
    print(f'{killed} of {runs} builds killed; then {statuses}')
    assert killed >= 10 and 'resumed' in statuses, (killed, statuses)

# ---- odds and ends -------------------------------------------------------------------------------------------------
def test_a_second_builder_waits_for_the_first(root, tmp_path):
    "Two builds of the same cache at once: the second waits on the lock, then opens what the first built."
    import threading
    dss = datasets(root)
    name = cache_key(cache_parts(body(), dss, {'arch': 'tiny'}, root=root))[:P.KEY_CHARS]
    (tmp_path/'c').mkdir()
    out = {}
    with S._locked(tmp_path/'c'/f'.partial-{name}.lock'):         # "another process" is building
        th = threading.Thread(target=lambda: out.setdefault('c', build(root, tmp_path/'c', dss=dss)))
        th.start(); time.sleep(0.5)
        assert th.is_alive() and 'c' not in out                   # waiting, not building alongside
    th.join(30)
    eq(out['c'].status, 'built'); eq(out['c'].verify(), [])

def test_empty_split_and_device_names(root, tmp_path):
    dss = datasets(root)
    dss['test'] = TinyDS([], np.zeros(0, np.int64), TinyTfm(16))
    c = build(root, tmp_path/'c', dss=dss, device='cpu')
    eq(c.features('test').shape, (0, 16))
    eq(len(c.loader('test', bs=4)), 0)
    eq(build(root, tmp_path/'c', dss=dss).status, 'reused')
    fails(lambda: build(root, tmp_path/'c', dss=dss, device='meta'), contains='move it there first')

def _rss_file_kb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('RssFile')).split()[1])

@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='needs Linux /proc')
def test_loader_memory_stays_flat(tmp_path):
    "A shuffled epoch over a 48 MB cached file must not pull the file into our RSS (a memory map would)."
    a = np.lib.format.open_memmap(tmp_path/'f.npy', 'w+', np.float16, (9600, 2560)); a[:] = 1; a.flush(); del a
    mm = np.load(tmp_path/'f.npy', mmap_mode='r')
    before, peak = _rss_file_kb(), 0
    for xb, yb in CacheLoader(mm, np.arange(9600), bs=64, shuffle=True):
        peak = max(peak, _rss_file_kb())
    assert peak - before < 8 * 1024, (before, peak)          # < 8 MB, for 48 MB read
    eq(float(xb.sum()), xb.numel())

def test_aug_rows_from_file_match_memory(root, tmp_path):
    dss = datasets(root)
    c = build(root, tmp_path/'c', dss=dss, n_augs=2, aug_ds=aug_ds(dss))
    a = np.asarray(c.aug_features())
    for e in range(2):
        xf = torch.cat([x for x, _ in c.loader('train', bs=5, shuffle=False, epoch=e, aug=True)])
        xm = torch.cat([x for x, _ in CacheLoader(a, dss['train'].y, 5, False, c.views(e))])
        eq(xf, xm); eq(xf.numpy(), a[c.views(e), np.arange(a.shape[1])].astype(np.float32))
