"Repository-level checks: the bundled sample is what tools/make_sample.py makes, the pins describe the venv, the package builds from settings.ini, and exporting is clean."
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

def _pins():
    "constraints.txt as {distribution: Requirement}; every line is a comment or one `name==version` pin, each name once."
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    pins = {}
    for i, line in enumerate((ROOT/'constraints.txt').read_text().splitlines(), 1):
        line = line.split('#')[0].strip()
        if not line: continue
        r = Requirement(line)
        specs = list(r.specifier)
        assert len(specs) == 1 and specs[0].operator == '==' and not r.extras and not r.marker, f'constraints.txt:{i}: {line}'
        name = canonicalize_name(r.name)
        assert name not in pins, f'constraints.txt:{i}: {r.name} is pinned twice'
        pins[name] = r
    return pins

def _installed_closure(roots):
    "The installed distributions that the requirements `roots` need, with what those need in turn (extras and markers honoured)."
    from importlib.metadata import distributions
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    dists = {canonicalize_name(d.metadata['Name']): d for d in distributions()}
    seen, todo = set(), [(Requirement(r), ('',)) for r in roots]
    while todo:
        r, extras = todo.pop()
        if r.marker and not any(r.marker.evaluate({'extra': e}) for e in extras): continue
        name = canonicalize_name(r.name)
        if name not in dists or (name, frozenset(r.extras)) in seen: continue
        seen.add((name, frozenset(r.extras)))
        todo += [(Requirement(x), ('',) + tuple(r.extras)) for x in dists[name].requires or []]
    return {n for n, _ in seen}

def test_constraints_pin_this_venv_and_nothing_else():
    """Every pin in constraints.txt is installed here at its version, and is needed by what `make setup` installs
    (torch, torchvision and the package with its extras, per settings.ini): no stale pin, no unused one."""
    from importlib.metadata import version, PackageNotFoundError
    pins = _pins()
    assert {'nbdev', 'fastcore', 'execnb', 'torch', 'torchvision', 'setuptools'} <= set(pins)
    wrong = {}
    for name, r in pins.items():
        try: v = version(name)
        except PackageNotFoundError: v = None
        if v is None or not r.specifier.contains(v, prereleases=True): wrong[str(r)] = v
    assert not wrong, f'pinned in constraints.txt but installed otherwise (None: not installed): {wrong}'
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    d = cfg['DEFAULT']
    roots = ['torch', 'torchvision'] + [r for k in ('requirements', 'course_requirements', 'dev_requirements') for r in d[k].split()]
    unused = set(pins) - _installed_closure(roots)
    assert not unused, f'pinned in constraints.txt, yet nothing that make setup installs needs them: {sorted(unused)}'

