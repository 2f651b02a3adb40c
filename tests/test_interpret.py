"Tests for lessonlib.interpret beyond the lesson notebook: checks against sklearn/torch, plots, bad input, Grad-CAM."
from types import SimpleNamespace
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import sklearn.metrics
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from PIL import Image

from lessonlib.data import ImageDataset, ImageTransform
from lessonlib.interpret import ClassificationInterpretation, _probs_from_preds, gradcam, plot_gradcam


def synth(n, c, seed=0, acc_boost=2.0):
    "Random probabilities (n, c) that lean towards random targets, and those targets."
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c)); logits[np.arange(n), y] += acc_boost
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


@pytest.fixture(autouse=True)
def _close_figs():
    yield
    plt.close('all')


@pytest.fixture(scope='module')
def pngs(tmp_path_factory):
    "Twelve small PNGs (one colour each) in a temporary folder."
    root = tmp_path_factory.mktemp('interp')
    out = []
    for i in range(12):
        f = root / f'img {i}.png'
        Image.new('RGB', (10, 8), (20 * i, 255 - 20 * i, 100)).save(f)
        out.append(f)
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), c=st.integers(2, 12), seed=st.integers(0, 10**6))
def test_confusion_matrix_matches_sklearn(n, c, seed):
    p, y = synth(n, c, seed)
    interp = ClassificationInterpretation(p, y, [f'c{i}' for i in range(c)])
    cm = interp.confusion_matrix()
    np.testing.assert_array_equal(cm, sklearn.metrics.confusion_matrix(y, p.argmax(1), labels=range(c)))
    mc = interp.most_confused()
    assert sum(k for *_, k in mc) == n - np.trace(cm)
    assert [k for *_, k in mc] == sorted((k for *_, k in mc), reverse=True)
    for a, b, k in mc: assert cm[int(a[1:]), int(b[1:])] == k and a != b
    np.testing.assert_array_equal(interp.multilabel_confusion_matrix(),
                                  sklearn.metrics.multilabel_confusion_matrix(y, p.argmax(1), labels=range(c)))


def test_most_confused_min_val_and_ties():
    p = np.eye(3)[[1, 1, 0, 2, 0, 0]] * 0.8 + 0.2 / 3
    y = np.array([0, 0, 1, 1, 2, 2])
    interp = ClassificationInterpretation(p, y, ['a', 'b', 'c'])
    assert interp.most_confused() == [('a', 'b', 2), ('c', 'a', 2), ('b', 'a', 1), ('b', 'c', 1)]
    assert interp.most_confused(min_val=2) == [('a', 'b', 2), ('c', 'a', 2)]
    assert interp.most_confused(min_val=3) == []


def test_losses_match_torch():
    p, y = synth(50, 7, 1)
    interp = ClassificationInterpretation(p, y, list('abcdefg'))
    ref = F.cross_entropy(torch.tensor(np.log(p)), torch.tensor(y), reduction='none').numpy()
    np.testing.assert_allclose(interp.losses, ref, rtol=1e-5)
    losses, idxs = interp.top_losses(5)
    np.testing.assert_allclose(losses, np.sort(ref)[::-1][:5], rtol=1e-5)
    np.testing.assert_allclose(interp.losses[idxs], losses)
    assert len(interp.top_losses()[0]) == 50 and len(interp.top_losses(500)[1]) == 50
    np.testing.assert_allclose(interp.top_losses(3, largest=False)[0], np.sort(ref)[:3], rtol=1e-5)
    given = ClassificationInterpretation(p, y, list('abcdefg'), losses=torch.arange(50.))
    assert given.top_losses(2)[1].tolist() == [49, 48]


