"The course renderer behind `make demo` (tools/render_lessons.py): order, execution, skipped slow cells, embedded plots."
import os, sys, importlib.util
from pathlib import Path
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('render_lessons', ROOT/'tools'/'render_lessons.py')
R = importlib.util.module_from_spec(spec); spec.loader.exec_module(R)

def _nb(path, *cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(c[3:]) if c.startswith('md:') else nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(nb, path)

def test_render_executes_in_course_order_skips_slow_and_embeds_plots(tmp_path, monkeypatch):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    _nb(nbs/'02_plot.ipynb', 'md:# Plotting',
        'import matplotlib.pyplot as plt\nfig, ax = plt.subplots(); ax.plot([1, 3, 2]); plt.show()',
        "#| slow\nraise RuntimeError('a slow cell must not run')")
    _nb(nbs/'index.ipynb', 'md:# The course', "print('hello from index')")
    _nb(nbs/'01_err.ipynb', 'md:# Broken', "1/0")
    _nb(nbs/'_private.ipynb', 'md:# Not a lesson')
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    pages = R.render(tmp_path/'out', execute=True, nbs=nbs)
    assert [p['notebook'] for p in pages] == ['index.ipynb', '01_err.ipynb', '02_plot.ipynb']
    assert [p['title'] for p in pages] == ['The course', 'Broken', 'Plotting']
    assert [p['errors'] for p in pages] == [0, 1, 0]                  # the error is shown in its page, not fatal
    plot = (tmp_path/'out'/'02_plot.html').read_text()
    assert 'data:image/png;base64' in plot and 'a slow cell must not run' in plot and 'Not run here' in plot
    assert 'hello from index' in (tmp_path/'out'/'start.html').read_text()     # the index lesson keeps its own page
    toc = (tmp_path/'out'/'index.html').read_text()                            # ... and index.html links every page
    assert [toc.index(f'href="{f}"') for f in ('start.html', '01_err.html', '02_plot.html')] == sorted(toc.index(f'href="{f}"') for f in ('start.html', '01_err.html', '02_plot.html'))
    assert os.environ['MPLBACKEND'] == 'Agg'                           # restored after executing

def test_executing_starts_the_kernel_quietly(tmp_path, capfd):
    "No 'running over TCP without encryption' warning per lesson: the kernel's sockets are encrypted where supported."
    p = tmp_path/'a.ipynb'; _nb(p, "print(6 * 7)")
    nb = nbformat.read(p, as_version=4)
    assert R.execute_nb(nb, p) == 0 and nb.cells[0].outputs[0]['text'] == '42\n'
    err = capfd.readouterr().err
    if 'transport_encryption' in R.kernel_config().KernelManager:   # this jupyter_client and pyzmq can encrypt
        assert 'without encryption' not in err, err
