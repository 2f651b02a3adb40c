"""The shape of the library (issue #15), read from the source with `ast`: imports point only to earlier layers (lazy
ones inside functions included), no module imports another's private `_name`, `@patch` is the one way to attach a
method, every module is placed in a layer, and no generated module is long.

The layers are LAYERS below, first to last (the order of the lessons; nbs/index.ipynb draws them as the module map).
`exercises` is the exercise framework only; `exercises.<lesson>` holds one lesson's questions and may import the
framework, its lesson's module and anything earlier. A new module must be added to LAYERS.
"""
import ast, importlib
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/'lessonlib'
LAYERS = ['core', 'exercises', 'external', 'data', 'csvdata', 'fastload', 'distributed', 'models', 'learner', 'precision', 'export',
          'cache_store', 'precompute', 'schedules', 'lr_find', 'augment', 'interpret', 'journal', 'cleaner', 'suspects',
          'cleaner_widget', 'multilabel', 'train', 'all']
UNCHECKED = {'_modidx'}        # nbdev's index of the library: generated data, no imports of its own
MAX_LINES = 460                # "modules stay <= ~450 lines"; _modidx.py is exempt
IMPORTERS = {'import_module', '__import__'}


def module_name(path, pkg=PKG):
    "The dotted name of `path` inside the package, without `lessonlib.`: 'core', 'exercises.core'; '' for __init__.py."
    parts = path.relative_to(pkg).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def rank(mod):
    "Where `mod` sits: (layer, 0) for a layer's module, (layer, 1) for that lesson's exercises, None if unplaced."
    if mod == '': return (-1, 0)                        # the package itself (its __init__): before every layer
    if mod in LAYERS: return (LAYERS.index(mod), 0)
    head, _, lesson = mod.partition('.')
    if head == 'exercises' and lesson in LAYERS: return (LAYERS.index(lesson), 1)
    return None


def layer_str(mod):
    r = rank(mod)
    return f'{mod or "lessonlib"} (layer {r[0] + 1}: {LAYERS[r[0]]})' if r and r[0] >= 0 else (mod or 'lessonlib')


def may_import(importer, target):
    "Whether module `importer` may import module `target` (both dotted names inside lessonlib)."
    if target == importer or target in UNCHECKED: return True
    ri, rt = rank(importer), rank(target)
    if ri is None or rt is None: return True            # unplaced modules fail `test_every_module_is_placed`
    if importer.startswith('exercises.') and target == 'exercises': return True   # a lesson's questions use the framework
    if importer == 'exercises' and target.startswith('exercises.'): return False  # the framework knows no lesson
    return rt <= ri


def _is_private(name): return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def _resolve(name, level, mod, is_pkg):
    "The dotted lessonlib name (without `lessonlib.`) that `from <level dots><name> import ...` in `mod` refers to, or None."
    if level == 0:
        if name == 'lessonlib': return ''
        return name[len('lessonlib.'):] if name and name.startswith('lessonlib.') else None
    base = mod.split('.') if mod else []
    if not is_pkg: base = base[:-1]                      # a module's package is its parent; a package's is itself
    if level - 1 > len(base): return None
    base = base[:len(base) - (level - 1)]
    return '.'.join(base + ([name] if name else []))


def _join(a, b): return f'{a}.{b}' if a else b