def test_multilabel_counts_match_sklearn():
    rng = np.random.default_rng(2)
    y = (rng.random((80, 5)) < 0.4).astype(np.float32)
    p = np.clip(y * 0.4 + rng.random((80, 5)) * 0.6, 0, 1)
    tags = ['a', 'b', 'c', 'd', 'e']
    interp = ClassificationInterpretation(p, y, tags, is_multi=True)
    for t in (0.3, 0.5, 0.7):
        np.testing.assert_array_equal(interp.multilabel_confusion_matrix(t),
                                      sklearn.metrics.multilabel_confusion_matrix(y, p >= t))
    counts = interp.per_class_counts()
    assert list(counts) == tags
    prec = sklearn.metrics.precision_score(y, p >= 0.5, average=None, zero_division=0)
    rec = sklearn.metrics.recall_score(y, p >= 0.5, average=None, zero_division=0)
    for i, t in enumerate(tags):
        assert counts[t]['tp'] + counts[t]['fn'] == int(y[:, i].sum())
        assert counts[t]['tp'] + counts[t]['fp'] == int((p[:, i] >= 0.5).sum())
        assert abs(counts[t]['precision'] - prec[i]) < 1e-9 and abs(counts[t]['recall'] - rec[i]) < 1e-9
    ref = F.binary_cross_entropy(torch.tensor(p).double().clamp(1e-12, 1 - 1e-12), torch.tensor(y).double(),
                                 reduction='none').mean(1).numpy()
    np.testing.assert_allclose(interp.losses, ref, rtol=1e-5)
    assert interp.per_class_counts(thresh=1.0)['a']['precision'] == 0.   # nothing predicted: no division by zero
    with pytest.raises(ValueError, match='per_class_counts'): interp.confusion_matrix()
    fig = interp.plot_per_class_counts()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == tags



def test_per_class_thresholds_match_sklearn():
    "`thresh` as one value per class: counts, precision/recall bars and predictions all equal sklearn's at p >= thresh."
    rng = np.random.default_rng(5)
    y = (rng.random((120, 4)) < [0.5, 0.3, 0.2, 0.6]).astype(np.float32)
    p = np.clip(y * 0.35 + rng.random((120, 4)) * 0.65, 0, 1)
    tags, t = ['clear', 'cloudy', 'road', 'water'], np.array([0.3, 0.5, 0.4, 0.7])
    interp = ClassificationInterpretation(p, y, tags, is_multi=True, thresh=t)
    np.testing.assert_array_equal(interp.preds, p >= t)
    np.testing.assert_array_equal(interp.multilabel_confusion_matrix(), sklearn.metrics.multilabel_confusion_matrix(y, p >= t))
    np.testing.assert_array_equal(interp.multilabel_confusion_matrix(0.5), sklearn.metrics.multilabel_confusion_matrix(y, p >= 0.5))
    fig = interp.plot_precision_recall()
    assert isinstance(fig, matplotlib.figure.Figure) and plt.get_fignums() == []     # returned, not left open under Agg
    bars = [b.get_width() for b in fig.axes[0].patches]
    np.testing.assert_allclose(bars[:4], sklearn.metrics.precision_score(y, p >= t, average=None, zero_division=0))
    np.testing.assert_allclose(bars[4:], sklearn.metrics.recall_score(y, p >= t, average=None, zero_division=0))
    assert [x.get_text() for x in fig.axes[0].get_yticklabels()] == tags and 'per-class' in fig.axes[0].get_title()
    assert 'threshold 0.5' in interp.plot_precision_recall(0.5).axes[0].get_title()
    assert 'per-class' in interp.plot_per_class_counts().axes[0].get_title()
    fig, ax = plt.subplots(); assert interp.plot_precision_recall(ax=ax) is fig; plt.close(fig)
    for bad, msg in (([0.5, 0.5], r'one threshold per class \(4 values\)'), (1.5, 'between 0 and 1'),
                     ([0.5, np.nan, 0.5, 0.5], 'between 0 and 1'), (np.full((2, 4), 0.5), 'shape')):
        with pytest.raises(ValueError, match=msg): interp.per_class_counts(bad)
        with pytest.raises(ValueError, match=msg): ClassificationInterpretation(p, y, tags, is_multi=True, thresh=bad)


