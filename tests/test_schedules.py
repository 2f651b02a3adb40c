"""lessonlib.schedules: exactness against torch's schedulers (stepped on a real optimizer), edge cases, plots."""
import math
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, OneCycleLR

from lessonlib.schedules import (Sched, sched_const, sched_lin, sched_cos, sched_exp, sched_step, combine_scheds,
                                 sched_warmup, sched_steps, sgdr_epochs, sgdr_lrs, sgdr_restarts, constant_lrs,
                                 one_cycle, FitSchedule, fit_schedule, plot_schedule)
from lessonlib.learner import Recorder

TOL = 1e-9
GROUP_LRS = [[1e-2], [1e-4, 1e-3, 1e-2], [3e-5, 2e-4, 7e-3, 0.5]]


def torch_run(make_sched, base_lrs, n_steps, opt='sgd'):
    "Step a real torch optimizer + scheduler once per mini-batch; the lr (and momentum/beta1) each step used."
    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in base_lrs])
    groups = [{'params': m.parameters(), 'lr': lr} for m, lr in zip(model, base_lrs)]
    o = (torch.optim.SGD(groups, lr=1., momentum=0.9) if opt == 'sgd' else torch.optim.AdamW(groups, lr=1.))
    sched = make_sched(o)
    x = torch.randn(4, 2)
    lrs, moms = [], []
    for _ in range(n_steps):
        lrs.append([g['lr'] for g in o.param_groups])
        moms.append([g['momentum'] if opt == 'sgd' else g['betas'][0] for g in o.param_groups])
        o.zero_grad(); model(x).sum().backward(); o.step(); sched.step()
    return np.array(lrs), np.array(moms)


def max_rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((np.abs(a - b) / np.abs(b)).max())


# ---------------------------------------------------------------- SGDR vs CosineAnnealingWarmRestarts
@pytest.mark.parametrize('base', GROUP_LRS)
@pytest.mark.parametrize('n_batches,n_cycle,cycle_len,cycle_mult', [
    (10, 3, 1, 2), (7, 4, 1, 1), (13, 3, 2, 2), (5, 3, 1, 3), (94, 3, 1, 2), (1, 5, 1, 2), (3, 2, 3, 1)])
def test_sgdr_matches_torch(base, n_batches, n_cycle, cycle_len, cycle_mult):
    n = n_batches * sgdr_epochs(n_cycle, cycle_len, cycle_mult)
    ref, _ = torch_run(lambda o: CosineAnnealingWarmRestarts(o, T_0=cycle_len*n_batches, T_mult=cycle_mult), base, n)
    ours = fit_schedule(base, n_cycle, cycle_len, cycle_mult, n_batches).lrs
    assert max_rel(ours, ref) < TOL
    assert max_rel(sgdr_lrs(n_batches, n_cycle, cycle_len, cycle_mult)[:, None] * np.array(base), ref) < TOL


@pytest.mark.parametrize('eta_min', [0.01, 0.1, 0.5])
@pytest.mark.parametrize('base', GROUP_LRS)
def test_sgdr_eta_min_matches_torch_per_group(eta_min, base):
    "Our eta_min is a fraction of each group's lr; torch's is absolute, so each group gets eta_min*lr in torch."
    n_batches, n_cycle, cycle_len, cycle_mult = 11, 3, 1, 2
    ours = sgdr_lrs(n_batches, n_cycle, cycle_len, cycle_mult, eta_min=eta_min)
    for lr in base:
        ref, _ = torch_run(lambda o: CosineAnnealingWarmRestarts(o, T_0=n_batches, T_mult=2, eta_min=eta_min*lr), [lr], len(ours))
        assert max_rel(ours[:, None] * lr, ref) < TOL


def test_sgdr_long_cycles_near_zero_lr():
    "Relative error stays tiny even where the lr almost reaches 0 (last steps of long cycles)."
    ref, _ = torch_run(lambda o: CosineAnnealingWarmRestarts(o, T_0=2000, T_mult=2), [0.1], 6000)
    assert max_rel(sgdr_lrs(2000, 2, 1, 2)[:, None] * 0.1, ref) < TOL


