"""A learner's machine is not the repository: every lesson runs from the built wheel, installed as `lessonlib[course]`.

The wheel is built from a copy of the sources and installed with `--no-deps` into a fresh venv under a temporary
folder, outside the repository (no editable install, no repository on `sys.path`). Its dependencies are not
downloaded again (torch alone is gigabytes): exactly the distributions that `lessonlib[course]` needs, followed through
their own requirements, are linked into the new venv's site-packages from the repository's venv. Nothing else is,
so a lesson that imports a package the `course` extra forgets fails here with `ModuleNotFoundError`, as it would for
a learner. Every lesson then runs top to bottom in a Jupyter kernel of that venv (ipykernel's own kernelspec, that
is the venv's python), with the inline plot backend and with cells marked `#| slow` or `#| notest` skipped.
Nothing may be written into the installed package or into the repository meanwhile.

Lesson 2 (`12_lesson2`, the recipe) runs here as another learner's machine may run it: with `LESSONLIB_SEED=3`
(every `set_seed` in it uses seed 3 instead of 42) and 2 torch threads, whatever the test's own environment. So a
threshold that holds only for the seed and thread count its outputs were stored with fails here, not on a learner's
laptop (`bench/margins.py` measures seeds 0-4 x threads 1, 2 and sets the thresholds).
"""
import importlib.util, json, os, re, shutil, subprocess, sys, sysconfig, time
from pathlib import Path
from importlib.metadata import distributions
import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
VARIANT = {'12_lesson2.ipynb': {'LESSONLIB_SEED': '3', 'OMP_NUM_THREADS': '2', 'MKL_NUM_THREADS': '2'}}
_spec = importlib.util.spec_from_file_location('run_lessons', ROOT/'tools'/'run_lessons.py')
R = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(R)
LESSONS = [p.name for p in R.lessons()]
BUILD_FILES = ['setup.py', 'settings.ini', 'pyproject.toml', 'MANIFEST.in', 'README.md', 'LICENSE', 'CONTRIBUTING.md']

# Runs in the new venv: execute one notebook in a kernel of that venv and write {errors, tracebacks, outputs} as JSON.
DRIVER = r'''
import json, re, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])                  # tools/run_lessons.py, copied out of the repo: `make lessons`' own runner
from run_lessons import run, errors_of

src, out = Path(sys.argv[1]), sys.argv[2]
nb, secs = run(src, src.parent)
outs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
tbs = [re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(o.get('traceback', [])))[-1500:] for o in outs if o.get('output_type') == 'error']
streams = ''.join(o.get('text', '') for o in outs if o.get('output_type') == 'stream')
json.dump({'errors': len(errors_of(nb)), 'tracebacks': tbs, 'stdout': streams, 'seconds': secs}, open(out, 'w'))
'''

# Runs in the new venv: where lessonlib comes from, what is on sys.path, and which `lessonlib[course]` requirements fail.
PROBE = r'''
import importlib.util, json, sys
from importlib.metadata import distribution, version, PackageNotFoundError
from packaging.requirements import Requirement
d = distribution('lessonlib')
unmet, names = [], []
for r in map(Requirement, d.requires or []):
    if r.marker and not r.marker.evaluate({'extra': 'course'}): continue
    names.append(r.name)
    try: v = version(r.name)
    except PackageNotFoundError: unmet.append(f'{r} (not installed)'); continue
    if not r.specifier.contains(v, prereleases=True): unmet.append(f'{r} (found {v})')
print(json.dumps({'file': importlib.util.find_spec('lessonlib').origin, 'dist': str(d.locate_file('')),
                  'path': sys.path, 'meta_path': [type(f).__name__ for f in sys.meta_path],
                  'executable': sys.executable, 'requirements': names, 'unmet': unmet}))
'''

