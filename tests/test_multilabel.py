"Tests of lessonlib.multilabel (13_multilabel): F-beta against sklearn, per-class thresholds, the cross-fitted score, the plot, and thresholds through a learner and its export."
import warnings
import numpy as np
import pytest
import torch
import matplotlib
matplotlib.use('Agg')
from sklearn.metrics import fbeta_score
from lessonlib.multilabel import fbeta, opt_thresholds, fbeta_cross_fit, plot_fbeta_thresholds, THRESH_GRID
from lessonlib.data import ImageData, ImageDataset
from lessonlib.learner import ConvLearner
from lessonlib.export import load_model
from lessonlib.core import set_seed
from test_learner import TINY, get_data, root          # the tiny architecture and the coloured images  # noqa: F401


def _sk(p, t, beta, thresh=0.5, zd=0.0):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                 # sklearn warns about ill-defined rows when zero_division='warn'
        return fbeta_score(t, (p > thresh).astype(int), beta=beta, average='samples', zero_division=zd)


@pytest.mark.parametrize('zd', [0.0, 1.0])
def test_fbeta_equals_sklearn_samples_average(zd):
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, c = rng.integers(1, 15), rng.integers(2, 7)
        t = (rng.random((n, c)) < rng.random()).astype(int)
        p = rng.random((n, c))
        p[rng.random(n) < 0.2] = 0                     # images with no predicted tag
        t[rng.random(n) < 0.2] = 0                     # and with no true tag
        beta = float(rng.choice([0.5, 1, 2, 3]))
        for th in (0.5, rng.random(c)):
            assert fbeta(p, t, beta, th, zero_division=zd) == pytest.approx(_sk(p, t, beta, th, zd), abs=1e-12)


def test_fbeta_sklearn_default_and_edge_cases():
    t, p = np.array([[0, 0], [1, 0]]), np.array([[0.1, 0.1], [0.9, 0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert fbeta(p, t) == fbeta_score(t, (p > 0.5).astype(int), beta=2, average='samples') == 0.5   # default 'warn' scores 0
    assert fbeta(np.array([[0.5, 0.2]]), np.array([[1, 0]])) == 0.0          # 0.5 is not above 0.5
    assert fbeta(torch.tensor([[0.9, 0.8, 0.7]]), torch.tensor([[1., 0., 0.]])) == pytest.approx(5 / 7)   # TP 1, FP 2
    assert fbeta([[0.9, 0.1]], [[1, 0]]) == 1.0


def test_fbeta_bad_input():
    p, t = np.full((3, 2), 0.7), np.ones((3, 2))
    with pytest.raises(ValueError, match=r'\(3, 1\)'): fbeta(p[:, :1], t)
    with pytest.raises(ValueError, match='0/1'): fbeta(p, t * 2)
    with pytest.raises(ValueError, match='beta=-1'): fbeta(p, t, beta=-1)
    with pytest.raises(ValueError, match='NaN'): fbeta(np.full((3, 2), np.nan), t)
    with pytest.raises(ValueError, match='n_images, n_classes'): fbeta(p.ravel(), t.ravel())


def _problem(seed=0, n=300, c=5):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, c)) < 0.3).astype(int)
    p = np.clip(0.15 + (0.2 + 0.1 * np.arange(c)) * t + rng.normal(0, 0.15, (n, c)), 0, 1)   # classes need different thresholds
    return p, t


def test_opt_thresholds_is_a_local_optimum_never_worse_than_half():
    for seed in range(5):
        p, t = _problem(seed)
        th = opt_thresholds(p, t, n_rounds=10)
        assert th.shape == (5,) and set(th) <= set(THRESH_GRID) | {0.5}
        best = fbeta(p, t, 2, th)
        assert best >= fbeta(p, t, 2, 0.5)
        assert best == pytest.approx(_sk(p, t, 2, th))
        for j in range(5):                              # no single class's threshold on the grid does better
            for g in THRESH_GRID:
                th2 = th.copy(); th2[j] = g
                assert fbeta(p, t, 2, th2) <= best + 1e-12
    p, t = _problem(0)
    assert opt_thresholds(p, t)[0] < opt_thresholds(p, t)[-1]   # weak class 0 gets a lower threshold than strong class 4


