"""Every lesson carries the outputs of its own code: `make lessons` ran it in a kernel after its last code change.

`tools/run_lessons.py` stamps each notebook with the hash of its code cells; a code cell edited without re-running
the lesson makes this test fail (run `make lessons`, look at the new outputs, commit them).
"""
import ast, importlib.util, re
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


MACHINE_PATH = re.compile(r'/tmp/ipykernel_\d+|/tmp/tmp\w|/tmp/lessons-|/root/|/home/\w+/|/Users/\w+/')
SHOW_CALLS = re.compile(r'^(print|display|show_doc)$|plot|show|summary|describe')


def _expects_output(src):
    "True when a cell's last statement is an expression a reader expects to see (a value, a table, a plot), not a check."
    try: tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
    except SyntaxError: return False
    if not tree.body or not isinstance(tree.body[-1], ast.Expr) or src.rstrip().endswith(';'): return False
    v = tree.body[-1].value
    if isinstance(v, ast.Constant) and isinstance(v.value, str): return False          # a string standing as a comment
    if isinstance(v, ast.Call):        # a call may return None (learn.freeze()): only those that show something count
        name = ast.unparse(v.func).split('.')[-1]
        return bool(SHOW_CALLS.search(name))
    return True                        # a value: a name, an attribute, an index, arithmetic, a literal table


@pytest.mark.parametrize('name', LESSONS)
def test_cells_that_show_something_have_output(name):
    nb = nbformat.read(ROOT/'nbs'/name, as_version=4)
    empty = [i for i, c in enumerate(nb.cells) if c.cell_type == 'code' and not R.flag_of(c) and not c.outputs
             and '#| hide' not in c.source and '#|hide' not in c.source and _expects_output(c.source)]
    assert not empty, f'{name}: code cells {empty} end in an expression to show but have no stored output: run `make lessons`'


def _text(output):
    "An output (or the widget state) as text, images left out."
    return str({k: ({m: v for m, v in val.items() if not m.startswith('image/')} if k == 'data' else val) for k, val in output.items()})


@pytest.mark.parametrize('name', LESSONS)
def test_no_machine_paths_in_outputs(name):
    nb = nbformat.read(ROOT/'nbs'/name, as_version=4)
    outs = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == 'code' for o in c.outputs]
    outs.append(('widget state', nb.metadata.get('widgets', {})))
    bad = [(i, m.group()) for i, o in outs if (m := MACHINE_PATH.search(_text(o)))]
    assert not bad, f'{name}: stored outputs show paths of the machine that ran them {bad[:3]}: run `make lessons` (it redacts them)'


def test_redact_names_no_machine_path():
    s = R.redact(f'{R.tempfile.gettempdir()}/ipykernel_11/22.py:3: Warn at {R.tempfile.gettempdir()}/tmpab_c/cache in '
                 f'{Path.home()}/.lessonlib/data')
    assert s == '<cell>:3: Warn at <tmp>/cache in ~/.lessonlib/data', s
    assert not MACHINE_PATH.search(s)


def test_which_cells_are_expected_to_show_something():
    shows = ['x = 1\nx', 'fig', 'learn.sched.plot()', 'print(3)', 'show_doc(f)', "acc['a'] - 1", '{k: 1 for k in "ab"}']
    quiet = ['learn.freeze()', 'test_eq(1, 1)', 'x = 1', 'fig;', '"a comment string"', 'import os', '%matplotlib inline']
    assert all(_expects_output(s) for s in shows) and not any(_expects_output(s) for s in quiet)