def test_top_losses_tags_are_tag_sets_ranked_by_bce(pngs):
    rng = np.random.default_rng(6)
    y = (rng.random((12, 3)) < 0.5).astype(np.float32)
    p = rng.random((12, 3))
    interp = ClassificationInterpretation(p, y, ['a', 'b', 'c'], fnames=pngs, is_multi=True)
    ref = F.binary_cross_entropy(torch.tensor(p), torch.tensor(y).double(), reduction='none').mean(1).numpy()
    rows = interp.top_losses_tags(4)
    assert [r['idx'] for r in rows] == np.argsort(-ref, kind='stable')[:4].tolist()
    np.testing.assert_allclose([r['loss'] for r in rows], np.sort(ref)[::-1][:4], atol=1e-4)
    for r in rows:
        i = r['idx']
        assert r['actual'] == [c for c, v in zip('abc', y[i]) if v] and r['predicted'] == [c for c, v in zip('abc', p[i]) if v >= 0.5]
        assert set(r['missed']) == set(r['actual']) - set(r['predicted']) and set(r['extra']) == set(r['predicted']) - set(r['actual'])
        assert r['file'] == pngs[i].name
    assert [r['idx'] for r in interp.top_losses_tags(2, largest=False)] == np.argsort(ref, kind='stable')[:2].tolist()
    fig = interp.plot_top_losses(3)
    first = rows[0]
    assert fig.axes[0].get_title().split('\n')[:2] == [' '.join(first['predicted']) or '(none)', ' '.join(first['actual']) or '(none)']
    with pytest.raises(ValueError, match='multi-label'):
        ClassificationInterpretation(*synth(5, 3), ['a', 'b', 'c']).top_losses_tags()

def _ticks(ax, which='x'):
    return [t.get_text() for t in (ax.get_xticklabels() if which == 'x' else ax.get_yticklabels())]


@pytest.mark.parametrize('c', [2, 5, 20, 21, 37, 120])
def test_plot_confusion_matrix_labels_and_scaling(c):
    p, y = synth(max(3 * c, 10), c, c)
    classes = [f'class_{i}' for i in range(c)]
    fig = ClassificationInterpretation(p, y, classes).plot_confusion_matrix()
    ax = fig.axes[0]
    assert isinstance(fig, matplotlib.figure.Figure)
    assert _ticks(ax, 'x') == classes and _ticks(ax, 'y') == classes
    assert len(ax.texts) == (c * c if c <= 20 else 0)
    assert ax.get_xlabel() == 'Predicted' and ax.get_ylabel() == 'Actual'
    w, h = fig.get_size_inches()
    assert 4 <= w <= 20 and 4 <= h <= 20
    font = ax.get_yticklabels()[0].get_fontsize()
    assert 5 <= font <= 11
    # the labels must not overlap: a row is at least as tall as the font
    row_pt = (ax.get_window_extent().height / fig.dpi * 72) / c
    assert row_pt >= font * 0.95, (row_pt, font)


def test_plot_confusion_matrix_grows_with_classes():
    sizes = []
    for c in (2, 10, 40, 120):
        p, y = synth(3 * c, c)
        sizes.append(ClassificationInterpretation(p, y, [str(i) for i in range(c)]).plot_confusion_matrix().get_size_inches()[0])
    assert sizes == sorted(sizes) and sizes[-1] > 2 * sizes[0]


