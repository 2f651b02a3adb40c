"Tests of lessonlib.external: the cache root, the dataset builders, the IDX reader and checked downloads."
import csv, gzip, os
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

import lessonlib.external as E
from lessonlib.core import file_sha256
from lessonlib.external import CLASSES, get_dataset, read_idx, download_url, fashion_mnist_arrays

def test_data_passes_the_names_on():
    "Lesson 1 and the later lessons import these from lessonlib.data: the very same objects."
    import lessonlib.data as D
    assert D.get_dataset is get_dataset and D.CLASSES is CLASSES
    assert {'get_dataset', 'CLASSES'} <= set(D.__all__)

# ---------------------------------------------------------------- get_dataset
def test_sample_layout_and_reuse(sample_path):
    assert sample_path.parent == Path(os.environ['LESSONLIB_DATA'])
    assert sorted(p.name for p in (sample_path/'train').iterdir()) == sorted(CLASSES)
    for c in CLASSES:
        assert len(list((sample_path/'train'/c).glob('*.png'))) == 600
        assert len(list((sample_path/'valid'/c).glob('*.png'))) == 100
    before = (sample_path/'README.txt').stat()            # a second call finds the folder and rebuilds nothing
    assert get_dataset('fashion-sample') == sample_path
    after = (sample_path/'README.txt').stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # the images are the bundled arrays, written losslessly
    z = np.load(Path(E.__file__).parent/'assets'/'fashion_sample.npz')
    i = 17; f = sample_path/'train'/CLASSES[z['y_train'][i]]/f"{z['idx_train'][i]:05d}.png"
    np.testing.assert_array_equal(np.asarray(Image.open(f)), z['x_train'][i])
    assert not list(sample_path.parent.glob('.fashion-sample.tmp-*'))

def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="name='mnist'.*fashion-sample"): get_dataset('mnist')

def test_atomic_build_failure_leaves_nothing(tmp_path, monkeypatch):
    def boom(tmp, src=None):
        (tmp/'train').mkdir(); (tmp/'train'/'half.png').write_bytes(b'x'); raise KeyboardInterrupt
    monkeypatch.setitem(E._BUILDERS, 'fashion-sample', boom)
    with pytest.raises(KeyboardInterrupt): get_dataset('fashion-sample', dest=tmp_path)
    assert list(tmp_path.iterdir()) == []

def test_stale_tmp_of_dead_process_is_removed(tmp_path, monkeypatch):
    stale = tmp_path/'.fashion-sample.tmp-999999999-abc'; (stale/'train').mkdir(parents=True)
    monkeypatch.setitem(E._BUILDERS, 'fashion-sample', lambda tmp, src=None: (tmp/'ok').write_text('1'))
    out = get_dataset('fashion-sample', dest=tmp_path)
    assert out == tmp_path/'fashion-sample' and (out/'ok').exists() and not stale.exists()

