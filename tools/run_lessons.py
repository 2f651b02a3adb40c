"""`make lessons`: run every lesson notebook in a real Jupyter kernel and store its outputs in the notebook, stamped.

Usage: python tools/run_lessons.py [NAME.ipynb ...] [--check]
  Each notebook runs top to bottom on a copy of nbs/ in a temporary folder (lessons write files beside themselves),
  with Jupyter's inline plots, quiet progress bars and the default seed. Cells flagged `#| slow` or `#| notest`
  are not run and keep the outputs they had. A notebook whose run raises an error is not written back; the command
  names it and the cell, and exits 1. Otherwise the executed notebook replaces nbs/NAME.ipynb (atomically), then
  nbdev_clean tidies it, and its metadata gets a stamp: the hash of its code cells (`source_sha`), which
  tests/test_lesson_outputs.py compares with the code, so outputs never go stale silently.
  --check only reports which lessons' stamps are stale.
"""
import hashlib, json, os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parents[1]
SKIP_FLAGS = ('slow', 'notest')


def lessons(nbs=ROOT/'nbs'):
    "The lesson notebooks in course order: index first, then by file name."
    return sorted((p for p in Path(nbs).glob('*.ipynb') if not p.name.startswith('_')), key=lambda p: (p.name != 'index.ipynb', p.name))


def flag_of(cell):
    "The skip flag (`slow`, `notest`) of a code cell, or None."
    for line in cell.source.splitlines()[:3]:
        l = line.replace(' ', '')
        if l.startswith('#|') and l[2:] in SKIP_FLAGS: return l[2:]
    return None


def source_sha(nb):
    "Hash of a notebook's code cells: what its stored outputs were computed from."
    code = [c.source for c in nb.cells if c.cell_type == 'code']
    return hashlib.sha256(json.dumps(code).encode()).hexdigest()[:16]


def is_stale(nb):
    "True when `nb`'s code changed since `make lessons` stored its outputs (or it was never stamped)."
    return nb.metadata.get('lessonlib', {}).get('source_sha') != source_sha(nb)


class _SkipFlagged(ExecutePreprocessor):
    "Run every code cell except those flagged `slow` / `notest`, which keep their outputs."
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == 'code' and flag_of(cell): return cell, resources
        return super().preprocess_cell(cell, resources, index)


def kernel_config():
    "Encrypt the kernel's local sockets (CurveZMQ) where jupyter_client and pyzmq can: ipykernel warns on every start otherwise."
    from traitlets.config import Config
    from jupyter_client import KernelManager
    import zmq
    cfg = Config()
    if 'transport_encryption' in KernelManager.class_trait_names() and zmq.has('curve'):
        cfg.KernelManager.transport_encryption = 'auto'
    return cfg


def errors_of(nb):
    "(cell index, last traceback line) of every error output."
    return [(i, re.sub(r'\x1b\[[0-9;]*m', '', (o.get('traceback') or [''])[-1])[-300:])
            for i, c in enumerate(nb.cells) if c.cell_type == 'code' for o in c.outputs if o.get('output_type') == 'error']


def run(path, work):
    "Execute lesson `path` in a kernel in folder `work`; returns (executed notebook, seconds)."
    nb, t0 = nbformat.read(path, as_version=4), time.perf_counter()
    ep = _SkipFlagged(timeout=1800, kernel_name='python3', allow_errors=True, store_widget_state=True, config=kernel_config())
    ep.preprocess(nb, {'metadata': {'path': str(work)}})
    return nb, time.perf_counter() - t0


TMP = re.escape(tempfile.gettempdir())
MACHINE_PATHS = [(re.compile(TMP + r'/ipykernel_\d+/\d+\.py'), '<cell>'),     # where a warning in a cell points
                 (re.compile(TMP + r'/(?:tmp|lessons-)[\w-]+'), '<tmp>'),     # temporary folders of the run and the lesson
                 (re.compile(re.escape(str(Path.home())) + r'(?=/|\b)'), '~')]  # the home folder (the data cache under it)


def redact(value):
    "`value` (an output or widget state: str, list or dict, nested) with this machine's paths replaced by neutral names."
    if isinstance(value, str):
        for pat, new in MACHINE_PATHS: value = pat.sub(new, value)
        return value
    if isinstance(value, list): return [redact(v) for v in value]
    if isinstance(value, dict): return {k: v if k.startswith('image/') else redact(v) for k, v in value.items()}
    return value


def redact_nb(nb):
    "Replace machine paths in every output and in the stored widget state of `nb` (in place); returns `nb`."
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = [nbformat.from_dict(redact(o)) for o in c.outputs]
    if 'widgets' in nb.metadata: nb.metadata['widgets'] = nbformat.from_dict(redact(nb.metadata['widgets']))
    return nb


def store(nb, path):
    "Stamp `nb`, take this machine's paths out of its outputs, and write it over `path` atomically; then nbdev_clean tidies it."
    redact_nb(nb)
    nb.metadata['lessonlib'] = {'source_sha': source_sha(nb), 'seed': 'as in the notebook',
                                'torch_threads': 'default', 'progress_bars': 'quiet'}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    with os.fdopen(fd, 'w', encoding='utf-8') as f: nbformat.write(nb, f)
    os.replace(tmp, path)
    subprocess.run([str(Path(sys.executable).parent/'nbdev_clean'), '--fname', str(path)], check=True, cwd=ROOT)


def main(argv):
    names = [a for a in argv if not a.startswith('--')]
    paths = [ROOT/'nbs'/n for n in names] if names else lessons()
    if '--check' in argv:
        stale = [p.name for p in paths if is_stale(nbformat.read(p, as_version=4))]
        print('stale:', ' '.join(stale) or 'none'); return 1 if stale else 0
    env_before = {k: os.environ.get(k) for k in ('MPLBACKEND', 'LESSONLIB_QUIET', 'LESSONLIB_SEED', 'OMP_NUM_THREADS')}
    os.environ.pop('MPLBACKEND', None); os.environ.pop('LESSONLIB_SEED', None); os.environ.pop('OMP_NUM_THREADS', None)
    os.environ['LESSONLIB_QUIET'] = '1'           # stored outputs carry no progress-bar residue
    work = Path(tempfile.mkdtemp(prefix='lessons-'))
    failed = []
    try:
        for p in (ROOT/'nbs').glob('*.ipynb'): shutil.copy(p, work/p.name)
        shutil.copytree(ROOT/'nbs'/'images', work/'images')
        for p in paths:
            nb, secs = run(work/p.name, work)
            errs = errors_of(nb)
            print(f'{p.name}: {secs:.0f} s, ' + (f'{len(errs)} error(s): ' + '; '.join(f'cell {i}: {e}' for i, e in errs)
                                                  if errs else 'stored'), flush=True)
            if errs: failed.append(p.name)
            else: store(nb, p)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for k, v in env_before.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    if failed: print('not stored (errors):', ' '.join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
