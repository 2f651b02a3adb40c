"""Every lesson runs top to bottom in a real Jupyter kernel, as a learner runs it.

`nbdev_test` runs cells with execnb, which is not a Jupyter kernel: code that asks "am I in Jupyter?" (progress bars,
the epoch table, widgets, the inline plot backend) takes the other branch there. Cells marked `#| slow` are skipped,
as in `make demo`. Lesson 2 is left to `nbdev_test` (two minutes more here); its stored outputs come from a kernel run.
"""
import importlib.util, re, shutil
from pathlib import Path
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('render_lessons', ROOT/'tools'/'render_lessons.py')
R = importlib.util.module_from_spec(spec); spec.loader.exec_module(R)
LESSONS = [p.name for p in R.lesson_order() if p.name != '11_lesson2.ipynb']

@pytest.fixture(scope='module')
def copies(tmp_path_factory):
    "The notebooks and their images, copied: lessons write files beside themselves, never into the repository."
    d = tmp_path_factory.mktemp('nbs')
    for p in (ROOT/'nbs').glob('*.ipynb'): shutil.copy(p, d/p.name)
    shutil.copytree(ROOT/'nbs'/'images', d/'images')
    return d

def test_the_lessons_are_all_here():
    assert len(LESSONS) >= 12 and LESSONS[0] == 'index.ipynb', LESSONS

@pytest.mark.parametrize('name', LESSONS)
def test_lesson_runs_in_a_kernel(name, copies, monkeypatch):
    monkeypatch.delenv('MPLBACKEND', raising=False)           # the kernel picks Jupyter's inline backend, as for a learner
    nb = nbformat.read(copies/name, as_version=4)
    errors = R.execute_nb(nb, copies/name)
    tracebacks = [re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(o.get('traceback', [])))[-1500:] for c in nb.cells if c.cell_type == 'code'
                  for o in c.outputs if o.get('output_type') == 'error']
    assert errors == 0, f'{name}:\n' + '\n\n'.join(tracebacks)
