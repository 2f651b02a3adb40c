"""lessonlib.learner (and the lessons that extend it: export, precompute, schedules, lr_find): freezing, optimizer
groups, fit/schedules, predict/TTA, save/load/export, precompute, bad input.

Runs on tiny PNG datasets (3 classes of coloured squares) and a tiny registered CNN, so the whole file takes seconds;
the bundled efficientnet_lite0 (random init, 32 px) is used where the real architecture matters (export round trip).
"""
import json, os, pickle, re, struct, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
from PIL import Image
from torchvision.transforms import v2

import lessonlib
from lessonlib.core import set_seed
from lessonlib.data import ImageData, ImageDataset, ImageTransform
from lessonlib.models import register_arch
from lessonlib.learner import ConvLearner, accuracy, accuracy_thresh, group_values
from lessonlib.export import Predictor, load_model, EXPORT_FORMAT
import lessonlib.precompute, lessonlib.schedules, lessonlib.lr_find   # precompute=True, fit(cycle_len=...), lr_find

COLORS = {'red': (200, 30, 30), 'green': (30, 180, 40), 'blue': (40, 40, 210)}


def tiny_cnn(pretrained=False):
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        for p in m.parameters(): p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


TINY = register_arch('tiny_learner_test', tiny_cnn, cut=6, split=3, mean=(0.5,) * 3, std=(0.5,) * 3)


def make_images(root, n_train=8, n_valid=4, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('valid', n_valid)):
        for cls, col in COLORS.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.clip(np.array(col) + rng.normal(0, 40, (24, 24, 3)), 0, 255).astype(np.uint8)
                a[: rng.integers(0, 12)] = 255                      # a white band: something for crops/flips to change
                Image.fromarray(a).save(root / split / cls / f'{i}.png')
    return root


AUGS = lambda sz: [v2.RandomHorizontalFlip(), v2.RandomResizedCrop(sz, scale=(0.5, 1.0), antialias=True)]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch): monkeypatch.setenv('LESSONLIB_QUIET', '1')


pytestmark = pytest.mark.filterwarnings('ignore:Data augmentation has no effect')


@pytest.fixture(scope='module')
def root(tmp_path_factory): return make_images(tmp_path_factory.mktemp('colors') / 'data')


def get_data(root, sz=32, augs=True, bs=8):
    return ImageData.from_paths(root, tfms=(ImageTransform(sz, augs=AUGS(sz) if augs else None), ImageTransform(sz)), bs=bs)


def get_learn(root, tmp_path, arch=TINY, sz=32, augs=True, **kw):
    set_seed(0)
    kw.setdefault('cache_dir', tmp_path / 'cache')
    return ConvLearner.pretrained(arch, get_data(root, sz, augs), pretrained=False, xtra_fc=[16],
                                  models_dir=tmp_path / 'models', **kw)