def test_cross_fit_scores_on_images_it_did_not_fit():
    p, t = _problem(1)
    folds = np.array_split(np.random.RandomState(0).permutation(len(p)), 2)
    rows = []
    for k in range(2):
        th = opt_thresholds(p[folds[1 - k]], t[folds[1 - k]])
        rows += [fbeta(p[i:i + 1], t[i:i + 1], 2, th) for i in folds[k]]
    assert fbeta_cross_fit(p, t) == pytest.approx(np.mean(rows))
    assert fbeta_cross_fit(p, t) <= fbeta(p, t, 2, opt_thresholds(p, t)) + 1e-9
    with pytest.raises(ValueError, match='n_folds=1'): fbeta_cross_fit(p, t, n_folds=1)


def test_plot_returns_the_figure():
    p, t = _problem(2)
    fig = plot_fbeta_thresholds(p, t, thresholds=opt_thresholds(p, t))
    ax = fig.axes[0]
    xs, ys = ax.lines[0].get_data()
    assert isinstance(fig, matplotlib.figure.Figure) and len(ax.lines) == 4
    assert ys[list(np.round(xs, 2)).index(0.5)] == pytest.approx(fbeta(p, t, 2, 0.5))
    matplotlib.pyplot.close(fig)


def _multi_data(root):
    d = get_data(root)
    def multi(ds):
        y = np.eye(3, dtype=np.float32)[ds.y]; y[::3, 0] = 1
        return ImageDataset(ds.fnames, y, ds.classes, ds.tfm, is_multi=True)
    return ImageData(root, multi(d.trn_ds), multi(d.val_ds), bs=8)


def test_learner_probabilities_thresholds_and_export(root, tmp_path):
    data = _multi_data(root)
    set_seed(0)
    learn = ConvLearner.pretrained(TINY, data, pretrained=False, models_dir=tmp_path / 'm')
    learn.fit(1e-2, 2)
    probs, y = learn.predict_with_targs()
    logits, _ = learn._get_outputs('valid')
    np.testing.assert_allclose(probs, torch.sigmoid(logits).numpy(), atol=1e-6)   # probabilities, not their logs
    tta, y2 = learn.TTA(n_aug=2)
    assert tta.shape == probs.shape and (tta >= 0).all() and (tta <= 1).all() and (y2 == y).all()
    th = learn.fit_thresholds()
    assert learn.thresholds is th and fbeta(probs, y, 2, th) >= fbeta(probs, y)
    pred = load_model(learn.export('ml'))
    np.testing.assert_array_equal(pred.thresh, th)
    tags, idx, p = pred.predict(data.val_ds.fnames[0])
    assert idx == [int(i) for i in np.flatnonzero(p > th)] and tags == [data.classes[i] for i in idx]


def test_export_without_thresholds_and_bad_thresholds(root, tmp_path):
    import json, struct
    data = _multi_data(root)
    learn = ConvLearner.pretrained(TINY, data, pretrained=False, models_dir=tmp_path / 'm')
    f = learn.export('plain')
    assert load_model(f).thresh == 0.5                 # nothing fitted: 0.5 for every class
    raw = f.read_bytes(); n = struct.unpack('<Q', raw[:8])[0]
    head = json.loads(raw[8:8 + n]); head['__metadata__']['thresholds'] = json.dumps([0.3, 2.0, 0.1])
    h = json.dumps(head).encode(); h += b' ' * (-len(h) % 8)
    (tmp_path / 'bad.safetensors').write_bytes(struct.pack('<Q', len(h)) + h + raw[8 + n:])
    with pytest.raises(ValueError, match='thresholds.*3 numbers in \\[0, 1\\]'): load_model(tmp_path / 'bad.safetensors')


def test_fit_thresholds_refuses_single_label(root, tmp_path):
    learn = ConvLearner.pretrained(TINY, get_data(root), pretrained=False, models_dir=tmp_path / 'm')
    with pytest.raises(ValueError, match='multi-label'): learn.fit_thresholds()


def test_plots_leave_no_figure_in_pyplot():
    "As tests/test_figures.py asks of every plot: the Figure is returned, pyplot keeps none (Jupyter shows it once)."
    import matplotlib.pyplot as plt
    from lessonlib.exercises import multilabel as ex
    plt.close('all')
    p, t = _problem(3)
    for fig in (plot_fbeta_thresholds(p, t), ex.q2.plot()):
        assert isinstance(fig, matplotlib.figure.Figure) and plt.get_fignums() == []