def import_violations(src, mod, modules, is_pkg=False, fname='<src>'):
    """Every import in `src` (module `mod` of lessonlib) of a later layer's module or of another module's private name,
    as (line, statement, why). `modules`: the dotted names of lessonlib's modules (to tell `from pkg import submodule`
    from `from module import name`)."""
    tree, out = ast.parse(src, fname), []
    seg = lambda node: (ast.get_source_segment(src, node) or '').splitlines()[0]
    def later(node, target):
        if may_import(mod, target): return
        if mod == 'exercises' and target.startswith('exercises.'):
            why = f"the exercise framework ({layer_str('exercises')}) imports {target}, one lesson's questions"
        else: why = f'{layer_str(mod)} imports {layer_str(target)}, a later layer'
        out.append((node.lineno, seg(node), why))
    def private(node, target, name):
        if target != mod and _is_private(name):
            out.append((node.lineno, seg(node), f'imports the private name {name} of {target or "lessonlib"}'))
    bound = {}                                         # local name -> the lessonlib module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                target = _resolve(a.name, 0, mod, is_pkg)
                if target is None: continue
                later(node, target)
                bound[a.asname or 'lessonlib'] = target if a.asname else ''
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, mod, is_pkg)
            if base is None: continue
            for a in node.names:
                sub = _join(base, a.name)
                if sub in modules:                     # `from lessonlib import data`: a module
                    later(node, sub); bound[a.asname or a.name] = sub
                else:                                  # `from lessonlib.data import open_image`: a name in a module
                    later(node, base)
                    if a.name != '*': private(node, base, a.name)
        elif isinstance(node, ast.Call):
            f = node.func
            fname_ = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if fname_ not in IMPORTERS or not node.args: continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = arg.value
                if name.startswith('.'):
                    pkg_arg = next((k.value for k in node.keywords if k.arg == 'package'), None)
                    if pkg_arg is None and len(node.args) > 1: pkg_arg = node.args[1]
                    pkg_name = pkg_arg.value if isinstance(pkg_arg, ast.Constant) else None
                    if pkg_name != 'lessonlib' and not (pkg_name or '').startswith('lessonlib.'): continue
                    level = len(name) - len(name.lstrip('.'))
                    target = _resolve(name[level:] or None, level, _resolve(pkg_name, 0, mod, True), True)
                else: target = _resolve(name, 0, mod, is_pkg)
                if target is not None: later(node, target)
            elif isinstance(arg, ast.JoinedStr):       # f'lessonlib.{name}': which module cannot be read from the source
                head = arg.values[0] if arg.values else None
                text = head.value if isinstance(head, ast.Constant) else ''
                if text.startswith('lessonlib') or text.startswith('.'):
                    out.append((node.lineno, seg(node), 'imports a lessonlib module named at run time: import it by name'))
    def module_of(e):                                  # the lessonlib module an expression like `lessonlib.data` names
        if isinstance(e, ast.Name): return bound.get(e.id)
        if isinstance(e, ast.Attribute):
            m = module_of(e.value)
            if m is not None and _join(m, e.attr) in modules: return _join(m, e.attr)
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            m = module_of(node.value)
            if m is not None and _join(m, node.attr) not in modules: private(node, m, node.attr)
    return sorted(set(out))


_WRAPPERS = {'classmethod', 'staticmethod', 'property'}