def _copy_sources(dst):
    "The files a wheel is built from, copied: building in place would write build/ and egg-info into the repository."
    dst.mkdir()
    for f in BUILD_FILES:
        if (ROOT/f).exists(): shutil.copy(ROOT/f, dst/f)
    shutil.copytree(ROOT/'lessonlib', dst/'lessonlib', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    return dst

def _closure(root_reqs, site, extras=('course',)):
    "The distributions in `site` that `root_reqs` need, with their own requirements, and the requirements `site` can't meet."
    dists = {canonicalize_name(d.metadata['Name']): d for d in distributions(path=[str(site)])}
    need, unmet, seen = {}, [], set()
    todo = [(Requirement(r), ('',) + tuple(extras)) for r in root_reqs]
    while todo:
        r, parent_extras = todo.pop()
        if r.marker and not any(r.marker.evaluate({'extra': e}) for e in parent_extras): continue
        name = canonicalize_name(r.name)
        d = dists.get(name)
        if d is None: unmet.append(f'{r} (not in {site})'); continue
        if not r.specifier.contains(d.version, prereleases=True): unmet.append(f'{r} (found {d.version})'); continue
        need[name] = d
        for e in ('',) + tuple(sorted(r.extras)):
            if (name, e) in seen: continue
            seen.add((name, e))
            todo += [(Requirement(q), ('', e)) for q in d.requires or []]
    return need, unmet

def _link(dist, src_site, dst_site):
    "Symlink the top-level entries (packages, modules, .libs, dist-info) of `dist` from `src_site` into `dst_site`."
    tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith('..')} - {'__pycache__'}
    for t in tops:
        if (src_site/t).exists() and not (dst_site/t).exists() and not (dst_site/t).is_symlink():
            (dst_site/t).symlink_to(src_site/t)

def _listing(folder, prune=()):
    "Every file under `folder` with its size and mtime (pruned folders left out)."
    out = {}
    for d, dirs, files in os.walk(folder):
        dirs[:] = [x for x in dirs if x not in prune]
        for f in files:
            st = os.lstat(os.path.join(d, f))
            out[os.path.relpath(os.path.join(d, f), folder)] = (st.st_size, st.st_mtime_ns)
    return out

def _changes(before, after): return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))

@pytest.fixture(scope='module')
def learner(tmp_path_factory, lessonlib_data):
    "A fresh venv outside the repository with the wheel installed and `lessonlib[course]`'s dependencies linked in."
    tmp = tmp_path_factory.mktemp('learner')
    t0 = time.time()
    src, dist, venv = _copy_sources(tmp/'src'), tmp/'dist', tmp/'venv'
    run = lambda *a, **k: subprocess.run([str(x) for x in a], cwd=tmp, check=True, capture_output=True, text=True, **k)
    run(sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '--no-index', '-w', dist, src)
    wheel, = dist.glob('lessonlib-*.whl')
    run(sys.executable, '-m', 'venv', '--without-pip', venv)
    py = venv/'bin'/'python'
    run(sys.executable, '-m', 'pip', '--python', py, 'install', '-q', '--no-deps', '--no-index', wheel)
    site = Path(run(py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])').stdout.strip())
    repo_site = Path(sysconfig.get_paths()['purelib'])
    me, = [d for d in distributions(path=[str(site)]) if d.metadata['Name'] == 'lessonlib']
    need, unmet = _closure(me.requires or [], repo_site)
    for d in need.values(): _link(d, repo_site, site)
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'MPLBACKEND', 'PYTHONSTARTUP')}
    env.update(PATH=f'{venv/"bin"}{os.pathsep}{env.get("PATH", "")}', PYTHONNOUSERSITE='1', VIRTUAL_ENV=str(venv),
               JUPYTER_CONFIG_DIR=str(tmp/'jupyter_config'), JUPYTER_DATA_DIR=str(tmp/'jupyter_data'), IPYTHONDIR=str(tmp/'ipython'))
    nbs = tmp/'nbs'; nbs.mkdir()                               # lessons write files beside themselves: copies, not the repo's
    for p in (ROOT/'nbs').glob('*.ipynb'): shutil.copy(p, nbs/p.name)
    shutil.copytree(ROOT/'nbs'/'images', nbs/'images')
    (tmp/'driver.py').write_text(DRIVER)
    (tmp/'tools').mkdir(); shutil.copy(ROOT/'tools'/'run_lessons.py', tmp/'tools')   # the runner, outside the repo
    print(f'\nlearner venv ready in {time.time() - t0:.1f}s: {len(need)} distributions linked into {site}')
    return dict(tmp=tmp, py=py, site=site, repo_site=repo_site, env=env, nbs=nbs, unmet=unmet, need=need, wheel=wheel)