# ---------------------------------------------------------------- 1cycle vs OneCycleLR
@pytest.mark.parametrize('opt', ['sgd', 'adamw'])
@pytest.mark.parametrize('base', GROUP_LRS)
@pytest.mark.parametrize('total,pct_start,div,div_final,anneal', [
    (100, 0.25, 25., 1e5, 'cos'), (94*3, 0.25, 25., 1e5, 'cos'), (97, 0.3, 10., 1e4, 'linear'),
    (50, 0.25, 25., 1e5, 'linear'), (13, 0.5, 5., 100., 'cos'), (8, 0.25, 25., 1e5, 'cos'), (10, 0.05, 25., 1e5, 'cos')])
def test_one_cycle_matches_torch(opt, base, total, pct_start, div, div_final, anneal):
    ref, ref_m = torch_run(lambda o: OneCycleLR(o, max_lr=list(base), total_steps=total, pct_start=pct_start,
                                                anneal_strategy=anneal, div_factor=div, final_div_factor=div_final/div,
                                                base_momentum=0.85, max_momentum=0.95), base, total, opt)
    lr_m, moms = one_cycle(total, pct_start, div, div_final, anneal)
    assert max_rel(lr_m[:, None] * np.array(base), ref) < TOL
    assert max_rel(np.broadcast_to(moms[:, None], ref_m.shape), ref_m) < TOL
    s = fit_schedule(base, total, n_batches=1, one_cycle=True, pct_start=pct_start, div=div, div_final=div_final,
                     anneal=anneal)
    assert max_rel(s.lrs, ref) < TOL


def test_one_cycle_shape_and_defaults():
    lr, mom = one_cycle(1000)
    assert lr.argmax() == 249 and lr[249] == 1.0
    assert math.isclose(lr[0], 1/25) and math.isclose(lr[-1], 1e-5)
    assert mom[249] == pytest.approx(0.85) and mom[0] == pytest.approx(0.95) and mom[-1] == pytest.approx(0.95)
    assert one_cycle(10, moms=None)[1] is None
    lr1, _ = one_cycle(1)          # a single step: torch's formula puts it at the end of the anneal
    assert lr1.shape == (1,) and math.isclose(lr1[0], 1e-5)
    lr4, _ = one_cycle(4)          # pct_start*4 - 1 = 0: phase 1 has no width, step 0 is the peak
    assert lr4[0] == 1.0 and np.all(np.diff(lr4) < 0)


def test_one_cycle_bad_args():
    for kw, word in [(dict(total_steps=0), 'total_steps'), (dict(total_steps=2.5), 'total_steps'),
                     (dict(total_steps=10, pct_start=1.5), 'pct_start'), (dict(total_steps=10, div=0), 'div'),
                     (dict(total_steps=10, anneal='cosine'), 'anneal'), (dict(total_steps=10, moms=(0.9, 0.8)), 'moms')]:
        with pytest.raises(ValueError, match=word): one_cycle(**kw)


# ---------------------------------------------------------------- fit semantics of the course
def test_fit_semantics_of_the_notes():
    s = fit_schedule(1e-2, 3, cycle_len=1, n_batches=20)           # three one-epoch cosine cycles
    assert s.n_epochs == 3 and s.restarts == [0, 20, 40]
    assert np.allclose(s.lrs[:20], s.lrs[20:40]) and np.allclose(s.lrs[20:40], s.lrs[40:])
    s = fit_schedule([1e-4, 1e-3, 1e-2], 3, cycle_len=1, cycle_mult=2, n_batches=20)   # 1+2+4 = 7 epochs
    assert s.n_epochs == 7 and s.n_steps == 140 and s.restarts == [0, 20, 60] and s.lrs.shape == (140, 3)
    assert np.allclose(s.lrs / s.lrs[:, -1:], [1e-2, 1e-1, 1.])    # differential lrs: the same curve, scaled
    s = fit_schedule(1e-2, 3, n_batches=20)                         # no cycle_len: constant (fastai 0.7)
    assert s.kind == 'constant lr' and (s.lrs == 1e-2).all() and s.n_epochs == 3
    assert sgdr_epochs(3, 1, 2) == 7 and sgdr_epochs(4, 2, 2) == 30 and sgdr_epochs(1) == 1
    assert sgdr_restarts(10, 3, 2, 2) == [0, 20, 60]
    assert (constant_lrs(7) == 1).all() and len(constant_lrs(0)) == 0
    assert 'restarts at steps [20, 60]' in fit_schedule(1e-2, 3, 1, 2, n_batches=20).describe()


