"""lessonlib.lr_find: the sweep, suggestions, exact restore, bad input; on a tiny synthetic learner and on ConvLearner."""
import math, random, warnings
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from lessonlib.core import set_seed
from lessonlib.lr_find import lr_find, lr_sweep, suggest_lrs, LRSuggestions, LRFinder, blowup_lr, group_lrs, unfrozen_lrs
from lessonlib.learner import Recorder
import lessonlib.precompute   # precompute=True in the ConvLearner tests


# ---------------------------------------------------------------- a learner as small as possible, same interface
class TinyLearner:
    "ConvLearner's training interface over an MLP with BatchNorm and an in-memory dataset."
    def __init__(self, n=256, bs=32, opt='sgd', seed=0):
        g = torch.Generator().manual_seed(seed)
        self.X = torch.cat([torch.randn(n // 2, 10, generator=g) + 0.3, torch.randn(n // 2, 10, generator=g) - 0.3])
        self.y = torch.cat([torch.zeros(n // 2), torch.ones(n // 2)]).long()
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU()), nn.Linear(16, 2))
        self.layer_groups, self.bs, self.opt_name = list(self.model), bs, opt
        self.opt, self.sched, self.epochs_seen = None, Recorder(), []

    def train_batches(self, epoch=0):
        self.epochs_seen.append(epoch)
        idx = torch.randperm(len(self.X))
        for i in range(0, len(idx), self.bs): yield self.X[idx[i:i + self.bs]], self.y[idx[i:i + self.bs]]

    def make_opt(self, lrs, wds=None):
        groups = [{'params': list(g.parameters()), 'lr': float(lr)} for g, lr in zip(self.layer_groups, lrs)]
        return (torch.optim.SGD(groups, lr=1., momentum=0.9) if self.opt_name == 'sgd'
                else torch.optim.AdamW(groups, lr=1.))

    def set_lrs(self, opt, lrs):
        for pg, lr in zip(opt.param_groups, lrs): pg['lr'] = float(lr)

    def loss_batch(self, xb, yb, opt=None):
        self.model.train()
        loss = nn.functional.cross_entropy(self.model(xb), yb)
        if opt is not None: loss.backward(); opt.step(); opt.zero_grad()
        return loss.item()

    def state_snapshot(self):
        return {'model': {k: v.clone() for k, v in self.model.state_dict().items()},
                'training': [m.training for m in self.model.modules()],
                'opt': None if self.opt is None else __import__('copy').deepcopy(self.opt.state_dict())}

    def restore(self, snap):
        self.model.load_state_dict(snap['model'])
        for m, t in zip(self.model.modules(), snap['training']): m.training = t
        if snap['opt'] is not None: self.opt.load_state_dict(snap['opt'])


def state(model): return {k: v.detach().clone() for k, v in model.state_dict().items()}
def same(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch): monkeypatch.setenv('LESSONLIB_QUIET', '1')


# ---------------------------------------------------------------- the sweep
def test_sweep_is_exponential():
    sw = lr_sweep(1e-7, 10, 100)
    assert sw.shape == (100, 1) and sw[0, 0] == pytest.approx(1e-7) and sw[-1, 0] == pytest.approx(10)
    ratios = sw[1:, 0] / sw[:-1, 0]
    assert np.allclose(ratios, ratios[0], rtol=1e-12)
    assert lr_sweep(1e-3, 1e-2, 2).ravel() == pytest.approx([1e-3, 1e-2])


def test_sweep_groups_in_proportion():
    sw = lr_sweep(1e-7, np.array([0.1, 1., 10.]), 50, n_groups=3)        # array of end lrs
    assert np.allclose(sw / sw[:, -1:], [0.01, 0.1, 1.])
    sw = lr_sweep(np.array([1e-9, 1e-8, 1e-7]), 10., 50, n_groups=3)     # array of start lrs, scalar end (last group)
    assert np.allclose(sw / sw[:, -1:], [0.01, 0.1, 1.]) and sw[-1, -1] == pytest.approx(10.)
    sw = lr_sweep(1e-7, 10., 50, n_groups=3)                             # both scalar: all groups alike
    assert np.allclose(sw, sw[:, -1:])
    sw = lr_sweep(slice(1e-9, 1e-7), slice(0.1, 10.), 20, n_groups=3)    # slices, as in fit
    assert np.allclose(sw / sw[:, -1:], [0.01, 0.1, 1.])


@pytest.mark.parametrize('kwargs,word', [
    (dict(start_lr=0), '`start_lr` must be > 0'), (dict(start_lr=-1e-5), '`start_lr` must be > 0'),
    (dict(end_lr=0), '`end_lr` must be > 0'), (dict(end_lr=float('inf')), '`end_lr`'),
    (dict(start_lr=1., end_lr=0.1), 'smaller than `end_lr`'), (dict(start_lr=1., end_lr=1.), 'smaller than `end_lr`'),
    (dict(num_it=1), '`num_it`'), (dict(num_it=0), '`num_it`'), (dict(num_it=-5), '`num_it`'),
    (dict(num_it=10.5), '`num_it`'), (dict(num_it=True), '`num_it`'), (dict(start_lr='tiny'), '`start_lr`'),
    (dict(end_lr=[1., 2., 3.]), '2 layer groups'), (dict(beta=1.), '`beta`'), (dict(beta=-0.1), '`beta`'),
    (dict(div_thresh=1.), '`div_thresh`')])
def test_bad_input(kwargs, word):
    learn = TinyLearner()
    before = state(learn.model)
    with pytest.raises(ValueError, match=word.replace('`', '.')): lr_find(learn, **kwargs)
    assert same(before, state(learn.model))


# ---------------------------------------------------------------- suggestions
def _u_curve(n=100):
    lrs = np.geomspace(1e-6, 10, n)
    x = np.log10(lrs)
    return lrs, 2 - 1.5 / (1 + np.exp(-3 * (x + 3))) + np.exp(2 * (x - 0.3))   # flat, falls around 1e-3, rises


def test_suggestions_on_a_known_curve():
    lrs, losses = _u_curve()
    s = suggest_lrs(lrs, losses)
    kept = slice(10, 95)
    assert s.minimum == pytest.approx(lrs[kept][losses[kept].argmin()] / 10)
    assert 1e-4 < s.steep < 1e-2                        # the steepest fall is around 1e-3
    assert 1e-5 < s.valley < s.minimum * 10             # on the way down
    assert s.best == s.minimum and s.note == ''                # the course's one rule: minimum


def test_suggestions_unpack_and_name():
    s = LRSuggestions(1e-3, 2e-3, 3e-3)
    minimum, steep, valley = s
    assert (minimum, steep, valley) == (1e-3, 2e-3, 3e-3) == tuple(s)
    assert s[2] == s.valley and len(s) == 3 and s._asdict() == {'minimum': 1e-3, 'steep': 2e-3, 'valley': 3e-3}
    assert 'valley=3.00e-03' in repr(s) and s == (1e-3, 2e-3, 3e-3)
    e = LRSuggestions(note='why')
    assert tuple(e) == (None, None, None) and e.best is None and 'why' in repr(e)
    assert LRSuggestions(minimum=1e-2).best == 1e-2


def test_suggestions_degenerate():
    assert suggest_lrs([1e-3, 1e-2], [1., 1.]).valley is None
    assert 'too few' in suggest_lrs([1e-3, 1e-2, 1e-1], [1., float('nan'), float('nan')]).note
    s = suggest_lrs(np.geomspace(1e-5, 1, 20), np.linspace(1, 3, 20))   # loss only rises
    assert 'never went below' in s.note


# ---------------------------------------------------------------- lr_find on the tiny learner
def test_restores_weights_bn_modes_opt_and_rng():
    learn = TinyLearner()
    learn.opt = learn.make_opt([0.1, 0.1])                                # an optimizer with momentum state
    for xb, yb in learn.train_batches(): learn.loss_batch(xb, yb, learn.opt)
    learn.model.eval(); learn.model[1].train()                            # a mixed mode pattern
    w, modes = state(learn.model), [m.training for m in learn.model.modules()]
    opt_state = {k: {kk: vv.clone() for kk, vv in v.items()} for k, v in learn.opt.state_dict()['state'].items()}
    torch.manual_seed(5); np.random.seed(5); random.seed(5)
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    sugg = lr_find(learn, num_it=40)
    assert isinstance(sugg, LRSuggestions) and isinstance(learn.sched, LRFinder)
    assert same(w, state(learn.model))                                    # params and BN buffers, bitwise
    assert 'model.0.1.running_mean' not in w and '0.1.running_mean' in w  # (BN buffers are in the state dict)
    assert [m.training for m in learn.model.modules()] == modes
    after = learn.opt.state_dict()['state']
    assert all(torch.equal(opt_state[k][kk], after[k][kk]) for k in opt_state for kk in opt_state[k])
    assert torch.equal(rng[0], torch.get_rng_state()) and (rng[1] == np.random.get_state()[1]).all()
    assert rng[2] == random.getstate()


def test_fit_after_lr_find_is_unchanged():
    def train(with_lr_find):
        set_seed(3); learn = TinyLearner()
        if with_lr_find: lr_find(learn, num_it=20)
        opt = learn.make_opt([0.05, 0.05])
        for xb, yb in learn.train_batches(): learn.loss_batch(xb, yb, opt)
        return state(learn.model)
    assert same(train(False), train(True))


def test_one_step_per_batch_cycling_the_loader():
    learn = TinyLearner(n=64, bs=32)                                     # 2 batches per epoch
    lr_find(learn, start_lr=1e-6, end_lr=1e-3, num_it=9)                # far too small to diverge
    assert len(learn.sched.losses) == 9 and learn.sched.stop_reason == 'completed 9 steps'
    assert learn.epochs_seen == [0, 1, 2, 3, 4]                          # a new epoch each time the loader runs out
    assert np.allclose(learn.sched.head_lrs, np.geomspace(1e-6, 1e-3, 9))


def test_stops_when_smoothed_loss_explodes():
    learn = TinyLearner()
    lr_find(learn, start_lr=1e-4, end_lr=1e4, num_it=100)
    rec = learn.sched
    assert len(rec.losses) < 100 and 'stopped at step' in rec.stop_reason
    sm = np.array(rec.smooth_losses)
    assert sm[-1] > 4 * sm[:-1].min() or not np.isfinite(rec.losses[-1])
    assert np.all(sm[:-1] <= 4 * np.minimum.accumulate(sm[:-1]) + 1e-12)
    # the smoothed losses are the bias-corrected EMA of the raw ones
    avg, out = 0., []
    for i, l in enumerate(rec.losses): avg = 0.98 * avg + 0.02 * l; out.append(avg / (1 - 0.98 ** (i + 1)))
    assert np.allclose(out, rec.smooth_losses, equal_nan=True)
    fig = rec.plot(); assert isinstance(fig, matplotlib.figure.Figure)
    assert sum(1 for l in fig.axes[0].get_legend().get_texts() if l.get_text().split(':')[0] in ('minimum', 'steep', 'valley')) == 3
    plt.close(fig)
    fig = rec.plot_lr(); assert isinstance(fig, matplotlib.figure.Figure); plt.close(fig)


def test_no_stop_div():
    learn = TinyLearner()
    lr_find(learn, start_lr=1e-4, end_lr=1e4, num_it=40, stop_div=False)
    assert len(learn.sched.losses) == 40 or not math.isfinite(learn.sched.losses[-1])


def test_differential_groups_in_proportion():
    learn = TinyLearner(opt='adamw')
    lr_find(learn, start_lr=1e-6, end_lr=np.array([1., 10.]), num_it=30)
    lrs = np.array(learn.sched.lrs)
    assert lrs.shape[1] == 2 and np.allclose(lrs[:, 0] / lrs[:, 1], 0.1)


class NaNLearner(TinyLearner):
    def loss_batch(self, xb, yb, opt=None): return float('nan')


def test_nan_from_first_step(warned_here):
    learn = NaNLearner()
    with pytest.warns(UserWarning, match='from the first step') as rec: sugg = lr_find(learn, num_it=10)
    warned_here(rec, 'from the first step')
    assert tuple(sugg) == (None, None, None) and 'no finite loss' in sugg.note
    assert len(learn.sched.losses) == 1
    fig = learn.sched.plot()
    texts = ' '.join(t.get_text() for t in fig.axes[0].texts)
    assert 'Nothing to plot' in texts and 'nan' in texts
    plt.close(fig)


class LateNaNLearner(TinyLearner):
    n = 0
    def loss_batch(self, xb, yb, opt=None):
        self.n += 1
        return float('nan') if self.n > 15 else super().loss_batch(xb, yb, opt)


def test_nan_later_stops_and_still_suggests():
    learn = LateNaNLearner()
    with warnings.catch_warnings(): warnings.simplefilter('error'); sugg = lr_find(learn, num_it=50)
    assert len(learn.sched.losses) == 16 and 'became nan' in learn.sched.stop_reason
    assert sugg.minimum is not None
    plt.close(learn.sched.plot())


class Interrupted(TinyLearner):
    n = 0
    def loss_batch(self, xb, yb, opt=None):
        self.n += 1
        if self.n == 7: raise KeyboardInterrupt
        return super().loss_batch(xb, yb, opt)


def test_restores_even_when_interrupted():
    learn = Interrupted(); learn.model.eval()
    w = state(learn.model)
    with pytest.raises(KeyboardInterrupt): lr_find(learn, num_it=20)
    assert same(w, state(learn.model)) and not learn.model.training
    assert learn.sched.stop_reason == 'interrupted'


def test_empty_training_set():
    learn = TinyLearner(); learn.X, learn.y = learn.X[:0], learn.y[:0]
    with pytest.raises(ValueError, match='no mini-batches'): lr_find(learn, num_it=5)


# ---------------------------------------------------------------- on the real ConvLearner (tiny data, random-init body)
@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    learner = pytest.importorskip('lessonlib.learner')
    from PIL import Image
    from lessonlib.data import ImageData, ImageTransform
    root = tmp_path_factory.mktemp('tiny')
    rng = np.random.default_rng(0)
    for split, n in (('train', 12), ('valid', 4)):
        for c, name in enumerate(['dark', 'mid', 'light']):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                a = np.clip(rng.normal(60 + 70 * c, 30, (28, 28)), 0, 255).astype(np.uint8)
                Image.fromarray(a, mode='L').save(root / split / name / f'{i}.png')
    return ImageData.from_paths(root, tfms=(ImageTransform(32), ImageTransform(32)), bs=8, num_workers=0), root


def _conv_learner(tiny_data, tmp_path, **kw):
    from lessonlib.learner import ConvLearner
    data, _ = tiny_data
    set_seed(0)
    return ConvLearner.pretrained('efficientnet_lite0', data, pretrained=False, cache_dir=tmp_path / 'cache', **kw)


@pytest.mark.parametrize('mode', ['precompute', 'frozen', 'unfrozen'])
def test_conv_learner_restores_exactly(tiny_data, tmp_path, mode):
    learn = _conv_learner(tiny_data, tmp_path, precompute=(mode == 'precompute'))
    if mode == 'unfrozen': learn.unfreeze()
    learn.opt = learn.make_opt(1e-3)                       # a learner optimizer with state (as after a fit)
    for _, (xb, yb) in zip(range(2), learn.train_batches()): learn.loss_batch(xb, yb, learn.opt)
    learn.model.eval()
    opt_before = {k: {kk: vv.clone() for kk, vv in v.items() if torch.is_tensor(vv)}
                  for k, v in learn.opt.state_dict()['state'].items()}
    w, modes = state(learn.model), [m.training for m in learn.model.modules()]
    end = np.array([0.1, 1., 10.]) if mode == 'unfrozen' else 10.
    sugg = learn.lr_find(start_lr=1e-6, end_lr=end, num_it=5)
    assert isinstance(sugg, LRSuggestions) and isinstance(learn.sched, LRFinder)
    assert len(learn.sched.losses) >= 2
    assert same(w, state(learn.model))                     # every weight and BN buffer, bitwise
    assert [m.training for m in learn.model.modules()] == modes
    after = learn.opt.state_dict()['state']
    assert all(torch.equal(opt_before[k][kk], after[k][kk]) for k in opt_before for kk in opt_before[k])
    lrs = np.array(learn.sched.lrs)
    assert lrs.shape[1] == 3
    if mode == 'unfrozen': assert np.allclose(lrs / lrs[:, -1:], [0.01, 0.1, 1.])
    fig = learn.sched.plot(); assert isinstance(fig, matplotlib.figure.Figure); plt.close(fig)


def test_conv_learner_bad_input(tiny_data, tmp_path):
    learn = _conv_learner(tiny_data, tmp_path)
    for kw, word in [(dict(start_lr=0), 'start_lr'), (dict(start_lr=1, end_lr=1e-3), 'smaller'), (dict(num_it=1), 'num_it')]:
        with pytest.raises(ValueError, match=word): learn.lr_find(**kw)


# ---------------------------------------------------------------- the rule after unfreezing, the raw bottom
def _finder(lrs, raw, smooth):
    rec = LRFinder(len(lrs))
    for lr, r, m in zip(lrs, raw, smooth): rec.record_batch([lr / 9, lr / 3, lr], r, smooth_loss=m)
    return rec


def test_blowup_and_unfrozen_rule():
    lrs = np.geomspace(1e-7, 1, 60)
    loss = np.where(lrs < 2e-3, 0.5, 0.5 + 40 * (lrs - 2e-3))                 # flat, then a straight rise
    expected = lrs[np.argmax(loss > 0.75)]                                     # first point above 1.5 x 0.5
    rec = _finder(lrs, loss, loss)
    assert rec.blowup == blowup_lr(lrs, loss) == pytest.approx(expected)
    head = min(max(expected / 10, 1e-4), 1e-3)
    np.testing.assert_allclose(unfrozen_lrs(rec.blowup), [head / 9, head / 3, head])
    np.testing.assert_allclose(unfrozen_lrs(rec.blowup, ratio=10), [head / 100, head / 10, head])
    assert blowup_lr(lrs, np.full(60, 0.5)) is None and unfrozen_lrs(None)[-1] == 1e-3
    with pytest.raises(ValueError, match='`ratio`'): group_lrs(1e-3, ratio=0)


def test_raw_bottom_is_a_centred_running_median():
    rng = np.random.default_rng(0)
    lrs = np.geomspace(1e-6, 1, 80)
    raw = (np.log10(lrs) + 2.5) ** 2 + rng.normal(0, 0.3, 80)                  # bottom near 10**-2.5, noisy
    raw[10] = -5.                                                              # one wild batch: a median ignores it
    smooth = np.array([np.mean(raw[:i + 1]) for i in range(80)])
    med = [np.median(raw[max(0, i - 4):i + 5]) for i in range(80)]             # the reference, written out
    rec = _finder(lrs, raw, smooth)
    assert rec.raw_bottom() == pytest.approx(lrs[int(np.argmin(med))])
    assert 10 ** -3.5 < rec.raw_bottom() < 10 ** -1.5


def test_plot_marks_the_rule_and_the_blowup():
    lrs = np.geomspace(1e-7, 1, 60)
    loss = np.where(lrs < 2e-3, 0.5, 0.5 + 40 * (lrs - 2e-3))
    rec = _finder(lrs, loss, loss)
    labels = [l.get_label() for l in rec.plot(chosen=1e-4, blowup=True).axes[0].get_lines()]
    assert any(l.startswith('blow-up: ') for l in labels) and 'chosen: 1.0e-04' in labels
    labels = [l.get_label() for l in rec.plot().axes[0].get_lines()]
    assert any(l.startswith('the rule (minimum): ') for l in labels) and not any('blow-up' in l for l in labels)
    plt.close('all')
