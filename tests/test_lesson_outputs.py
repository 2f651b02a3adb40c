"""Every lesson carries the outputs of its own code: `make lessons` ran it in a kernel after its last code change.

`tools/run_lessons.py` stamps each notebook with the hash of its code cells; a code cell edited without re-running
the lesson makes this test fail (run `make lessons`, look at the new outputs, commit them).
"""
import importlib.util
from pathlib import Path
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('run_lessons', ROOT/'tools'/'run_lessons.py')
R = importlib.util.module_from_spec(spec); spec.loader.exec_module(R)
LESSONS = [p.name for p in R.lessons()]


def test_every_lesson_is_listed():
    assert len(LESSONS) >= 14 and LESSONS[0] == 'index.ipynb', LESSONS


@pytest.mark.parametrize('name', LESSONS)
def test_stored_outputs_are_fresh(name):
    nb = nbformat.read(ROOT/'nbs'/name, as_version=4)
    assert not R.is_stale(nb), f'{name}: code changed since its outputs were stored: run `make lessons`'
    assert not R.errors_of(nb), f'{name}: stored outputs hold an error: {R.errors_of(nb)}'
    ran = [c for c in nb.cells if c.cell_type == 'code' and not R.flag_of(c)]
    assert any(c.outputs for c in ran), f'{name}: no stored outputs'


def test_the_stamp_sees_a_code_change():
    nb = nbformat.read(ROOT/'nbs'/'00_core.ipynb', as_version=4)
    before = R.source_sha(nb)
    next(c for c in nb.cells if c.cell_type == 'code').source += '\n# edited'
    assert R.source_sha(nb) != before
    nb2 = nbformat.read(ROOT/'nbs'/'00_core.ipynb', as_version=4)
    next(c for c in nb2.cells if c.cell_type == 'markdown').source += ' more prose'
    assert R.source_sha(nb2) == before                                     # prose is free
