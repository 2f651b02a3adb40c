"""Every exercise of every lesson (lessonlib.exercises.<lesson>): right, wrong and malformed answers, hints and
solutions, plus cross-checks of the exercises' reference answers against lessonlib itself and sklearn. This one test
replaces the check cell that each lesson notebook used to carry."""
import ast, importlib, inspect, json, math, pkgutil, re, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import lessonlib.exercises as E

ROOT = Path(__file__).resolve().parents[1]
LESSON_NAMES = ['core', 'data', 'models', 'learner', 'precompute', 'schedules', 'lr_find', 'augment', 'interpret', 'cleaner', 'multilabel',
                'distributed']
MODS = {m.name: importlib.import_module(f'lessonlib.exercises.{m.name}') for m in pkgutil.iter_modules(E.__path__)}
ALL = E.all_exercises()
IDS = [e.id for e in ALL]
KINDS = {'code', 'plot', 'count', 'number', 'choice', 'truefalse'}
S, LR, I = MODS.get('schedules'), MODS.get('lr_find'), MODS.get('interpret')

def _show(a): return repr(a)[:80]

# ---- the registry and the modules -------------------------------------------------------------------------

def test_every_lesson_has_three_exercises_of_mixed_kinds():
    assert sorted(MODS) == sorted(LESSON_NAMES)
    assert [l.name for l in sorted(E.LESSONS.values(), key=lambda l: l.notebook)] == LESSON_NAMES
    assert len(ALL) >= 46
    for name in LESSON_NAMES:
        lesson, mod = E.LESSONS[name], MODS[name]
        assert mod.ex is lesson and len(lesson) >= 3, name
        assert len({e.kind for e in lesson}) >= 2, f'{name}: only one kind of exercise'
        assert [e.name for e in lesson] == [f'q{i+1}' for i in range(len(lesson))]
        assert all(e.lesson == name and getattr(lesson, e.name) is e and getattr(mod, e.name) is e for e in lesson)
    assert {e.kind for e in ALL} == KINDS
    assert len(set(IDS)) == len(IDS)

def test_namespace_import_reads_well():
    from lessonlib.exercises import schedules as ex
    assert ex.q2 is ex.ex['q2'] and len(list(ex.ex)) == len(ex.ex)
    assert 'Learning-rate schedules' in ex.ex._repr_markdown_() and 'q1' in repr(ex.ex)

def test_star_import_does_not_hide_lesson_variables():
    "`from lessonlib.exercises import *` must not overwrite a lesson's `data` or `learner` with a namespace."
    ns = {}
    exec('from lessonlib.exercises import *', ns)
    assert not set(LESSON_NAMES) & set(ns) and 'Exercise' in ns and 'Lesson' in ns
    assert set(LESSON_NAMES) <= set(dir(E))
    with pytest.raises(AttributeError): E.no_such_lesson

def test_the_framework_imports_no_lesson():
    "Importing `lessonlib.exercises` imports `lessonlib.core` and nothing else of lessonlib."
    code = "import sys, lessonlib.exercises; print(sorted(m for m in sys.modules if m.startswith('lessonlib.')))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['lessonlib.core', 'lessonlib.exercises']", out

