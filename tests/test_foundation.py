"Repository-level checks: the bundled sample is what tools/make_sample.py makes, and the toolchain pins hold."
import configparser, importlib.util, sys
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = Path('/usr/share/datasets/fashion-mnist')

def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT/'tools'/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

def test_bundled_sample_shape_and_balance():
    z = np.load(ROOT/'lessonlib'/'assets'/'fashion_sample.npz')
    assert z['x_train'].shape == (6000, 28, 28) and z['x_valid'].shape == (1000, 28, 28)
    assert z['x_train'].dtype == np.uint8
    assert np.bincount(z['y_train']).tolist() == [600]*10
    assert np.bincount(z['y_valid']).tolist() == [100]*10
    assert len(set(z['idx_train'].tolist())) == 6000  # no image twice

@pytest.mark.skipif(not DEBIAN.exists(), reason="Debian's dataset-fashion-mnist is not installed (run make test as root)")
def test_bundled_sample_regenerates_exactly(tmp_path):
    out = tmp_path/'s.npz'
    _load_tool('make_sample').main(str(DEBIAN), str(out))
    a, b = np.load(out), np.load(ROOT/'lessonlib'/'assets'/'fashion_sample.npz')
    assert sorted(a.files) == sorted(b.files)
    for k in a.files: np.testing.assert_array_equal(a[k], b[k], err_msg=k)

def test_sample_images_are_the_official_ones():
    "The stored indices point at the official images (checked against the IDX files when present)."
    if not DEBIAN.exists(): pytest.skip("Debian's dataset-fashion-mnist is not installed")
    tool, z = _load_tool('make_sample'), np.load(ROOT/'lessonlib'/'assets'/'fashion_sample.npz')
    x = tool.read_idx(DEBIAN/'t10k-images-idx3-ubyte.gz')
    np.testing.assert_array_equal(x[z['idx_valid']], z['x_valid'])

def test_toolchain_pins():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    d = cfg['DEFAULT']
    assert d['lib_name'] == 'lessonlib' and d['nbs_path'] == 'nbs' and 'slow' in d['tst_flags']
    pins = (ROOT/'constraints.txt').read_text()
    for pin in ['nbdev==2.4.14', 'fastcore==1.12.3', 'execnb==0.1.18', 'torch==2.14.1', 'torchvision==0.29.1']:
        assert pin in pins, pin
    assert 'setuptools>=64.0,<82' in (ROOT/'pyproject.toml').read_text()

def test_export_leaves_the_install_stamp_valid():
    "`make` reinstalls when setup.py, settings.ini, constraints.txt or pyproject.toml is newer than its stamp: exporting must not touch them."
    import subprocess
    deps = [ROOT/n for n in ('setup.py', 'settings.ini', 'constraints.txt', 'pyproject.toml')]
    before = [p.stat().st_mtime_ns for p in deps]
    exe = Path(sys.executable).with_name('nbdev_export')
    if not exe.exists(): pytest.skip('nbdev_export is not installed beside this Python')
    r = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p.stat().st_mtime_ns for p in deps] == before, 'nbdev_export rewrote a file the install stamp depends on'

def test_notebook_cell_ids_are_unique():
    "nbformat silently renumbers repeated cell ids on every read, so a repeat would churn the notebooks and the exports."
    import json, collections
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        ids = [c.get('id') for c in json.loads(nb.read_text())['cells']]
        assert None not in ids, nb.name
        assert not [k for k, n in collections.Counter(ids).items() if n > 1], nb.name

def test_disk_check_refuses_before_installing(tmp_path):
    "The first install stops with a clear message when the disk cannot hold torch, and passes when it can."
    import subprocess
    tool = str(ROOT/'tools'/'check_disk.sh')
    r = subprocess.run([tool, '100000000', str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and 'needs about 100000000 GB free' in r.stderr and 'nothing was installed' in r.stderr
    r = subprocess.run([tool, '0', str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ''
    assert 'tools/check_disk.sh' in (ROOT/'Makefile').read_text()