@pytest.mark.parametrize('kwargs,word', [
    (dict(lr=0), '`lr`'), (dict(lr=-1e-3), '`lr`'), (dict(lr=[1e-3, 0]), '`lr`'), (dict(lr=float('nan')), '`lr`'),
    (dict(lr='fast'), '`lr`'), (dict(lr=[]), '`lr`'),
    (dict(n_cycle=0), 'n_cycle'), (dict(n_cycle=-2), 'n_cycle'), (dict(n_cycle=1.5), 'n_cycle'),
    (dict(n_cycle=True), 'n_cycle'), (dict(cycle_len=0), 'cycle_len'), (dict(cycle_len=1.5), 'cycle_len'),
    (dict(cycle_len=1, cycle_mult=0.5), 'cycle_mult'), (dict(cycle_len=1, cycle_mult=1.5), 'cycle_mult'),
    (dict(cycle_mult=2), 'needs `cycle_len`'), (dict(n_batches=0), 'n_batches'),
    (dict(cycle_len=1, eta_min=1.0), 'eta_min'), (dict(cycle_len=1, eta_min=-0.1), 'eta_min'),
    (dict(one_cycle=True, pct_start=-0.1), 'pct_start')])
def test_bad_fit_args(kwargs, word):
    args = dict(lr=1e-2, n_cycle=3, n_batches=10) | kwargs
    with pytest.raises(ValueError, match=word.replace('[', r'\[')): fit_schedule(**args)
    with pytest.raises(ValueError, match=word.replace('[', r'\[')): plot_schedule(**args, verbose=False)


def test_integral_floats_accepted():
    assert sgdr_epochs(3.0, 1.0, 2.0) == 7
    assert fit_schedule(np.float32(1e-2), np.int64(2), cycle_len=np.int64(1), n_batches=5).n_epochs == 2


# ---------------------------------------------------------------- pure schedule functions
def test_pure_schedules():
    p = np.array([0., 0.25, 0.5, 0.75, 1.])
    assert np.allclose(sched_cos(0, 2)(p), [0., 0.29289, 1., 1.70711, 2.], atol=1e-5)
    assert np.allclose(sched_lin(1, 3)(p), [1, 1.5, 2, 2.5, 3])
    assert np.allclose(sched_exp(1e-4, 1)(p), [1e-4, 1e-3, 1e-2, 1e-1, 1])
    assert np.allclose(sched_const(0.5)(p), 0.5)
    assert np.allclose(sched_step(1., 0.5, (0.25, 0.75))(p), [1, 0.5, 0.5, 0.25, 0.25])
    assert isinstance(sched_cos(1, 0)(0.3), float) and 'sched_cos' in repr(sched_cos(1, 0))
    with pytest.raises(ValueError, match='start > 0'): sched_exp(0, 1)


def test_combine_and_warmup():
    c = combine_scheds([0.3, 0.7], [sched_lin(0, 1), sched_cos(1, 0)])
    assert c(0.) == 0 and c(0.15) == pytest.approx(0.5) and c(0.3) == 1 and c(1.) == pytest.approx(0)
    assert c(0.65) == pytest.approx(0.5)
    w = sched_warmup(sched_const(2.), pct=0.5)
    assert np.allclose(w([0, 0.25, 0.5, 1]), [0, 1, 2, 2])
    assert sched_warmup(sched_cos(1, 0), pct=0)(0.) == 1
    with pytest.raises(ValueError, match='add up to 1'): combine_scheds([0.5, 0.6], [sched_const(1)]*2)
    with pytest.raises(ValueError, match='2 pcts but 1 scheds'): combine_scheds([0.5, 0.5], [sched_const(1)])
    with pytest.raises(ValueError, match='pct'): sched_warmup(sched_const(1), pct=1.)
    assert np.allclose(sched_steps(sched_lin(0, 1), 4), [0, .25, .5, .75])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.05, 1.), min_size=1, max_size=4), st.floats(0, 1))