def test_plot_confusion_matrix_options(tmp_path):
    p, y = synth(2400, 120, 7, acc_boost=3.)
    classes = [f'breed_{i:03d}' for i in range(120)]
    interp = ClassificationInterpretation(p, y, classes)
    fig = interp.plot_confusion_matrix(max_classes=15)
    shown = _ticks(fig.axes[0])
    assert len(shown) == 15 and shown == sorted(shown) and set(shown) <= set(classes)
    assert '15 most confused of 120 classes' in fig.axes[0].get_title()
    assert len(fig.axes[0].texts) == 225
    top_pair = interp.most_confused()[0]
    assert top_pair[0] in shown and top_pair[1] in shown
    fig.savefig(tmp_path / 'cm_top15.png')
    fig = interp.plot_confusion_matrix()
    fig.savefig(tmp_path / 'cm120.png', dpi=60)
    assert Image.open(tmp_path / 'cm120.png').size[0] > 800
    # normalize: the row fractions written in the cells sum to ~1
    p2, y2 = synth(60, 4, 3)
    fig = ClassificationInterpretation(p2, y2, list('abcd')).plot_confusion_matrix(normalize=True)
    vals = np.array([float(t.get_text()) for t in fig.axes[0].texts]).reshape(4, 4)
    np.testing.assert_allclose(vals.sum(1), 1, atol=0.03)
    assert 'normalized' in fig.axes[0].get_title()
    # drawing into a given ax returns that ax's figure; annotate can be forced
    f0, ax = plt.subplots()
    assert ClassificationInterpretation(p2, y2, list('abcd')).plot_confusion_matrix(ax=ax, annotate=False) is f0
    assert len(ax.texts) == 0
    with pytest.raises(ValueError, match='max_classes'):
        interp.plot_confusion_matrix(max_classes=0)