def test_concurrent_finisher_wins(tmp_path, monkeypatch):
    "If another process renamed its finished copy first, ours is discarded and theirs returned."
    def build(tmp, src=None):
        (tmp/'mine').write_text('1')
        (tmp_path/'fashion-sample').mkdir(); (tmp_path/'fashion-sample'/'theirs').write_text('1')
    monkeypatch.setitem(E._BUILDERS, 'fashion-sample', build)
    out = get_dataset('fashion-sample', dest=tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ['theirs']
    assert [p.name for p in tmp_path.iterdir()] == ['fashion-sample']

def test_sample_csv_layout(tmp_path):
    p = get_dataset('fashion-sample-csv', dest=tmp_path)
    rows = list(csv.reader(open(p/'labels.csv')))
    assert rows[0] == ['id', 'label'] and len(rows) == 6001
    assert len(list((p/'train').glob('*.png'))) == 6000 and len(list((p/'test').glob('*.png'))) == 1000
    assert {r[1] for r in rows[1:]} == set(CLASSES)

def _write_idx(path, arr, gz=True):
    arr = np.asarray(arr, np.uint8)
    raw = b'\0\0\x08' + bytes([arr.ndim]) + b''.join(int(s).to_bytes(4, 'big') for s in arr.shape) + arr.tobytes()
    Path(path).write_bytes(gzip.compress(raw) if gz else raw)

def _fake_fashion(folder, n_train=20, n_test=10, gz=True):
    folder.mkdir(parents=True, exist_ok=True); rng = np.random.default_rng(0)
    sfx = '.gz' if gz else ''
    _write_idx(folder/f'train-images-idx3-ubyte{sfx}', rng.integers(0, 255, (n_train, 28, 28)), gz)
    _write_idx(folder/f'train-labels-idx1-ubyte{sfx}', np.arange(n_train) % 10, gz)
    _write_idx(folder/f't10k-images-idx3-ubyte{sfx}', rng.integers(0, 255, (n_test, 28, 28)), gz)
    _write_idx(folder/f't10k-labels-idx1-ubyte{sfx}', np.arange(n_test) % 10, gz)
    return folder

@pytest.mark.parametrize('gz', [True, False])
def test_full_fashion_from_user_folder(tmp_path, gz):
    src = _fake_fashion(tmp_path/'idx', gz=gz)
    out = get_dataset('fashion-mnist', dest=tmp_path/'cache', src=src)
    assert len(list((out/'train').rglob('*.png'))) == 20 and len(list((out/'valid').rglob('*.png'))) == 10
    from lessonlib.data import ImageData
    data = ImageData.from_paths(out)
    assert data.c == 10 and len(data.trn_ds) == 20

def test_full_fashion_missing_user_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='src=.*nowhere'): get_dataset('fashion-mnist', dest=tmp_path, src=tmp_path/'nowhere')
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='train-images-idx3-ubyte'): fashion_mnist_arrays(tmp_path/'empty')
    assert not (tmp_path/'fashion-mnist').exists()

@pytest.mark.skipif(not E.DEBIAN_FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_full_fashion_arrays_from_debian():
    xtr, ytr, xte, yte = fashion_mnist_arrays()
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28) and np.bincount(yte).tolist() == [1000]*10

def test_download_checks_sha256(tmp_path):
    src = _fake_fashion(tmp_path/'server')
    f = src/'t10k-labels-idx1-ubyte.gz'
    good = download_url(f.as_uri(), tmp_path/'dl'/'a.gz', file_sha256(f))
    assert good.read_bytes() == f.read_bytes()
    with pytest.raises(ValueError, match='SHA-256.*expected 0000'):
        download_url(f.as_uri(), tmp_path/'dl'/'b.gz', '0'*64)
    assert sorted(p.name for p in (tmp_path/'dl').iterdir()) == ['a.gz']   # the bad download was not kept

def test_download_from_url_uses_official_hashes(tmp_path):
    "A mirror serving files that are not the official ones is refused, naming the file."
    src = _fake_fashion(tmp_path/'mirror')
    with pytest.raises(ValueError, match='train-images-idx3-ubyte.gz: SHA-256'):
        get_dataset('fashion-mnist', dest=tmp_path/'cache', src=src.as_uri())
    assert not (tmp_path/'cache'/'fashion-mnist').exists()

def test_read_idx_errors(tmp_path):
    (tmp_path/'a').write_bytes(b'hello world')
    with pytest.raises(ValueError, match='not an IDX file'): read_idx(tmp_path/'a')
    _write_idx(tmp_path/'b', np.zeros((3, 4)), gz=False)
    (tmp_path/'c').write_bytes((tmp_path/'b').read_bytes()[:-2])
    with pytest.raises(ValueError, match="c: header says shape \\(3, 4\\)"): read_idx(tmp_path/'c')
    (tmp_path/'d.gz').write_bytes(gzip.compress(b'\0'*40)[:-5])
    with pytest.raises(ValueError, match='corrupt gzip'): read_idx(tmp_path/'d.gz')