def test_combine_is_continuous_for_continuous_pieces(raw, p):
    "Pieces that join up (each starts where the previous ended) give a schedule that stays within their range."
    pcts = np.array(raw) / sum(raw)
    vals = np.linspace(1, 0, len(raw) + 1)
    c = combine_scheds(pcts, [sched_cos(a, b) for a, b in zip(vals[:-1], vals[1:])])
    assert -1e-12 <= c(p) <= 1 + 1e-12
    assert c(0.) == pytest.approx(1) and c(1.) == pytest.approx(0, abs=1e-12)


# ---------------------------------------------------------------- Recorder and plots
def _filled_recorder(n_groups=3, with_moms=True, epochs=3, n=10):
    rec = Recorder(iters_per_epoch=n)
    lr, mom = one_cycle(epochs * n)
    for i in range(epochs * n):
        rec.record_batch(lr[i] * np.logspace(-2, 0, n_groups) * 1e-2, 1 / (i + 1), mom[i] if with_moms else None)
        if (i + 1) % n == 0: rec.record_epoch({'epoch': i // n, 'train_loss': 1., 'valid_loss': 0.5 / (i + 1)})
    return rec


def test_recorder_records():
    rec = _filled_recorder()
    assert len(rec.lrs) == 30 and len(rec.lrs[0]) == 3 and len(rec.moms) == 30
    assert rec.epoch_ends == [10, 20, 30] and rec.val_results[1]['epoch'] == 1
    assert '30 iterations, 3 epochs, 3 layer groups' in repr(rec)
    assert _filled_recorder(with_moms=False).moms is None
    r = Recorder(); r.record_batch(1e-3, 1.); r.record_batch([1e-3], 1., mom=[0.9, 0.9])
    assert r.moms == [None, 0.9]


def test_plots_return_figures():
    rec = _filled_recorder()
    for fig in [rec.plot_lr(), rec.plot_lr(group='all'), rec.plot_lr(group=0), rec.plot_loss(),
                _filled_recorder(1, False).plot_lr(),
                plot_schedule(1e-2, 3, 1, 2, n_batches=10, verbose=False),
                plot_schedule([1e-3, 1e-2], 2, n_batches=10, one_cycle=True, verbose=False)]:
        assert isinstance(fig, matplotlib.figure.Figure)
        fig.savefig(__import__('io').BytesIO(), format='png')
        plt.close(fig)
    fig, ax = plt.subplots()
    assert rec.plot_loss(ax=ax) is fig
    assert len(ax.lines) >= 3      # raw, smoothed, valid (+ epoch markers)
    plt.close(fig)
    with pytest.raises(ValueError, match='nothing recorded'): Recorder().plot_loss()


def test_plot_lr_marks_epochs_and_moms():
    fig = _filled_recorder().plot_lr()
    ax = fig.axes[0]
    vlines = [l for l in ax.lines if l.get_linestyle() == ':']
    assert len(vlines) == 2                  # between epochs 1|2 and 2|3
    assert len(fig.axes) == 2                # momentum axis, since momentum moves
    assert len(_filled_recorder(with_moms=False).plot_lr().axes) == 1


def test_plot_schedule_prints_epochs_and_marks_restarts(capsys):
    fig = plot_schedule(lr=1e-2, n_cycle=3, cycle_len=1, cycle_mult=2, n_batches=10)
    out = capsys.readouterr().out
    assert '7 epochs' in out and '70 steps' in out and '[10, 30]' in out
    red = [l for l in fig.axes[0].lines if l.get_color() == 'C3']
    assert len(red) == 2
    plt.close(fig)