def state(m): return {k: v.detach().clone() for k, v in m.state_dict().items()}
def same(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
def changed(a, b): return [k for k in a if not torch.equal(a[k], b[k])]


# ---------------------------------------------------------------- metrics and per-group values
def test_metrics():
    p = torch.tensor([[2., 1.], [0., 3.], [1., 0.]])
    assert accuracy(p, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert accuracy(p.numpy(), np.array([0, 1, 0])) == 1.0
    assert accuracy_thresh(torch.tensor([[5., -5.], [5., 5.]]), torch.tensor([[1., 0.], [1., 0.]])) == 0.75


def test_group_values():
    assert group_values(0.1, 3).tolist() == [0.1] * 3
    assert np.allclose(group_values(slice(1e-4, 1e-2), 3), [1e-4, 1e-3, 1e-2])
    assert np.allclose(group_values(slice(1e-2), 3), [1e-3, 1e-3, 1e-2])
    for bad, msg in (([1, 2], '3 layer groups'), (0, '> 0'), (float('nan'), '> 0'), (-1, '> 0'), ([1, 2, 3, 4], '4 values')):
        with pytest.raises(ValueError, match=msg): group_values(bad, 3)
    with pytest.raises(ValueError, match='>= 0'): group_values(-0.1, 3, 'wds', allow_zero=True)


# ---------------------------------------------------------------- structure and freezing
def test_layer_groups_compose_to_the_model(root, tmp_path):
    learn = get_learn(root, tmp_path)
    x = torch.randn(4, 3, 32, 32)
    learn.model.eval()
    with torch.no_grad():
        y = x
        for g in learn.layer_groups: y = g(y)
        assert torch.equal(y, learn.model(x))
    ids = [id(p) for g in learn.layer_groups for p in g.parameters()]
    assert sorted(ids) == sorted(id(p) for p in learn.model.parameters())     # the groups partition the model


def test_freeze_keeps_every_body_tensor_bitwise(root, tmp_path):
    learn = get_learn(root, tmp_path)
    body0, head0 = state(learn.body), state(learn.head)
    learn.fit(1e-2, 2)
    assert same(body0, state(learn.body))              # weights AND BatchNorm running stats / num_batches_tracked
    assert changed(head0, state(learn.head))
    assert [r['state'] for r in learn.layer_summary().rows] == ['frozen', 'frozen', 'trainable']


def test_unfreeze_changes_body_weights_and_bn_stats(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.unfreeze()
    body0 = state(learn.body)
    learn.fit(1e-2, 1)
    ch = changed(body0, state(learn.body))
    assert any(k.endswith('running_mean') for k in ch) and any(k.endswith('weight') for k in ch)
    assert len(ch) == len(body0)


def test_freeze_to_one_trains_late_body_only(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.freeze_to(1)
    g0, g1 = state(learn.layer_groups[0]), state(learn.layer_groups[1])
    learn.fit(1e-2, 1)
    assert same(g0, state(learn.layer_groups[0])) and changed(g1, state(learn.layer_groups[1]))
    learn.freeze_to(-1)                                  # python-style: the last group only
    assert [r['trainable'] > 0 for r in learn.layer_summary().rows] == [False, False, True]


def test_train_bn_option(root, tmp_path):
    learn = get_learn(root, tmp_path, train_bn=True)
    body0 = state(learn.body)
    learn.fit(1e-2, 1)
    ch = changed(body0, state(learn.body))
    conv = [k for k in body0 if k in ('0.weight', '0.bias', '3.weight', '3.bias')]
    assert not set(conv) & set(ch)                        # convolutions stay frozen
    assert {'1.weight', '1.running_mean', '4.running_var'} <= set(ch)   # BatchNorm trains and updates its stats
    assert learn.layer_summary().rows[0]['state'] == 'BatchNorm only'


# ---------------------------------------------------------------- optimizer and schedules
def test_per_group_lrs_reach_the_optimizer_every_step(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.unfreeze()
    seen, orig = [], learn.loss_batch
    def spy(xb, yb, opt=None):
        seen.append([pg['lr'] for pg in opt.param_groups]); return orig(xb, yb, opt)
    learn.loss_batch = spy
    lrs = np.array([1e-4, 1e-3, 1e-2])
    learn.fit(lrs, 2, cycle_len=1)
    assert np.allclose(seen, learn.sched.lrs) and len(seen) == 2 * len(learn.data.trn_dl)
    assert np.allclose(seen[0], lrs)                                   # each cycle starts at the given rates
    assert np.allclose(seen[len(learn.data.trn_dl)], lrs)              # ... and restarts there
    assert np.allclose(np.array(seen) / np.array(seen)[:, -1:], lrs / lrs[-1])   # same curve, scaled per group
    assert [len(pg['params']) > 0 for pg in learn.opt.param_groups] == [True, True, True]


def test_sgdr_epochs_and_recorder(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.fit(1e-2, 2, cycle_len=1, cycle_mult=2)                       # 1 + 2 epochs
    nb = len(learn.data.trn_dl)
    assert len(learn.sched.val_results) == 3 and len(learn.sched.lrs) == 3 * nb
    assert learn.sched.epoch_ends == [nb, 2 * nb, 3 * nb] and learn.sched.iters_per_epoch == nb
    r = learn.sched.val_results[-1]
    assert set(r) >= {'epoch', 'train_loss', 'valid_loss', 'accuracy', 'time'}
    assert learn.sched.moms is not None and set(learn.sched.moms) == {0.9}   # AdamW beta1, constant
    old = learn.sched
    learn.fit(1e-2, 1)
    assert learn.sched is not old and len(learn.sched.val_results) == 1   # a new Recorder per fit


def test_epoch_rows_are_printed(root, tmp_path, capsys):
    get_learn(root, tmp_path).fit(1e-2, 2)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time'] and len(out) == 3


def test_adamw_decoupled_weight_decay_and_sgd_momentum(root, tmp_path):
    learn = get_learn(root, tmp_path)
    opt = learn.make_opt(1e-2, wds=[0, 0, 0.1])
    assert isinstance(opt, torch.optim.AdamW) and [pg['weight_decay'] for pg in opt.param_groups] == [0, 0, 0.1]
    # decoupled: with zero gradients AdamW still shrinks each weight by lr*wd
    w = learn.head[-1].weight.detach().clone()
    for p in learn.head.parameters(): p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(learn.head[-1].weight, w * (1 - 1e-2 * 0.1))
    learn = get_learn(root, tmp_path, opt_func='sgd')
    learn.fit_one_cycle(2, 1e-2)
    assert isinstance(learn.opt, torch.optim.SGD)
    moms = np.array(learn.sched.moms)
    assert moms.max() == pytest.approx(0.95) and moms.min() == pytest.approx(0.85, abs=0.01)
    lrs = np.array(learn.sched.lrs)[:, -1]
    assert 0.95e-2 < lrs.max() <= 1e-2 and lrs[0] == pytest.approx(1e-2 / 25)
    assert learn.opt.param_groups[-1]['momentum'] == pytest.approx(moms[-1])


def test_fine_tune(root, tmp_path):
    learn = get_learn(root, tmp_path)
    body0 = state(learn.body)
    learn.fine_tune(1, base_lr=1e-2)
    assert changed(body0, state(learn.body))
    lrs = np.array(learn.sched.lrs)                                    # the unfrozen phase, body 100x lower
    assert np.allclose(lrs.max(0), [5e-5, 5e-4, 5e-3], rtol=0.05)


def test_nan_loss_stops_with_a_clear_error(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.loss_func = lambda out, y: out.sum() * float('nan')
    with pytest.raises(FloatingPointError, match='lower learning rate'): learn.fit(1e-2, 1)


# ---------------------------------------------------------------- prediction
def test_predict_and_tta(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.fit(1e-2, 1)
    lp, y = learn.predict_with_targs()
    assert lp.shape == (12, 3) and np.allclose(np.exp(lp).sum(1), 1, atol=1e-5) and (y == learn.data.val_y).all()
    assert np.array_equal(learn.predict(), lp)
    assert learn.predict('train').shape == (24, 3)
    set_seed(1)
    tta, y2 = learn.TTA()
    assert tta.shape == lp.shape and (y2 == y).all() and not np.allclose(tta, lp)
    assert np.allclose(np.exp(tta).sum(1), 1, atol=1e-5)
    assert np.allclose(learn.TTA(n_aug=0)[0], lp, atol=1e-6)            # no extra views = plain predict
    # by hand: log of the mean of the probabilities of the original and the augmented views
    set_seed(2); tta2 = learn.TTA(n_aug=2)[0]
    set_seed(2)                                # (each new DataLoader draws a seed: same order as TTA)
    aug = learn.data.val_ds.with_tfm(learn.data.tfms[0])
    views = [np.exp(learn.predict(learn.data.val_ds))] + [np.exp(learn.predict(aug)) for _ in range(2)]
    assert np.allclose(tta2, np.log(np.mean(views, 0)), atol=1e-5)


def test_tta_without_augmentation_warns(root, tmp_path, warned_here):
    learn = get_learn(root, tmp_path, augs=False)
    with pytest.warns(UserWarning, match='no augmentation') as rec: learn.TTA(n_aug=1)
    warned_here(rec, 'no augmentation')


# ---------------------------------------------------------------- save / load / set_data
def test_save_load_roundtrip(root, tmp_path):
    learn = get_learn(root, tmp_path)
    p = learn.save('a')
    assert p == tmp_path / 'models' / 'a.safetensors'
    w = state(learn.model)
    learn.unfreeze(); learn.fit(1e-2, 1)
    assert changed(w, state(learn.model))
    learn.load('a')
    assert same(w, state(learn.model))
    other = tmp_path / 'elsewhere' / 'b.safetensors'
    assert learn.save(other) == other and other.exists()
    with pytest.raises(FileNotFoundError, match=r"\['a'\]"): learn.load('nope')


def test_default_models_dir_is_under_the_data(root, tmp_path):
    set_seed(0)
    learn = ConvLearner.pretrained(TINY, get_data(root), pretrained=False)
    assert learn.models_path == root / 'models'


def test_load_rejects_other_architectures(root, tmp_path):
    learn = get_learn(root, tmp_path)
    p = learn.save('tiny')
    set_seed(0)
    other = ConvLearner.pretrained(TINY, get_data(root), pretrained=False, xtra_fc=[], models_dir=tmp_path / 'models')
    with pytest.raises(ValueError, match='does not fit this model'): other.load('tiny')


def test_set_data_keeps_weights(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.fit(1e-2, 1)
    w = state(learn.model)
    learn.set_data(learn.data.resize(48))
    assert learn.data.sz == 48 and same(w, state(learn.model))
    assert learn.predict().shape == (12, 3)
    learn.fit(1e-3, 1)
    bad = make_images(tmp_path / 'other', 2, 1)
    (bad / 'train' / 'blue').rename(bad / 'train' / 'purple'); (bad / 'valid' / 'blue').rename(bad / 'valid' / 'purple')
    with pytest.raises(ValueError, match='classes'): learn.set_data(get_data(bad))


def test_set_data_stops_the_old_workers(root, tmp_path):
    "set_data closes the data it replaces: its loaders' persistent workers stop at once, not at some later garbage collection."
    learn = get_learn(root, tmp_path)
    old = learn.data; old.num_workers = 2
    held = old.trn_dl; next(iter(held))
    from test_data import loader_workers
    workers = loader_workers(held)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    learn.set_data(old.resize(48))
    assert not any(w.is_alive() for w in workers)


# ---------------------------------------------------------------- export / load_model
def test_export_load_model_identical(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.fit(1e-2, 1)
    f = learn.export('model.safetensors')
    pred = load_model(f)
    assert isinstance(pred, Predictor) and pred.classes == learn.data.classes
    xb = torch.stack([learn.data.val_ds[i][0] for i in range(12)]).contiguous(memory_format=torch.channels_last)
    learn.model.eval(); pred.model.eval()
    with torch.no_grad(): assert torch.equal(pred.model(xb), learn.model(xb))
    probs = np.exp(learn.predict())
    for i in (0, 5, 11):
        label, idx, p = pred.predict(learn.data.val_ds.fnames[i])
        assert np.allclose(p, probs[i], atol=1e-6) and idx == int(p.argmax()) and label == learn.data.classes[idx]
    img = Image.open(learn.data.val_ds.fnames[0])
    assert np.allclose(pred.predict(img)[2], pred.predict(np.asarray(img))[2])
    with pytest.raises(FileNotFoundError): pred.predict(tmp_path / 'missing.png')
    # everything lives in one file's header metadata
    raw = f.read_bytes(); n = struct.unpack('<Q', raw[:8])[0]
    meta = json.loads(raw[8:8 + n])['__metadata__']
    assert meta['format'] == EXPORT_FORMAT and meta['arch'] == 'tiny_learner_test' and json.loads(meta['classes']) == ['blue', 'green', 'red']
    assert meta['sz'] == '32' and json.loads(meta['mean']) == [0.5] * 3 and json.loads(meta['head'])['xtra_fc'] == [16]


def test_export_with_the_bundled_architecture(root, tmp_path):
    learn = get_learn(root, tmp_path, arch='efficientnet_lite0', sz=32)
    pred = load_model(learn.export(tmp_path / 'eff.safetensors'))
    probs = np.exp(learn.predict())
    assert np.allclose(pred.predict_many(learn.data.val_ds.fnames), probs, atol=1e-5)


def _rewrite_meta(src, dst, **changes):
    raw = src.read_bytes(); n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n]); header['__metadata__'].update(changes)
    h = json.dumps(header).encode(); h += b' ' * (-len(h) % 8)
    dst.write_bytes(struct.pack('<Q', len(h)) + h + raw[8 + n:])
    return dst


def test_tampered_or_incompatible_exports_are_refused(root, tmp_path):
    learn = get_learn(root, tmp_path)
    f = learn.export('m')
    bad = tmp_path / 'bad.safetensors'
    raw = bytearray(f.read_bytes()); raw[-5] ^= 0x55; bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match='sha256'): load_model(bad)
    cases = {'classes': ('["a", "b"]', 'do not fit'), 'sz': ('"big"', 'sz'), 'arch': ('no_such_arch', 'register_arch'),
             'format_version': ('99', 'upgrade'), 'head': ('{"evil": 1}', 'head settings'), 'format': ('x', 'not a lessonlib export'),
             'mean': ('[1]', 'mean'), 'is_multi': ('{', 'not valid JSON')}
    for key, (val, msg) in cases.items():
        with pytest.raises(ValueError, match=msg): load_model(_rewrite_meta(f, bad, **{key: val}))
    bad.write_bytes(b'\x00' * 3); 
    with pytest.raises(ValueError, match='not a readable safetensors'): load_model(bad)
    with pytest.raises(ValueError, match='not a lessonlib export'): load_model(learn.save('w'))
    with pytest.raises(FileNotFoundError): load_model(tmp_path / 'nothing.safetensors')


NAMES = ['m', 'm.safetensors', 'm.lessonlib', 'model.v2', 'sub/m.lessonlib', 'sub/deeper/model.v2.safetensors']


def test_export_and_load_model_take_the_same_names(root, tmp_path, monkeypatch):
    "export(name) writes `name` + '.safetensors' (unless it ends so); load_model(name) reads that same file."
    learn = get_learn(root, tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in NAMES + [str(tmp_path / 'abs' / 'x.v3')]:
        f = learn.export(name)
        want = name if name.endswith('.safetensors') else name + '.safetensors'
        assert f.name == Path(want).name and f.is_file(), (name, f)
        given = name if Path(name).parent != Path('.') else learn.models_path / name   # a bare name: in models_path, like save
        assert f.resolve() == Path(str(given) if name == want else str(given) + '.safetensors').resolve(), (name, f)
        assert load_model(given).classes == learn.data.classes, name
        f.unlink()                                          # the next name must find its own file


def test_load_model_names_the_files_it_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ('sub/gone.v2', 'gone.safetensors', 'gone'):
        want = name if name.endswith('.safetensors') else name + '.safetensors'
        with pytest.raises(FileNotFoundError, match=re.escape(want)): load_model(name)
    with pytest.raises(FileNotFoundError, match='models_path'): load_model('gone')   # where export put a bare name


class _Evil:
    def __reduce__(self): return (os.system, (f'touch {os.environ.get("EVIL_MARK", "/tmp/x")}',))


def test_a_pickle_is_never_run(tmp_path, monkeypatch):
    mark = tmp_path / 'pwned'
    monkeypatch.setenv('EVIL_MARK', str(mark))
    f = tmp_path / 'evil.safetensors'
    f.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ValueError): load_model(f)
    torch.save({'x': _Evil()}, tmp_path / 'evil2.safetensors')
    with pytest.raises(ValueError): load_model(tmp_path / 'evil2.safetensors')
    assert not mark.exists()



FIXTURE = Path(__file__).parent / 'fixtures' / 'export_v1_tiny.safetensors'   # written by learn.export before #15


def test_an_export_written_by_the_old_code_still_loads(tmp_path):
    "The weights digest moved to `core.tensor_digest` with the same byte layout: files exported before still verify."
    pred = load_model(FIXTURE, device='cpu')
    assert pred.classes == ['blue', 'green', 'red'] and pred.arch == 'tiny_learner_test' and pred.tfm.sz == 32
    imgs = [np.full((24, 24, 3), c, dtype=np.uint8) for c in [(200, 30, 30), (30, 180, 40), (40, 40, 210)]]
    assert np.allclose(pred.predict_many(imgs), [[0.39053226, 0.31128827, 0.29817942], [0.3863927, 0.33134997, 0.28225735],
                                                 [0.38684374, 0.33149529, 0.28166103]], atol=1e-6)   # as the old code predicted
    raw = bytearray(FIXTURE.read_bytes()); raw[-5] ^= 0x55
    bad = tmp_path / 'bad.safetensors'; bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match='sha256'): load_model(bad)


def test_the_learner_imports_no_later_lesson():
    "`lessonlib.learner` alone: no export, precompute, schedules or lr_find; their options and methods say what to import."
    code = ("import sys; import lessonlib.learner as L\n"
            "later = {'lessonlib.export', 'lessonlib.precompute', 'lessonlib.schedules', 'lessonlib.lr_find'} & set(sys.modules)\n"
            "assert not later, later\n"
            "for name in ('save', 'export', 'fit_one_cycle', 'fit_sgdr', 'lr_find', 'activation_cache'):\n"
            "    assert not hasattr(L.ConvLearner, name), name\n")
    subprocess.run([sys.executable, '-c', code], check=True, env={**os.environ, 'PYTHONPATH': str(Path(lessonlib.__file__).parents[1])})


def test_unknown_options_are_refused(root, tmp_path):
    with pytest.raises(TypeError, match='no_such_option'): get_learn(root, tmp_path, no_such_option=1)

# ---------------------------------------------------------------- multi-label
def test_multi_label(root, tmp_path):
    d = get_data(root)
    def multi(ds):
        y = np.eye(3, dtype=np.float32)[ds.y]; y[::3, 0] = 1             # some images carry two labels
        return ImageDataset(ds.fnames, y, ds.classes, ds.tfm, is_multi=True)
    data = ImageData(root, multi(d.trn_ds), multi(d.val_ds), bs=8)
    set_seed(0)
    learn = ConvLearner.pretrained(TINY, data, pretrained=False, models_dir=tmp_path / 'm')
    assert learn.loss_func is torch.nn.functional.binary_cross_entropy_with_logits and learn.metrics == [accuracy_thresh]
    learn.fit(1e-2, 2)
    assert 'accuracy_thresh' in learn.sched.val_results[-1]
    lp = learn.predict()                                                 # multi-label: probabilities (lesson 13)
    assert lp.shape == (12, 3) and (lp >= 0).all() and (lp <= 1).all() and not np.allclose(lp.sum(1), 1)
    pred = load_model(learn.export('ml'))
    labels, idx, p = pred.predict(data.val_ds.fnames[0])
    assert isinstance(labels, list) and np.allclose(p, lp[0], atol=1e-5)
    assert labels == [data.classes[i] for i in idx]


# ---------------------------------------------------------------- precompute
def test_precompute_integration(root, tmp_path):
    lessonlib.precompute._AUG_WARNED.clear()                            # it warns once per transform and process
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        learn = get_learn(root, tmp_path, precompute=True)
    assert any('augmentation has no effect' in str(x.message).lower() for x in w)
    info = learn.cache_info()
    assert 'ActivationCache' in info and 'train (24, 32)' in info        # concat pool: 2 x 16 features
    assert learn.trainable_module() is not learn.model
    xb, yb = next(learn.train_batches())
    assert xb.shape == (8, 32)
    body0 = state(learn.body)
    learn.fit(1e-2, 2)
    assert same(body0, state(learn.body))
    head = state(learn.head)
    with pytest.raises(ValueError, match='precompute'): learn.unfreeze()
    with pytest.raises(ValueError, match='precompute'): learn.freeze_to(1)
    learn.freeze()                                                       # allowed: already frozen
    lp_cache = learn.predict()
    learn.precompute = False
    assert same(head, state(learn.head))                                 # same head weights on images
    assert np.allclose(np.exp(learn.predict()), np.exp(lp_cache), atol=1e-2)   # float16 cache
    learn.precompute = True
    assert learn.cache_info().split()[1] == info.split()[1]              # same cache, reopened
    learn.set_data(learn.data.resize(48))                                # new size -> a new cache
    assert learn.cache_info().split()[1] != info.split()[1]


def test_precompute_cache_follows_the_body(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.save('start')
    learn.unfreeze(); learn.fit(1e-2, 1); learn.freeze()
    learn.precompute = True
    key1 = learn.cache_info().split()[1]
    learn.load('start')                                                  # other body weights: the cache must follow
    assert learn.cache_info().split()[1] != key1


def test_precompute_errors(root, tmp_path):
    with pytest.raises(ValueError, match='train_bn'): get_learn(root, tmp_path, precompute=True, train_bn=True)
    learn = get_learn(root, tmp_path)
    learn.unfreeze()
    with pytest.raises(ValueError, match='frozen body'): learn.precompute = True
    assert learn.precompute is False
    assert 'off' in learn.cache_info()


def test_precompute_augs(root, tmp_path):
    learn = get_learn(root, tmp_path, precompute=True, precompute_augs=2)
    a = next(learn.train_batches(0))[0]
    assert learn.activation_cache().n_augs == 2
    learn.fit(1e-2, 2)
    with pytest.raises(ValueError, match='precompute_augs'): get_learn(root, tmp_path, precompute_augs=-1)


# ---------------------------------------------------------------- internals lr_find relies on
def test_snapshot_restore_and_lr_find(root, tmp_path):
    learn = get_learn(root, tmp_path)
    learn.fit(1e-2, 1)
    w, opt_state = state(learn.model), __import__('copy').deepcopy(learn.opt.state_dict())
    snap, opt = learn.state_snapshot(), learn.opt
    learn.unfreeze(); learn.model.train()
    learn.loss_batch(*next(learn.train_batches()), learn.make_opt(1e-1))
    for p in learn.head.parameters(): p.grad = torch.ones_like(p)
    opt.step()                                                           # the fit's optimizer state moves too
    assert not torch.equal(opt.state_dict()['state'][0]['exp_avg'], opt_state['state'][0]['exp_avg'])
    learn.restore(snap)
    assert learn.opt is opt
    assert same(w, state(learn.model)) and not learn.model.training
    assert [r['trainable'] > 0 for r in learn.layer_summary().rows] == [False, False, True]
    assert torch.equal(learn.opt.state_dict()['state'][0]['exp_avg'], opt_state['state'][0]['exp_avg'])
    learn.lr_find(num_it=10)
    assert same(w, state(learn.model)) and len(learn.sched.losses) > 0


# ---------------------------------------------------------------- bad arguments
def test_bad_arguments(root, tmp_path):
    learn = get_learn(root, tmp_path)
    cases = [(lambda: learn.fit([1e-3, 1e-2], 1), '3 layer groups'), (lambda: learn.fit(0, 1), '> 0'),
             (lambda: learn.fit(-1e-3, 1), '> 0'), (lambda: learn.fit(1e-2, 0), 'n_cycle'),
             (lambda: learn.fit(1e-2, 1.5), 'n_cycle'), (lambda: learn.fit(1e-2, 2, cycle_len=1, cycle_mult=0.5), 'cycle_mult'),
             (lambda: learn.fit(1e-2, 2, cycle_len=0), 'cycle_len'), (lambda: learn.fit(1e-2, 1, wds=-1), 'wds'),
             (lambda: learn.fit_one_cycle(0, 1e-2), 'n_cycle'), (lambda: learn.freeze_to(3), 'from 0 to 2'),
             (lambda: learn.freeze_to('1'), 'from 0 to 2'), (lambda: learn.TTA(n_aug=-1), 'n_aug'),
             (lambda: learn.predict('nope'), "'valid', 'train', 'test'"), (lambda: learn.predict('test'), 'no test set'),
             (lambda: ConvLearner.pretrained(TINY, learn.data, pretrained=False, opt_func='adam'), 'opt_func'),
             (lambda: ConvLearner.pretrained('resnet_99', learn.data), 'Unknown architecture')]
    for f, msg in cases:
        with pytest.raises(ValueError, match=msg): f()