# ---------------------------------------------------------------- the multi-label collages (lesson 13)
def _collage_digest(p):
    "SHA-256 of labels.csv, sources.csv and every collage's decoded pixels, in name order (independent of PNG encoder settings)."
    import hashlib
    from PIL import Image
    h = hashlib.sha256((p/'labels.csv').read_bytes() + (p/'sources.csv').read_bytes())
    for f in sorted((p/'train').glob('*.png')): h.update(f.name.encode() + np.asarray(Image.open(f)).tobytes())
    return h.hexdigest()

def test_collage_from_idx_files(tmp_path):
    from PIL import Image
    src = _fake_fashion(tmp_path/'idx', n_train=600, n_test=10)
    x, y = read_idx(src/'train-images-idx3-ubyte.gz'), read_idx(src/'train-labels-idx1-ubyte.gz')
    a = E._build_atomically(tmp_path/'a'/'fashion-collage', lambda tmp: E._build_collage(tmp, src, n=60))
    rows = list(csv.reader(open(a/'labels.csv')))
    assert rows[0] == ['image_name', 'tags'] and len(rows) == 61 and len(list((a/'train').glob('*.png'))) == 60
    srcs = list(csv.reader(open(a/'sources.csv')))[1:]
    used = [int(s) for r in srcs for s in r[1:] if int(s) >= 0]
    assert len(used) == len(set(used))                              # no photo in two collages
    for (name, tags), (name2, *cells) in zip(rows[1:], srcs):
        cells = [int(c) for c in cells]
        assert name == name2 and 1 <= sum(c >= 0 for c in cells) <= 4
        assert tags.split() == [c for c in CLASSES if CLASSES.index(c) in {int(y[s]) for s in cells if s >= 0}]
        img = np.asarray(Image.open(a/'train'/f'{name}.png'))
        assert img.shape == (56, 56)
        for j, s in enumerate(cells):
            cell = img[28*(j // 2):28*(j // 2 + 1), 28*(j % 2):28*(j % 2 + 1)]
            np.testing.assert_array_equal(cell, x[s] if s >= 0 else 0)
    b = E._build_atomically(tmp_path/'b'/'fashion-collage', lambda tmp: E._build_collage(tmp, src, n=60))
    for f in ['labels.csv', 'sources.csv'] + [f'train/{r[0]}.png' for r in rows[1:]]:
        assert (a/f).read_bytes() == (b/f).read_bytes(), f    # regenerated bit-exactly
    from lessonlib.data import ImageData
    import lessonlib.csvdata
    data = ImageData.from_csv(a, 'train', 'labels.csv')
    assert data.is_multi and data.classes == sorted(CLASSES) and len(data.val_ds) == 12

def test_collage_plan_cooccurrence():
    y = np.repeat(np.arange(10), 700)
    plan = E.collage_plan(y, n=3000)
    tags = np.zeros((3000, 10), bool)
    for i, cells in enumerate(plan): tags[i, y[cells[cells >= 0]]] = True
    k = tags.sum(1)
    assert set(k) == {1, 2, 3, 4} and 2.3 < k.mean() < 2.8
    co = tags.T.astype(int) @ tags.astype(int)
    dress, sandal, shirt = CLASSES.index('Dress'), CLASSES.index('Sandal'), CLASSES.index('Shirt')
    assert co[dress, sandal] > 2 * co[dress, shirt]                  # outfits: some tags go together

@pytest.mark.skipif(not E.DEBIAN_FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_collage_from_the_real_files():
    p = get_dataset('fashion-collage')
    assert p.name == 'fashion-collage' and len(list((p/'train').glob('*.png'))) == 6000
    assert _collage_digest(p) == COLLAGE_SHA256, _collage_digest(p)

COLLAGE_SHA256 = '946aaf2ecef02e29aed92174f1328717c8f97eeb224ad735cd0b82bc6ac35db5'   # labels, sources and pixels of the 6,000 collages