def test_plot_top_losses_and_most_incorrect(pngs):
    p, y = synth(12, 3, 4, acc_boost=0.5)
    classes = ['ant', 'bee', 'cow']
    interp = ClassificationInterpretation(p, y, classes, fnames=pngs)
    losses, idxs = interp.top_losses(4)
    fig = interp.plot_top_losses(4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4
    for t, l, i in zip(titles, losses, idxs):
        first, second = t.split('\n')
        assert first == f'{classes[p[i].argmax()]} / {classes[y[i]]}'
        assert second == f'{l:.2f} / {p[i, y[i]]:.2f}'
    assert 'predicted / actual / loss' in fig._suptitle.get_text()
    ds = ImageDataset(pngs, y, classes, ImageTransform(8))
    fig = ClassificationInterpretation(p, y, classes, ds=ds).plot_top_losses(12)
    assert sum(1 for ax in fig.axes if ax.images) == 12
    for cls in classes:
        wrong, c = interp.most_incorrect(cls)
        assert ((y[wrong] == c) & (p[wrong].argmax(1) != c)).all()
        assert len(wrong) == ((y == c) & (p.argmax(1) != c)).sum()
        fig = interp.plot_most_incorrect(cls, k=2)
        assert sum(1 for ax in fig.axes if ax.images) == min(2, len(wrong))
    assert interp.most_incorrect(1)[1] == 1
    with pytest.raises(ValueError, match="unknown class 'owl'"): interp.most_incorrect('owl')
    with pytest.raises(ValueError, match='unknown class'): interp.most_incorrect(3)
    no_imgs = ClassificationInterpretation(p, y, classes)
    with pytest.raises(ValueError, match='ds='): no_imgs.plot_top_losses(2)


def test_perfect_model_plots(pngs):
    y = np.arange(12) % 3
    interp = ClassificationInterpretation(np.eye(3)[y], y, ['a', 'b', 'c'], fnames=pngs)
    assert interp.most_confused() == [] and interp.accuracy() == 1.
    fig = interp.plot_most_incorrect('a')
    assert 'No incorrect photos of class a' in fig.axes[0].texts[0].get_text()
    fig = interp.plot_confused_pairs()
    assert 'No mistakes' in fig.axes[0].texts[0].get_text()
    assert isinstance(interp.plot_confusion_matrix(), matplotlib.figure.Figure)


def test_confused_pairs_rows(pngs):
    p, y = synth(12, 3, 5, acc_boost=0.)
    interp = ClassificationInterpretation(p, y, ['a', 'b', 'c'], fnames=pngs)
    fig = interp.plot_confused_pairs(k=2, n=3)
    labels = [t.get_text().split('\n')[0] for ax in fig.axes for t in ax.texts]
    assert labels == [f'{a} → {b}' for a, b, _ in interp.most_confused()[:2]]


P, Y = synth(10, 3)

@pytest.mark.parametrize('args, kwargs, msg', [
    ((np.zeros((0, 3)), [], ['a', 'b', 'c']), {}, 'no predictions'),
    ((P, Y, ['a', 'b']), {}, '3 columns but there are 2 classes'),
    ((P, Y[:7], ['a', 'b', 'c']), {}, 'targets has 7 items but probs has 10 rows'),
    ((P[0], Y, ['a', 'b', 'c']), {}, '2-D array'),
    ((np.log(P), Y, ['a', 'b', 'c']), {}, 'np.exp(log_preds)'),
    ((P * np.nan, Y, ['a', 'b', 'c']), {}, 'NaN'),
    ((P, Y + 3, ['a', 'b', 'c']), {}, 'class indices in [0, 3)'),
    ((P, Y + 0.5, ['a', 'b', 'c']), {}, 'integer class indices'),
    ((P, np.eye(3)[Y], ['a', 'b', 'c']), {}, 'is_multi=True'),
    ((P, np.eye(3)[Y][:, :2], ['a', 'b', 'c']), dict(is_multi=True), '(10, 3)'),
    ((P, Y, ['a', 'b', 'c']), dict(fnames=['x.png']), 'fnames has 1 items'),
    ((P, Y, ['a', 'b', 'c']), dict(losses=[1., 2.]), 'losses has 2 items'),
])
def test_bad_input(args, kwargs, msg):
    with pytest.raises(ValueError) as e: ClassificationInterpretation(*args, **kwargs)
    assert msg in str(e.value)


def test_accepts_tensors_and_lists():
    interp = ClassificationInterpretation(torch.tensor(P), torch.tensor(Y), ('a', 'b', 'c'))
    np.testing.assert_array_equal(interp.confusion_matrix(), ClassificationInterpretation(P.tolist(), Y.tolist(), 'abc').confusion_matrix())
    assert 'accuracy' in repr(interp) and len(interp) == 10


def test_probs_from_preds():
    p, _ = synth(6, 4)
    np.testing.assert_allclose(_probs_from_preds(np.log(p), False), p, rtol=1e-6)
    np.testing.assert_allclose(_probs_from_preds(np.log(np.stack([p, p[::-1]])), False), (p + p[::-1]) / 2, rtol=1e-6)
    logits = torch.randn(6, 4)
    np.testing.assert_allclose(_probs_from_preds(F.logsigmoid(logits), True), torch.sigmoid(logits).numpy(), rtol=1e-5)
    np.testing.assert_allclose(_probs_from_preds(logits + 5, True), torch.sigmoid(logits + 5).numpy(), rtol=1e-5)


def _fake_learner(pngs, y, classes, log_preds, is_multi=False):
    tfm = ImageTransform(8)
    ds = ImageDataset(pngs, y, classes, tfm, is_multi=is_multi)
    data = SimpleNamespace(classes=classes, val_ds=ds, fix_ds=ds, trn_ds=ds, test_ds=None, is_multi=is_multi, tfms=(tfm, tfm))
    calls = []
    def pwt(ds='valid'): calls.append(('predict', ds)); return log_preds, y
    def tta(n_aug=4, ds='valid'): calls.append(('tta', n_aug, ds)); return log_preds, y
    return SimpleNamespace(data=data, predict_with_targs=pwt, TTA=tta, calls=calls)


def test_from_learner(pngs):
    p, y = synth(12, 3, 8)
    learn = _fake_learner(pngs, y, ['a', 'b', 'c'], np.log(p))
    interp = ClassificationInterpretation.from_learner(learn)
    np.testing.assert_allclose(interp.probs, p, rtol=1e-5)
    assert interp.fnames == [f for f in pngs] and interp.ds is learn.data.val_ds
    ClassificationInterpretation.from_learner(learn, ds='train', tta=True, n_aug=2)
    assert learn.calls == [('predict', 'valid'), ('tta', 2, 'train')]
    with pytest.raises(ValueError, match='no test set'): ClassificationInterpretation.from_learner(learn, ds='test')
    with pytest.raises(ValueError, match="ds must be"): ClassificationInterpretation.from_learner(learn, ds='val')
    ym = (np.random.default_rng(0).random((12, 3)) < 0.5).astype(np.float32)
    logits = torch.randn(12, 3)
    mlearn = _fake_learner(pngs, ym, ['a', 'b', 'c'], F.logsigmoid(logits).numpy(), is_multi=True)
    minterp = ClassificationInterpretation.from_learner(mlearn)
    assert minterp.is_multi
    np.testing.assert_allclose(minterp.probs, torch.sigmoid(logits).numpy(), rtol=1e-5)
    np.testing.assert_array_equal(minterp.multilabel_confusion_matrix(),
                                  sklearn.metrics.multilabel_confusion_matrix(ym, torch.sigmoid(logits).numpy() >= 0.5))
    t = np.array([0.3, 0.5, 0.7])                                         # fitted per-class thresholds pass through
    tinterp = ClassificationInterpretation.from_learner(mlearn, thresh=t)
    np.testing.assert_array_equal(tinterp.preds, torch.sigmoid(logits).numpy() >= t)
    np.testing.assert_array_equal(tinterp.multilabel_confusion_matrix(),
                                  sklearn.metrics.multilabel_confusion_matrix(ym, torch.sigmoid(logits).numpy() >= t))


def _tiny_cnn():
    "Body: 1x1 conv splitting brightness into two maps; head: class 1 = bright, class 0 = dark."
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.ReLU())
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        body[0].weight.copy_(torch.tensor([[1., 1, 1], [-1, -1, -1]]).view(2, 3, 1, 1)); body[0].bias.zero_()
        head[2].weight.copy_(torch.tensor([[-1., 1], [1, -1]])); head[2].bias.zero_()
    return torch.nn.Sequential(body, head)