def test_no_code_is_run_from_strings():
    "Solutions and example answers are real functions, not source strings run with eval/exec."
    for p in (ROOT/'lessonlib'/'exercises').glob('*.py'):
        calls = [n.func.id for n in ast.walk(ast.parse(p.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ('eval', 'exec', 'compile')]
        assert not calls, f'{p.name} calls {calls}'
    for e in ALL:
        if e.kind == 'code':
            assert inspect.isfunction(e._solution)
            assert all(callable(a) for a in e.examples('right'))
            assert all(callable(a) for a, _ in e.examples('wrong'))

def _headers(py):
    "The notebooks that the cells of a generated module come from, in order."
    return [m.group(1) for m in re.finditer(r'^# %% (\S+\.ipynb) #\w+$', py.read_text(), re.M)]

@pytest.mark.parametrize('name', LESSON_NAMES)
def test_a_lesson_writes_its_exercises_and_shows_them(name):
    "The module comes from one small notebook that makes it, then the lesson's own cells; the lesson shows each exercise."
    lesson = E.LESSONS[name]
    stem = lesson.notebook
    stub = f'{stem}-exercises.ipynb'
    h = _headers(ROOT/'lessonlib'/'exercises'/f'{name}.py')     # made by its small notebook, then appended to by the lesson
    assert len(h) > 1 and h == [f'../../nbs/exercises/{stub}'] + [f'../../nbs/{stem}.ipynb'] * (len(h) - 1), h
    cells = json.loads((ROOT/'nbs'/f'{stem}.ipynb').read_text())['cells']
    src = [''.join(c['source']) for c in cells]
    shown = [s.strip() for c, s in zip(cells, src) if c['cell_type'] == 'code' and re.fullmatch(r'ex\.q\d+', s.strip())]
    assert shown == [f'ex.{e.name}' for e in lesson], f'{stem} shows {shown}'
    for e in lesson:
        first = e.question.split('\n')[0][:60]
        assert not [s for c, s in zip(cells, src) if c['cell_type'] == 'markdown' and first in s], f'{e.id}: its question is copied into {stem}'
    assert not [s for s in src if "q.examples('right')" in s], f'{stem} still carries a pasted check cell'

# ---- right, wrong and malformed answers for every exercise -------------------------------------------

@pytest.mark.parametrize('ex', ALL, ids=IDS)
def test_right_answers(ex, capsys):
    right = ex.examples('right')
    assert right, f'{ex.id} has no right example'
    for a in right:
        assert ex.check(a) is True, f'{ex.id}: {_show(a)} -> {ex.last}'
        assert ex.last.status == 'correct' and len(ex.last.message) > 20
    assert capsys.readouterr().out.startswith('Correct! ')

@pytest.mark.parametrize('ex', ALL, ids=IDS)
def test_wrong_answers_get_specific_messages(ex, capsys):
    wrong = ex.examples('wrong')
    assert len(wrong) >= (3 if ex.kind == 'code' else 1), f'{ex.id}: too few wrong examples'
    messages = set()
    for a, part in wrong:
        assert ex.check(a) is False, f'{ex.id}: {_show(a)} was accepted'
        assert ex.last.status == 'wrong', f'{ex.id}: {_show(a)} -> {ex.last}'
        assert part.lower() in ex.last.message.lower(), f'{ex.id}: expected {part!r} in {ex.last.message!r}'
        messages.add(ex.last.message)
    if ex.kind in ('code', 'choice'): assert len(messages) == len(wrong), f'{ex.id}: two mistakes share one message'
    assert 'Not quite. ' in capsys.readouterr().out

@pytest.mark.parametrize('ex', ALL, ids=IDS)
def test_malformed_answers_get_a_message_not_a_traceback(ex, capsys):
    bad = ex.examples('malformed')
    assert len(bad) >= 3, f'{ex.id}: too few malformed examples'
    for a, part in bad:
        assert ex.check(a) is False, f'{ex.id}: {_show(a)} was accepted'
        assert ex.last.status == 'malformed', f'{ex.id}: {_show(a)} -> {ex.last}'
        assert part.lower() in ex.last.message.lower(), f'{ex.id}: expected {part!r} in {ex.last.message!r}'
    assert "Can't check that answer: " in capsys.readouterr().out

def _raises(*args): raise RuntimeError('boom')

JUNK = [None, object(), '', 'x', '  ', b'bytes', float('nan'), float('inf'), -1, 0, 10**400, [], {}, (), [None],
        np.zeros((2, 2)), np.array(['a']), lambda: 1, lambda *a: None, _raises, type, print]

@pytest.mark.parametrize('ex', ALL, ids=IDS)
def test_junk_never_raises(ex):
    for a in JUNK:
        r = ex.check(a, quiet=True)
        assert r is False, f'{ex.id}: junk {_show(a)} accepted'
        assert ex.last.status in ('wrong', 'malformed') and ex.last.message, f'{ex.id}: {_show(a)} -> {ex.last}'

@pytest.mark.parametrize('ex', ALL, ids=IDS)
def test_solution_is_right_and_hints_exist(ex, capsys):
    sol = ex.solution()
    out = capsys.readouterr().out
    assert out.startswith('Solution') and ex.explanation in out
    if ex.kind == 'code':                            # the function's own source, under the name the question asks for
        assert sol is ex._solution and f'def {sol.__name__.lstrip("_")}(' in out and not re.search(r'(def|class) _(?!_)', out)
        assert f'`{sol.__name__.lstrip("_")}(' in ex.question
    assert ex.check(sol, quiet=True), f'{ex.id}: its own solution fails: {ex.last}'
    assert ex.hints, f'{ex.id} has no hint'
    for i in range(len(ex.hints) + 1): ex.hint()
    out = capsys.readouterr().out
    assert out.count('Hint') == len(ex.hints) + 1 and ex.hints[0] in out

@pytest.mark.parametrize('ex', ALL, ids=IDS)
def test_shows_the_question(ex):
    md = ex._repr_markdown_()
    assert ex.question in md and ex.kind in md and 'check(' in md
    assert ex.id in repr(ex)

def test_check_without_an_answer(capsys):
    core = MODS['core']
    assert core.q1.check() is False and core.q1.last.status == 'malformed'
    assert 'pass your answer' in capsys.readouterr().out.lower()

def test_unavailable_is_reported():
    "A checker that cannot compare here raises Unavailable: the learner is told, without a traceback."
    def checker(answer): raise E.Unavailable('this check needs scikit-learn, which is not installed.')
    ex = E.Exercise('demo', 'q1', 'number', 'demo', 'A question?', checker, 1, 'Because.')
    assert ex.check(1, quiet=True) is False
    assert ex.last.status == 'unavailable' and str(ex.last).startswith("Can't check this yet: ")

def test_checks_keep_the_random_state():
    "Checking never changes the learner's next random numbers (Python, NumPy, PyTorch)."
    import random, torch
    for ex in ALL:
        before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
        assert ex.check(ex.examples('right')[0], quiet=True), ex.id
        assert torch.equal(torch.get_rng_state(), before[0]), ex.id
        assert (np.random.get_state()[1] == before[1]).all() and random.getstate() == before[2], ex.id

@pytest.mark.parametrize('ex', [e for e in ALL if e.kind == 'plot'], ids=lambda e: e.id)
def test_plots_return_figures(ex):
    fig = ex.plot()
    assert isinstance(fig, matplotlib.figure.Figure) and fig.axes
    plt.close(fig)
    fig, ax = plt.subplots()
    assert ex.plot(ax=ax) is fig
    plt.close(fig)

def test_only_plot_exercises_have_plots():
    with pytest.raises(ValueError, match='no plot'): MODS['core'].q1.plot()

# ---- the reference answers agree with lessonlib (and sklearn) ----------------------------------------

def test_cosine_reference_is_lessonlibs():
    from lessonlib.schedules import sched_cos
    assert S.q1.check(lambda s, e, p: sched_cos(s, e)(p), quiet=True)

def test_sgdr_answers_match_lessonlib():
    from lessonlib.schedules import sgdr_epochs, sgdr_lrs
    assert S.q2.check(sgdr_epochs(3, 1, 2), quiet=True)
    m = sgdr_lrs(10, 3, 1, 2)
    starts = [0] + [i for i in range(1, len(m)) if m[i] > m[i - 1]]
    assert S.q3.check(lambda *a: starts if a == (10, 3, 1, 2) else S._restarts_ref(*a), quiet=True)
    assert S._restarts_ref(10, 3, 1, 2) == starts == [0, 10, 30]

def test_one_cycle_start_matches_lessonlib():
    from lessonlib.schedules import one_cycle
    lrs, moms = one_cycle(100)
    assert S.q6.check(float(lrs[0] * 1e-2), quiet=True)
    assert S.q5.check('a', quiet=True) and moms[lrs.argmax()] == moms.min()

def test_lr_find_answers_match_lessonlib():
    from lessonlib.lr_find import lr_sweep, suggest_lrs
    s = lr_sweep(1e-7, 10, 100)[:, 0]
    assert LR.q4.check(s[1] / s[0], quiet=True)
    lrs, losses = LR.q1.data['lrs'], LR.q1.data['losses']
    np.testing.assert_allclose(lrs, s[:len(lrs)])
    sug = suggest_lrs(lrs, losses)
    for lr in (sug.best, sug.minimum, sug.steep, sug.best / 10, sug.best * 2.5, 1e-3, 1e-2):   # the rule's rate and a range around it
        assert LR.q1.check(lr, quiet=True), f'lessonlib suggests {lr:.2e}: {LR.q1.last}'
    for lr in (sug.best / 50, sug.best * 5, sug.best * 10):                              # clearly too low, too high
        assert not LR.q1.check(lr, quiet=True), f'{lr:.2e} accepted: {LR.q1.last}'

def test_unfrozen_rate_answer_is_lessonlibs_rule():
    from lessonlib.lr_find import unfrozen_lrs
    assert LR.q5.check(float(unfrozen_lrs(5e-3)[-1]), quiet=True)
    assert not LR.q5.check(5e-3, quiet=True) and not LR.q5.check(5e-5, quiet=True)

def test_smoothing_reference_is_lessonlibs():
    from lessonlib.schedules import ewma
    x = np.random.default_rng(0).uniform(1, 3, 20)
    np.testing.assert_allclose(LR._smooth_ref(list(x), 0.98), ewma(x, 0.98))

def test_confusion_reference_is_lessonlibs_and_sklearns():
    from sklearn.metrics import confusion_matrix
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    np.testing.assert_array_equal(I._confusion_ref(t, p, 6), confusion_matrix(t, p, labels=range(6)))
    assert I.q1.check(lambda t, p, n: confusion_matrix(t, p, labels=range(n)), quiet=True)

def test_top_losses_reference_is_lessonlibs():
    from lessonlib.interpret import ClassificationInterpretation
    log_preds, y = I._tl_data()
    interp = ClassificationInterpretation(np.exp(log_preds), y, list('abcde'))
    assert I.q4.check(lambda lp, y, k: interp.top_losses(k)[1], quiet=True), I.q4.last

def test_confusion_plot_answers_match_lessonlibs_interpretation():
    from lessonlib.interpret import ClassificationInterpretation
    cm = I.q2.data['matrix']
    actual = np.repeat(np.arange(4), cm.sum(1))
    predicted = np.concatenate([np.repeat(np.arange(4), row) for row in cm])
    interp = ClassificationInterpretation(np.eye(4)[predicted], actual, I.q2.data['classes'])
    np.testing.assert_array_equal(interp.confusion_matrix(), cm)
    a, p, n = interp.most_confused()[0]
    assert I.q2.check((a, p), quiet=True) and n == 17
    assert I.q3.check(interp.accuracy(), quiet=True)

def test_confusion_plot_answers_are_consistent():
    cm = I.q2.data['matrix']
    off = cm - np.diag(np.diag(cm))
    i, j = np.unravel_index(off.argmax(), cm.shape)
    assert I.q2.check((I._CM_CLASSES[i], I._CM_CLASSES[j]), quiet=True)
    assert I.q3.check(np.trace(cm) / cm.sum(), quiet=True)

def test_lessonlib_open_image_is_a_right_answer():
    from lessonlib.data import open_image
    assert MODS['data'].q1.check(open_image, quiet=True), MODS['data'].q1.last

def test_batch_shape_answer_matches_lessonlibs_loader():
    "data.q4: the option it accepts is the shape of the last validation batch that lessonlib really gives."
    from lessonlib.data import ImageData, ImageTransform, get_dataset
    data = ImageData.from_paths(get_dataset('fashion-sample'), tfms=(ImageTransform(64), ImageTransform(64)), bs=64)
    *_, (xb, _) = iter(data.val_dl)
    q = MODS['data'].q4
    right = [k for k, v in q.data['options'].items() if v == str(tuple(xb.shape))]
    assert right and q.check(right[0], quiet=True), (tuple(xb.shape), q.last)

def test_validation_split_answer_matches_lessonlibs_checks(tmp_path):
    "data.q2 says validation must share the classes: from_paths refuses a class with no training folder."
    from PIL import Image
    from lessonlib.data import ImageData
    for split, classes in [('train', ['a']), ('valid', ['a', 'b'])]:
        for c in classes:
            (tmp_path/split/c).mkdir(parents=True)
            Image.new('RGB', (8, 8)).save(tmp_path/split/c/'x.png')
    with pytest.raises(ValueError, match='never sees in training'): ImageData.from_paths(tmp_path)
    q = MODS['data'].q2
    assert q.check('ab', quiet=True) and not q.check('abc', quiet=True) and 'refuses' in q.last.message

def test_lessonlib_create_head_is_a_right_answer():
    from lessonlib.models import create_head
    assert MODS['models'].q1.check(lambda nf, n: create_head(nf, n), quiet=True), MODS['models'].q1.last
    lin = [m for m in create_head(512, 10).modules() if type(m).__name__ == 'Linear']
    assert MODS['models'].q2.check(lin[0].in_features, quiet=True)
    assert MODS['models'].q3.check(sum(p.numel() for p in lin[-1].parameters()), quiet=True)

def test_lessonlib_cache_key_is_a_right_answer():
    from lessonlib.precompute import cache_key
    assert MODS['precompute'].q5.check(cache_key, quiet=True), MODS['precompute'].q5.last

def test_cache_size_uses_the_bundled_body_width():
    from lessonlib.models import model_meta
    nf = model_meta['efficientnet_lite0'].nf
    assert MODS['precompute'].q4.check(6000 * 2 * nf * 2 / 1e6, quiet=True)

def test_zoom_answer_matches_lessonlibs_random_zoom():
    from lessonlib.augment import random_zoom
    (crop,) = random_zoom(64, 1.1)
    assert MODS['augment'].q5.check(64 * math.sqrt(crop.scale[0]), quiet=True)

def test_flip_answer_matches_the_bundled_data():
    "augment.q2 (a horizontal flip makes shoes the validation set never shows): no validation sneaker or ankle boot is closer to its class mean mirrored, while tops are."
    from PIL import Image
    from lessonlib.data import get_dataset
    path = get_dataset('fashion-sample')
    def closer_mirrored(c):
        a = np.stack([np.asarray(Image.open(f).convert('L'), np.float32) for f in sorted((path/'valid'/c).glob('*.png'))])
        m = a.mean(0)
        return int((((a[:, :, ::-1] - m)**2).sum((1, 2)) < ((a - m)**2).sum((1, 2))).sum())
    assert closer_mirrored('Sneaker') == closer_mirrored('Ankle-boot') == 0
    assert closer_mirrored('T-shirt') >= 10
    q = MODS['augment'].q2
    assert q.check('ac', quiet=True) and not q.check('c', quiet=True) and '0 of 100' in q.last.message

def test_validation_transform_has_no_augmentation():
    from lessonlib.augment import tfms_from_stats, transforms_side_on
    trn, val = tfms_from_stats(((0.5,) * 3, (0.5,) * 3), 32, aug_tfms=transforms_side_on)
    assert trn.is_aug and not val.is_aug
    assert MODS['augment'].q4.check(val.is_aug, quiet=True)

def test_learner_claims_match_its_signature():
    "learner.q1 and q5 (BatchNorm frozen by default) and learner.q4 (TTA's n_aug=4 plus the original) read from the signatures."
    import inspect
    learner = pytest.importorskip('lessonlib.learner')
    assert inspect.signature(learner.ConvLearner.pretrained).parameters['train_bn'].default is False
    assert inspect.signature(learner.ConvLearner.TTA).parameters['n_aug'].default == 4
    assert MODS['learner'].q4.check('a', quiet=True) and '5 views' in MODS['learner'].q4.last.message

@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    "Two classes of random 16x16 photos (6 train, 2 valid each) at sz 32: enough for a learner on a CPU."
    from PIL import Image
    from lessonlib.data import ImageData, ImageTransform
    root, rng = tmp_path_factory.mktemp('tiny'), np.random.default_rng(0)
    for split, n in [('train', 6), ('valid', 2)]:
        for c in 'ab':
            (root/split/c).mkdir(parents=True)
            for i in range(n): Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root/split/c/f'{i}.png')
    return ImageData.from_paths(root, tfms=(ImageTransform(32), ImageTransform(32)), bs=4, num_workers=0)

def test_freezing_answers_match_lessonlibs_learner(tiny_data):
    "learner.q5: a frozen body gets no gradient (a), no optimizer slot (b), no graph (c), keeps its BatchNorm statistics (d) and weights (e)."
    import torch
    from lessonlib.learner import ConvLearner
    learn = ConvLearner.pretrained('resnet18', tiny_data, pretrained=False)
    body_ids = {id(p) for p in learn.body.parameters()}
    opt = learn.make_opt(1e-2)
    assert not any(id(p) in body_ids for g in opt.param_groups for p in g['params'])                 # (b)
    before = {k: v.clone() for k, v in learn.body.state_dict().items()}
    graph = []
    hook = learn.body[-1].register_forward_hook(           # the body's last layer: its output feeds the head
        lambda m, i, out: graph.append(out.requires_grad))
    xb, yb = next(iter(learn.train_batches()))
    learn.loss_batch(xb, yb, opt); hook.remove()
    assert graph == [False]                                                                           # (c)
    assert all(p.grad is None for p in learn.body.parameters())                                      # (a)
    assert all(torch.equal(before[k], v) for k, v in learn.body.state_dict().items())                # (d), (e)
    assert MODS['learner'].q5.check('abc', quiet=True) and not MODS['learner'].q5.check('abcd', quiet=True)

def test_precompute_answers_match_lessonlibs_learner(tiny_data, tmp_path):
    "precompute.q3: lessonlib refuses precompute with a training body (c, d); predictions from the cache match the images' (b)."
    import lessonlib.precompute   # noqa: F401  teaches the learner precompute=True
    from lessonlib.learner import ConvLearner
    with pytest.raises(ValueError, match='train_bn'):
        ConvLearner.pretrained('resnet18', tiny_data, pretrained=False, train_bn=True, precompute=True, cache_dir=tmp_path)
    learn = ConvLearner.pretrained('resnet18', tiny_data, pretrained=False, precompute=True, cache_dir=tmp_path)
    with pytest.raises(ValueError, match='precompute'): learn.freeze_to(1)
    cached = learn.predict(); learn.precompute = False
    np.testing.assert_allclose(np.exp(cached), np.exp(learn.predict()), atol=2e-2)
    assert MODS['precompute'].q3.check('ab', quiet=True) and not MODS['precompute'].q3.check('abc', quiet=True)

def test_cleaner_moves_deleted_files_to_a_trash_folder():
    from lessonlib.cleaner import TRASH
    assert TRASH and MODS['cleaner'].q1.check('a', quiet=True)

def test_cleaner_review_order_is_what_the_cleaner_shows():
    "cleaner.q2 (look at the highest losses first) is the order DatasetCleaner.view gives."
    from lessonlib.cleaner import DatasetCleaner, CleanItem
    import lessonlib.suspects   # noqa: F401  DatasetCleaner.view
    items = [CleanItem(f'a{i}.png', 'train', 'x', loss=l) for i, l in enumerate([0.1, 2.5, 0.7])]
    assert DatasetCleaner('/nonexistent-root', items, ['x']).view() == ['a1.png', 'a2.png', 'a0.png']
    assert MODS['cleaner'].q2.check('a', quiet=True) and not MODS['cleaner'].q2.check('c', quiet=True)