def attach_violations(src, classes=(), functions=(), fname='<src>'):
    """Methods attached by assignment: `Cls.name = fn` (or `= classmethod(fn)`, a lambda) and `setattr(Cls, ...)`, where
    `Cls` is a class (defined in `src` or in `classes`) and `fn` a function (defined in `src` or in `functions`)."""
    tree = ast.parse(src, fname)
    classes = set(classes) | {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    functions = set(functions) | {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    def is_fn(v):
        if isinstance(v, ast.Lambda): return True
        if isinstance(v, ast.Name): return v.id in functions
        if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id in _WRAPPERS and v.args: return is_fn(v.args[0])
        return False
    out, seg = [], lambda node: (ast.get_source_segment(src, node) or '').splitlines()[0]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and is_fn(node.value):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in classes:
                    out.append((node.lineno, seg(node), f'attaches {t.attr} to {t.value.id} by assignment: use @patch'))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'setattr' and node.args
              and isinstance(node.args[0], ast.Name) and node.args[0].id in classes):
            out.append((node.lineno, seg(node), f'attaches to {node.args[0].id} with setattr: use @patch'))
    return sorted(set(out))


def patch_to_violations(src, fname='<src>'):
    "`@patch_to(Cls)` used for a plain method: @patch is the one way; patch_to is only for classmethods."
    out = []
    for node in ast.walk(ast.parse(src, fname)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
        for d in node.decorator_list:
            f = d.func if isinstance(d, ast.Call) else d
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name != 'patch_to': continue
            cm = isinstance(d, ast.Call) and (any(k.arg == 'as_classmethod' and isinstance(k.value, ast.Constant) and k.value.value
                                                  for k in d.keywords)
                                              or (len(d.args) > 1 and isinstance(d.args[1], ast.Constant) and d.args[1].value))
            if not cm: out.append((d.lineno, f'@{ast.unparse(d)} def {node.name}', 'patch_to for a plain method: use @patch'))
    return out


# --- the library as it is ---

def _sources():
    return sorted(p for p in PKG.rglob('*.py') if '.ipynb_checkpoints' not in p.parts)

def _modules(): return {module_name(p) for p in _sources()}

def _report(rows): return '\n'.join(f'{f}:{line}: {stmt}\n    {why}' for f, line, stmt, why in rows)

def _scan(check):
    rows = []
    for p in _sources():
        if module_name(p) in UNCHECKED: continue
        rows += [(p.relative_to(ROOT), *r) for r in check(p, p.read_text())]
    return rows


def unplaced_modules(paths, pkg=PKG):
    "The files among `paths` whose module is in no layer (and not in UNCHECKED)."
    return [str(p.relative_to(pkg.parent)) for p in paths if module_name(p, pkg) not in UNCHECKED and rank(module_name(p, pkg)) is None]

def long_modules(paths, pkg=PKG):
    "{file: lines} for the files among `paths` over MAX_LINES lines (UNCHECKED ones aside)."
    return {str(p.relative_to(pkg.parent)): n for p in paths if module_name(p, pkg) not in UNCHECKED
            and (n := len(p.read_text().splitlines())) > MAX_LINES}


def test_every_module_is_placed():
    "A new module must be given its place in LAYERS (and in the module map of nbs/index.ipynb)."
    assert len(_sources()) > 5, f'no modules found under {PKG}'
    unplaced = unplaced_modules(_sources())
    assert not unplaced, f'modules in no layer (add them to LAYERS in {Path(__file__).name}): {unplaced}'


def test_imports_point_only_to_earlier_layers():
    mods = _modules()
    rows = _scan(lambda p, s: import_violations(s, module_name(p), mods, p.name == '__init__.py', str(p)))
    assert not rows, f'{len(rows)} backward or private imports:\n{_report(rows)}'


def test_patch_is_the_one_way_to_attach_a_method():
    trees = [ast.parse(p.read_text(), str(p)) for p in _sources()]
    classes = {n.name for t in trees for n in ast.walk(t) if isinstance(n, ast.ClassDef)}
    functions = {n.name for t in trees for n in t.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    rows = _scan(lambda p, s: attach_violations(s, classes, functions, str(p)) + patch_to_violations(s, str(p)))
    assert not rows, f'{len(rows)} methods attached another way than @patch:\n{_report(rows)}'


def test_modules_are_short():
    long = long_modules(_sources())
    assert not long, f'modules over {MAX_LINES} lines (split them by job): {long}'


# --- the checkers can fail: synthetic sources ---

MODS = {'', 'core', 'exercises', 'exercises.core', 'exercises.learner', 'data', 'models', 'learner', 'precompute',
        'schedules', 'lr_find', 'cleaner', 'cleaner_widget', 'train'}

def _why(src, mod='learner', is_pkg=False): return [why for _, _, why in import_violations(src, mod, MODS, is_pkg)]

def test_rank_and_placement():
    assert rank('core') < rank('exercises') < rank('data') < rank('learner') < rank('precompute') < rank('all')
    assert rank('learner') < rank('exercises.learner') < rank('export')
    assert rank('foo') is None and rank('exercises.foo') is None and rank('_modidx') is None and rank('') == (-1, 0)
    assert module_name(PKG/'exercises'/'core.py') == 'exercises.core' and module_name(PKG/'exercises'/'__init__.py') == 'exercises'
    assert module_name(PKG/'__init__.py') == ''

@pytest.mark.parametrize('src', [
    'from .precompute import ActivationCache',
    'from lessonlib.precompute import ActivationCache',
    'import lessonlib.precompute',
    'import lessonlib.precompute as P',
    'from lessonlib import precompute',
    'from . import precompute as pc',
    'def f():\n    if True:\n        from lessonlib.precompute import ActivationCache',   # lazy, nested
    'import importlib\ndef f(): return importlib.import_module("lessonlib.precompute")',
    'from importlib import import_module\nm = import_module(".precompute", "lessonlib")',
    'm = __import__("lessonlib.precompute")',
])
def test_later_layer_is_caught(src):
    assert _why(src) == [f'{layer_str("learner")} imports {layer_str("precompute")}, a later layer']

@pytest.mark.parametrize('src', [
    'from .core import patch\nfrom .data import open_image\nimport lessonlib.models as M\nfrom . import models as S\nM.create_cnn, S.get_arch',
    'import lessonlib\nfrom lessonlib import __version__\nfrom ._modidx import d',
    'import os, torch\nfrom torch._C import _get_tracing_state\nfrom collections import OrderedDict',
    'def f():\n    from lessonlib.learner import _helper\n    return _helper',          # its own private name
    'import importlib\nm = importlib.import_module("torch.nn")',
    'from .core import *',
])
def test_allowed_imports_pass(src):
    assert _why(src) == [], src

@pytest.mark.parametrize('src,owner,name', [
    ('from .schedules import Recorder, _fig_ax', 'schedules', '_fig_ax'),
    ('from lessonlib.core import _private', 'core', '_private'),
    ('def f():\n    from .data import _helper', 'data', '_helper'),
    ('import lessonlib.core as C\nx = C._secret', 'core', '_secret'),
    ('import lessonlib.core\nx = lessonlib.core._secret', 'core', '_secret'),
    ('from lessonlib import core\ncore._secret()', 'core', '_secret'),
])
def test_private_name_is_caught(src, owner, name):
    assert _why(src, mod='lr_find') == [f'imports the private name {name} of {owner}']

def test_layer_str_names_number_and_layer():
    assert layer_str('core') == 'core (layer 1: core)' and layer_str('exercises.data') == f"exercises.data (layer {LAYERS.index('data') + 1}: data)"
    assert layer_str('') == 'lessonlib' and layer_str('nowhere') == 'nowhere'

def test_exercises_rules():
    # a lesson's questions may use the framework, their lesson and anything earlier, nothing later
    assert _why('from lessonlib.exercises import Exercise\nfrom ..learner import ConvLearner\nfrom ..core import patch',
                'exercises.learner') == []
    assert _why('from . import Exercise', 'exercises.learner') == []
    assert _why('from ..precompute import ActivationCache', 'exercises.learner') == [
        f'{layer_str("exercises.learner")} imports {layer_str("precompute")}, a later layer']
    assert _why('from ..data import x', 'exercises.core') == [
        f'{layer_str("exercises.core")} imports {layer_str("data")}, a later layer']
    assert _why('from . import _choice', 'exercises.core') == ['imports the private name _choice of exercises']
    # the framework knows no lesson: not its module, not its questions, not a module named at run time
    assert _why('from lessonlib.exercises import core', 'exercises', is_pkg=True) == [
        f"the exercise framework ({layer_str('exercises')}) imports exercises.core, one lesson's questions"]
    assert _why('from .learner import x', 'exercises', is_pkg=True) == [    # from exercises/__init__.py: exercises.learner
        f"the exercise framework ({layer_str('exercises')}) imports exercises.learner, one lesson's questions"]
    assert _why('from ..learner import x', 'exercises', is_pkg=True) == [   # `..` from exercises/__init__.py: lessonlib
        f'{layer_str("exercises")} imports {layer_str("learner")}, a later layer']
    assert _why('from ..learner import x', 'exercises.learner') == []
    assert _why('import importlib\ndef lib(n): return importlib.import_module(f"lessonlib.{n}")', 'exercises') == [
        'imports a lessonlib module named at run time: import it by name']
    # the package's own __init__ may import nothing of the library
    assert len(_why('from .core import patch', '', is_pkg=True)) == 1

def test_attach_by_assignment_is_caught():
    src = ('class A:\n    pass\n'
           'def _m(self): return 1\n'
           'def g(self): return 2\n'
           'A.m = _m\n'
           'A.f = classmethod(g)\n'
           'A.l = lambda self: 3\n'
           'for f in (_m, g): setattr(A, f.__name__, f)\n'
           'A.n = 5\n'                           # a class attribute, not a method
           'x = _m\n'
           'def patch_to(cls):\n    def deco(f): setattr(cls, f.__name__, f); return f\n    return deco\n')
    rows = attach_violations(src)
    assert [r[0] for r in rows] == [5, 6, 7, 8], rows
    assert 'attaches m to A by assignment' in rows[0][2] and 'setattr' in rows[3][2]
    # a class or function from another module (the library-wide sets)
    assert len(attach_violations('from .learner import ConvLearner\nConvLearner.lr_find = lr_find', {'ConvLearner'}, {'lr_find'})) == 1
    assert attach_violations('@patch\ndef m(self: A): return 1\nclass A: pass') == []

def test_patch_to_only_for_classmethods():
    assert [r[1] for r in patch_to_violations('@patch_to(A)\ndef m(self): pass')] == ['@patch_to(A) def m']
    assert len(patch_to_violations('@core.patch_to(A, False)\ndef m(self): pass')) == 1
    assert patch_to_violations('@patch_to(A, as_classmethod=True)\ndef m(cls): pass\n@patch_to(B, True)\ndef n(cls): pass') == []
    assert patch_to_violations('@patch\ndef m(self: A): pass') == []

def test_placement_and_length_checks(tmp_path):
    pkg = tmp_path/'lessonlib'; (pkg/'exercises').mkdir(parents=True)
    files = {'__init__.py': 1, '_modidx.py': 900, 'core.py': MAX_LINES, 'data.py': MAX_LINES + 1, 'helpers.py': 3,
             'exercises/__init__.py': 10, 'exercises/core.py': 10, 'exercises/extra.py': 10}
    for name, n in files.items(): (pkg/name).write_text('x = 1\n' * n)
    paths = sorted(pkg.rglob('*.py'))
    assert sorted(unplaced_modules(paths, pkg)) == ['lessonlib/exercises/extra.py', 'lessonlib/helpers.py']
    assert long_modules(paths, pkg) == {'lessonlib/data.py': MAX_LINES + 1}


def test_all_passes_on_every_layer():
    "`from lessonlib.all import *` gives every public name of every library layer (the lessons and README promise it)."
    ns = {}
    exec('from lessonlib.all import *', ns)
    for mod in LAYERS:
        if mod in ('exercises', 'train', 'all'): continue
        missing = set(importlib.import_module(f'lessonlib.{mod}').__all__) - set(ns)
        assert not missing, f'from lessonlib.all import * lacks {sorted(missing)[:5]} of lessonlib.{mod}'
    assert {'ConvLearner', 'ImageData', 'get_dataset', 'ImageClassifierCleaner'} <= set(ns)