def probe(learner, code=PROBE):
    r = subprocess.run([str(learner['py']), '-c', code], cwd=learner['tmp'], env=learner['env'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)

def run_notebook(learner, path, extra_env=None):
    out = learner['tmp']/f'{path.stem}.result.json'
    r = subprocess.run([str(learner['py']), str(learner['tmp']/'driver.py'), str(path), str(out), str(learner['tmp']/'tools')], cwd=learner['tmp'],
                       env={**learner['env'], **(extra_env or {})}, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f'{path.name}: the driver failed\n{r.stderr[-3000:]}'
    return json.loads(out.read_text())

def _under(p, folder):
    p, folder = os.path.realpath(p), os.path.realpath(folder)
    return p == folder or p.startswith(folder + os.sep)

def test_the_wheel_is_what_the_learner_imports(learner):
    info = probe(learner)
    assert _under(info['file'], learner['site']/'lessonlib') and not _under(info['file'], ROOT), info['file']
    assert _under(info['dist'], learner['site']), info['dist']
    assert not any(_under(p, ROOT) for p in info['path'] if p), [p for p in info['path'] if _under(p, ROOT)]
    assert not any('Editable' in f for f in info['meta_path']), info['meta_path']
    assert not (learner['site']/'lessonlib'/'__init__.py').is_symlink()

def test_the_course_extra_is_all_installed(learner):
    "Every requirement of `lessonlib[course]` in the wheel's metadata is met, in the repo's venv and in the new one."
    info = probe(learner)
    assert {'nbdev', 'scikit-learn', 'ipykernel', 'torch'} <= set(info['requirements']), info['requirements']
    assert learner['unmet'] == [] and info['unmet'] == [], (learner['unmet'], info['unmet'])

def test_the_kernel_is_the_learners(learner):
    "ipykernel's own kernelspec starts the new venv's python, which imports the wheel, not the repository."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        'import sys, lessonlib, matplotlib\nprint(sys.executable, lessonlib.__file__, matplotlib.get_backend(), sep="\\n")')])
    p = learner['tmp']/'probe.ipynb'; nbformat.write(nb, p)
    res = run_notebook(learner, p)
    assert res['errors'] == 0, res['tracebacks']
    exe, lib, backend = res['stdout'].split()
    assert Path(exe).parent == learner['py'].parent, exe        # ipykernel's kernelspec: the python that started it
    assert _under(lib, learner['site']/'lessonlib'), lib
    assert 'inline' in backend.lower(), backend

@pytest.mark.parametrize('name', LESSONS)
def test_lesson_runs_for_a_learner(name, learner):
    pkg = learner['site']/'lessonlib'
    before_pkg, before_repo = _listing(pkg), _listing(ROOT, prune=('.git', '.venv'))
    res = run_notebook(learner, learner['nbs']/name, VARIANT.get(name))
    assert res['errors'] == 0, f'{name}:\n' + '\n\n'.join(res['tracebacks'])
    assert _changes(before_pkg, _listing(pkg)) == [], f'{name} wrote into the installed package'
    assert _changes(before_repo, _listing(ROOT, prune=('.git', '.venv'))) == [], f'{name} wrote into the repository'
