"""Render every lesson notebook (with its embedded outputs and plots) to HTML, plus an index page in course order.

Usage: python tools/render_lessons.py [OUT_DIR] [--execute]
  OUT_DIR defaults to runs/demo/lessons. --execute runs each notebook that has no outputs yet first (offline;
  minutes on 2 cores); cells marked `#| slow` or `#| notest` are shown, not run; an error is shown in its page.
"""
import html, json, os, sys, time
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import ExecutePreprocessor
from lessonlib.core import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

def lesson_order(nbs=ROOT/'nbs'):
    "Notebooks in course order: index first, then by file name."
    files = sorted(p for p in nbs.glob('*.ipynb') if not p.name.startswith('_'))
    return sorted(files, key=lambda p: (p.name != 'index.ipynb', p.name))

def title_of(nb, fallback):
    for c in nb.cells:
        if c.cell_type == 'markdown':
            for line in c.source.splitlines():
                if line.startswith('# '): return line[2:].strip()
    return fallback

def has_outputs(nb): return any(c.get('outputs') for c in nb.cells if c.cell_type == 'code')

def skip_flagged(nb, flags=('slow', 'notest')):
    "Turn cells flagged `#| slow` / `#| notest` into markdown showing their code, so that executing skips them."
    for i, c in enumerate(nb.cells):
        first = [l.replace(' ', '') for l in c.source.splitlines()[:3]]
        flag = next((l[2:] for l in first if l.startswith('#|') and l[2:] in flags), None)
        if c.cell_type == 'code' and flag:
            nb.cells[i] = nbformat.v4.new_markdown_cell(f'*Not run here (a cell marked `{flag}`):*\n\n```python\n{c.source}\n```')
    return nb

def kernel_config():
    "Encrypt the kernel's local sockets (CurveZMQ) where jupyter_client and pyzmq can: ipykernel warns on every start otherwise."
    from traitlets.config import Config
    from jupyter_client import KernelManager
    import zmq
    cfg = Config()
    if 'transport_encryption' in KernelManager.class_trait_names() and zmq.has('curve'):
        cfg.KernelManager.transport_encryption = 'auto'    # only for kernels whose kernelspec declares support
    return cfg

def execute_nb(nb, path):
    "Run `nb` in a fresh kernel in the folder of `path`, with inline plots, keeping errors as outputs."
    ExecutePreprocessor(timeout=900, kernel_name='python3', allow_errors=True, config=kernel_config()).preprocess(
        skip_flagged(nb), {'metadata': {'path': str(path.parent)}})
    return sum(o.get('output_type') == 'error' for c in nb.cells if c.cell_type == 'code' for o in c.outputs)

def render(out=ROOT/'runs'/'demo'/'lessons', execute=False, nbs=ROOT/'nbs'):
    "Write one HTML page per lesson in `nbs` and an index.html linking them; returns the list of pages."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    backend = os.environ.pop('MPLBACKEND', None) if execute else None   # kernels inherit it: Agg prints plots as text
    try: pages = [_page(p, out, execute) for p in lesson_order(Path(nbs))]
    finally:
        if backend is not None: os.environ['MPLBACKEND'] = backend
    items = '\n'.join(f'<li><a href="{html.escape(pg["file"])}">{html.escape(pg["title"])}</a> '
                      f'<small>({html.escape(pg["notebook"])})</small></li>' for pg in pages)
    atomic_write_text(out/'index.html', f'<!doctype html><meta charset="utf-8"><title>lessonlib course</title>'
                                        f'<h1>lessonlib: the course</h1><ol>{items}</ol>\n')
    return pages

def _page(p, out, execute):
    "Render notebook `p` (executing it first when asked and it has no outputs) to `out`/<name>.html."
    nb, t0 = nbformat.read(p, as_version=4), time.time()
    errors = execute_nb(nb, p) if execute and not has_outputs(nb) else 0
    body, _ = HTMLExporter().from_notebook_node(nb)
    page = out/('start.html' if p.stem == 'index' else p.stem + '.html')   # index.html is the course's table of contents
    atomic_write_text(page, body)
    return {'file': page.name, 'title': title_of(nb, p.stem), 'notebook': p.name, 'seconds': round(time.time()-t0, 1),
            'errors': errors, 'has_outputs': has_outputs(nb)}

if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    pages = render(*(args[:1] or []), execute='--execute' in sys.argv)
    print(json.dumps(pages, indent=1))
