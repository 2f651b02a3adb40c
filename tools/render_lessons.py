"""Render every lesson notebook (with its embedded outputs and plots) to HTML, plus an index page in course order.

Usage: python tools/render_lessons.py [OUT_DIR] [--execute]
  OUT_DIR defaults to runs/demo/lessons. --execute runs each notebook first (offline; minutes on 2 cores).
"""
import html, json, sys, time
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import ExecutePreprocessor

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

def render(out=ROOT/'runs'/'demo'/'lessons', execute=False):
    "Write one HTML page per lesson and an index.html linking them; returns the list of pages."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    exporter, pages = HTMLExporter(), []
    for p in lesson_order():
        nb, t0 = nbformat.read(p, as_version=4), time.time()
        if execute: ExecutePreprocessor(timeout=900, kernel_name='python3').preprocess(nb, {'metadata': {'path': str(p.parent)}})
        body, _ = exporter.from_notebook_node(nb)
        page = out/(p.stem + '.html')
        tmp = page.with_suffix('.html.tmp'); tmp.write_text(body, encoding='utf-8'); tmp.replace(page)
        pages.append({'file': page.name, 'title': title_of(nb, p.stem), 'notebook': p.name, 'seconds': round(time.time()-t0, 1)})
    items = '\n'.join(f'<li><a href="{html.escape(pg["file"])}">{html.escape(pg["title"])}</a> '
                      f'<small>({html.escape(pg["notebook"])})</small></li>' for pg in pages)
    (out/'index.html').write_text(f'<!doctype html><meta charset="utf-8"><title>lessonlib course</title>'
                                  f'<h1>lessonlib: the course</h1><ol>{items}</ol>\n', encoding='utf-8')
    return pages

if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    pages = render(*(args[:1] or []), execute='--execute' in sys.argv)
    print(json.dumps(pages, indent=1))