def test_gradcam_finds_the_evidence():
    model = _tiny_cnn()
    for p in model[0].parameters(): p.requires_grad_(False)   # a frozen body still gives a heat map
    x = torch.zeros(1, 3, 12, 12); x[..., 7:, 2:5] = 1.
    cam, t = gradcam(model, x)
    assert t == 1 and cam.shape == (12, 12) and cam.max() == 1.
    r, c = np.unravel_index(cam.argmax(), cam.shape)
    assert r >= 7 and 2 <= c < 5
    assert cam[:7].max() == 0
    assert model.training and not any(p.requires_grad for p in model[0].parameters())
    cam0, t0 = gradcam(model, x, target=0)
    assert t0 == 0 and cam0.shape == (12, 12)
    with pytest.raises(ValueError, match='batch of one'): gradcam(model, x.repeat(2, 1, 1, 1))
    cam1, t1 = gradcam(model, x, layer=1)     # after the conv, before the ReLU
    assert t1 == 1 and cam1.shape == (12, 12) and cam1[:7].max() == 0
    with pytest.raises(ValueError, match='layer must'): gradcam(model, x, layer=2)


def test_plot_gradcam(pngs):
    learn = _fake_learner(pngs, np.arange(12) % 2, ['dark', 'bright'], None)
    learn.model = _tiny_cnn()
    fig = plot_gradcam(learn, 3)
    assert len(fig.axes) == 2 and fig.axes[1].get_title().startswith('Grad-CAM: ')
    assert fig.axes[1].get_title().split(': ')[1].split(' (')[0] in ('dark', 'bright')
    assert len(fig.axes[1].images) == 2   # photo + heat map
    assert isinstance(plot_gradcam(learn, pngs[0], target=0), matplotlib.figure.Figure)
    assert isinstance(plot_gradcam(learn, Image.open(pngs[1]), layer=1), matplotlib.figure.Figure)
    with pytest.raises(TypeError, match='img must be'): plot_gradcam(learn, 2.5)