def test_make_setup_installs_everything_under_the_constraints():
    "`make setup`, dry run: the disk check comes first, and every pip install (torch too) obeys constraints.txt, pinning nothing itself."
    import re, shlex, shutil, subprocess
    if not shutil.which('make'): pytest.skip('make is not installed')
    r = subprocess.run(['make', '-n', '-B', '.venv/.installed'], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    pips = [i for i, l in enumerate(lines) if ' pip install ' in l]
    assert pips and all('-c constraints.txt' in lines[i] for i in pips), r.stdout
    disk = [i for i, l in enumerate(lines) if 'tools/check_disk.sh' in l]
    assert disk and disk[0] < pips[0], 'the disk check must run before anything is installed:\n' + r.stdout
    args = [a for i in pips for a in shlex.split(lines[i])]
    assert not [a for a in args if re.match(r'^[A-Za-z0-9_.-]+==', a)], 'a version pinned outside constraints.txt:\n' + r.stdout
    assert {'torch', 'torchvision', '-e'} <= set(args), r.stdout

BUILD_FILES = ['setup.py', 'settings.ini', 'pyproject.toml', 'MANIFEST.in', 'README.md', 'LICENSE', 'CONTRIBUTING.md']

def test_package_metadata_comes_from_settings(tmp_path):
    "Build the wheel's metadata from a copy of the sources: name, version, licence and requirements are settings.ini's."
    import shutil, subprocess, tomllib
    from email.parser import Parser
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    d = cfg['DEFAULT']
    src = tmp_path/'src'; (src/'meta').mkdir(parents=True)
    for f in BUILD_FILES: shutil.copy(ROOT/f, src/f)          # MANIFEST.in names LICENSE and CONTRIBUTING.md: both exist
    shutil.copytree(ROOT/'lessonlib', src/'lessonlib', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    r = subprocess.run([sys.executable, '-c', 'from setuptools import build_meta as b; print(b.prepare_metadata_for_build_wheel("meta"))'],
                       cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    dist_info = src/'meta'/r.stdout.strip().splitlines()[-1]
    meta = Parser().parsestr((dist_info/'METADATA').read_text())
    assert meta['Name'] == d['lib_name'] and meta['Version'] == d['version']
    assert meta['Requires-Python'] == f">={d['min_python']}"
    assert d['license'] == 'apache2' and 'Apache' in meta['License']
    assert 'Apache License' in (ROOT/'LICENSE').read_text() and d['copyright'] in (ROOT/'LICENSE').read_text()
    assert meta.get_all('License-File') == ['LICENSE'] and (dist_info/'licenses'/'LICENSE').exists()
    reqs = [Requirement(x) for x in meta.get_all('Requires-Dist')]
    base = {canonicalize_name(x.name) for x in reqs if not x.marker}
    assert base == {canonicalize_name(Requirement(x).name) for x in d['requirements'].split()}
    ep = (dist_info/'entry_points.txt').read_text()
    assert d['console_scripts'].replace('=', ' = ') in ep and 'lessonlib = lessonlib._modidx:d' in ep
    # setup.py imports pkg_resources, which setuptools 82 removed: an isolated build must get an older setuptools
    build = [Requirement(x) for x in tomllib.loads((ROOT/'pyproject.toml').read_text())['build-system']['requires']]
    st = next(x for x in build if x.name == 'setuptools')
    assert not st.specifier.contains('82.0.0') and st.specifier.contains(next(iter(_pins()['setuptools'].specifier)).version)

def test_nbdev_reads_the_layout_from_settings():
    "nbdev finds the library and the notebooks where they are, and `nbdev_test` skips `#| slow` cells."
    cfg = pytest.importorskip('nbdev.config').get_config(path=ROOT)
    import lessonlib
    assert Path(cfg.lib_path).resolve() == Path(lessonlib.__file__).resolve().parent
    assert Path(cfg.nbs_path).resolve() == ROOT/'nbs' and len(list(Path(cfg.nbs_path).glob('*.ipynb'))) > 10
    assert 'slow' in cfg.tst_flags.split()

def test_export_on_a_copy_matches_the_library_and_leaves_the_install_stamp_valid(tmp_path):
    """nbdev_export, run on a copy of the checkout, writes exactly the library that is committed, and does not touch
    the files `make` compares with its install stamp (setup.py, settings.ini, constraints.txt, pyproject.toml)."""
    import filecmp, shutil, subprocess
    exe = Path(sys.executable).with_name('nbdev_export')
    if not exe.exists(): pytest.skip('nbdev_export is not installed beside this Python')
    work = tmp_path/'repo'; work.mkdir()
    for f in ('setup.py', 'settings.ini', 'constraints.txt', 'pyproject.toml'): shutil.copy2(ROOT/f, work/f)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.ipynb_checkpoints')
    shutil.copytree(ROOT/'nbs', work/'nbs', ignore=ignore)
    shutil.copytree(ROOT/'lessonlib', work/'lessonlib', ignore=ignore)
    for p in (work/'lessonlib').rglob('*.py'):                        # so that an export that writes nothing fails
        if p.name != '__init__.py': p.write_text('# stale\n' + p.read_text())
    deps = [work/n for n in ('setup.py', 'settings.ini', 'constraints.txt', 'pyproject.toml')]
    before = [p.stat().st_mtime_ns for p in deps]
    r = subprocess.run([str(exe)], cwd=work, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p.stat().st_mtime_ns for p in deps] == before, 'nbdev_export rewrote a file the install stamp depends on'
    mine = sorted(p.relative_to(ROOT/'lessonlib') for p in (ROOT/'lessonlib').rglob('*.py') if '__pycache__' not in p.parts)
    theirs = sorted(p.relative_to(work/'lessonlib') for p in (work/'lessonlib').rglob('*.py') if '__pycache__' not in p.parts)
    assert mine == theirs
    differ = [str(f) for f in mine if not filecmp.cmp(ROOT/'lessonlib'/f, work/'lessonlib'/f, shallow=False)]
    assert not differ, f'lessonlib/ differs from what nbdev_export writes (run nbdev_export and commit): {differ}'

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
