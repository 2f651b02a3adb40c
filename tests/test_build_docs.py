"""The course-site builder behind `make docs` (tools/build_docs.py): what fails the build, and how a lesson is shaped
for the book. The site itself is checked in a browser by tests/browser/test_site_browser.py."""
import importlib.util, json
from pathlib import Path
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('build_docs', ROOT/'tools'/'build_docs.py')
B = importlib.util.module_from_spec(spec); spec.loader.exec_module(B)


def _nb(path, *cells, error_in=None):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(c[3:]) if c.startswith('md:') else nbformat.v4.new_code_cell(c) for c in cells]
    if error_in is not None:
        nb.cells[error_in].outputs = [nbformat.v4.new_output('error', ename='ZeroDivisionError', evalue='division by zero', traceback=[])]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(nb, path)


def test_a_stored_error_stops_the_build_naming_notebook_and_cell(tmp_path):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    _nb(nbs/'index.ipynb', 'md:# Home')
    _nb(nbs/'01_broken.ipynb', 'md:# Broken\n\n> A lesson whose run failed', 'x = 1', '1/0', error_in=2)
    with pytest.raises(B.BuildError, match=r"01_broken\.ipynb, cell 2 \(`1/0`\): ZeroDivisionError: division by zero"):
        B.prepare(tmp_path/'src', nbs)
    assert not (tmp_path/'src'/'01_broken.ipynb').exists()


def test_a_broken_cross_reference_fails_the_build(tmp_path):
    "Sphinx runs with -W: the good book builds, the same book with a link to a symbol that has no entry does not."
    nbs = tmp_path/'nbs'; nbs.mkdir()
    _nb(nbs/'index.ipynb', 'md:# Home\n\n> The course', 'md:See [the first lesson](01_first.ipynb).')
    _nb(nbs/'01_first.ipynb', 'md:# First\n\n> One lesson', 'print("hello")')
    index = B.build(tmp_path/'out', nbs)
    assert index.exists() and (index.parent/'01_first.html').exists()
    _nb(nbs/'01_first.ipynb', 'md:# First\n\n> One lesson', 'md:It uses [`no_such_thing`](#api-no_such_thing).')
    with pytest.raises(B.BuildError, match=r'01_first\.ipynb.*api-no_such_thing'):
        B.build(tmp_path/'out', nbs)


def test_tests_and_build_imports_are_left_out_of_the_shown_code():
    src = '''from fastcore.test import test_eq, test_close
import numpy as np
sched = sched_cos(0, 2)
# the ends are exact
test_close(sched([0., 1.]), [0., 2.]); test_eq(sched.name, 'cos')
x = sched(0.5); test_eq(x, 1.)
for p in [0, 1]: test_eq(sched(p), 2 * p)
with torch.no_grad(): test_eq(model(xb).shape, (2, 10))
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    test_eq(f(), True); f()
sched'''
    assert B.strip_tests(src) == '''import numpy as np
sched = sched_cos(0, 2)
x = sched(0.5)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    f()
sched'''
    assert B.strip_tests('assert q.check(1e-2)') == ''
    assert B.strip_tests('assert q.check(1e-2)', keep_asserts=True) == 'assert q.check(1e-2)'   # a demo with output
    assert B.strip_tests('if ok: test_eq(1, 1)\nelse: print(2)') == 'if ok: test_eq(1, 1)\nelse: print(2)'  # never an empty block


def test_show_doc_becomes_a_reference_entry():
    md = ('---\n\n[source](https://github.com/x/y/blob/main/m.py#L1){target="_blank" style="float:right"}\n\n'
          '### Sched\n\n```python\n\ndef Sched(\n    fn, name\n):\n\n\n```\n\n*A schedule.*')
    used = set()
    entry = B.show_doc_md(md, 4, used)
    assert entry == '(api-sched)=\n#### Sched\n\n```python\nclass Sched(\n    fn, name\n):\n```\n\n*A schedule.*\n'
    assert B.show_doc_md(md, 4, used).startswith('#### Sched')          # a second entry of the same name has no label
    assert B.show_doc_md(md.replace('Sched', '__dir__'), 3).startswith('(api-__dir__)=\n### \\_\\_dir\\_\\_')


def test_the_course_is_in_order_and_every_page_has_a_download():
    names = [p.name for p in B.lessons()]
    assert names[0] == 'index.ipynb' and names[1:] == sorted(names[1:])
    toc = B.toc(B.lessons())
    assert toc.index('00_core') < toc.index('05_schedules') < toc.index('12_lesson2') and 'root: index' in toc


def test_every_public_name_renders_with_show_doc():
    "The site shows every exported function with nbdev's show_doc; a default it cannot print (a numpy array) breaks the build."
    import inspect
    import numpy as np
    from nbdev.showdoc import show_doc
    import lessonlib.all as A
    def array_default(a, grid=np.arange(3)): "A made-up function whose default show_doc cannot print."
    with pytest.raises(Exception): show_doc(array_default)._repr_markdown_()
    bad = []
    for name in A.__all__:
        obj = getattr(A, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            try: show_doc(obj)._repr_markdown_()
            except Exception as e: bad.append(f'{name}: {e!r}'[:160])
    assert not bad, bad
