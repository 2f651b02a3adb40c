"Tests for lessonlib.augment beyond the lesson notebook: presets, seeding, describe(), show_augs inputs."
import json
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from hypothesis import given, settings, strategies as st
from PIL import Image

from lessonlib.augment import (PRESETS, RandomDihedral, RandomRotateReflect, get_augs, random_zoom, show_augs,
                               tfms_from_model, tfms_from_stats, transforms_basic, transforms_side_on, transforms_top_down)
from lessonlib.data import ImageDataset, ImageTransform
from lessonlib.models import get_arch, model_meta

STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture(scope='module')
def photo():
    "A non-symmetric RGB test photo (gradients + a square) so that every flip and turn changes it."
    rng = np.random.default_rng(0)
    a = np.zeros((48, 40, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, 40)[None].astype(np.uint8)
    a[..., 1] = np.linspace(0, 255, 48)[:, None].astype(np.uint8)
    a[5:15, 3:12, 2] = 255
    a += rng.integers(0, 20, a.shape, dtype=np.uint8)
    return Image.fromarray(a)


@pytest.fixture(scope='module')
def tiny_ds(tmp_path_factory, photo):
    "3 classes x 2 PNGs in a temporary folder."
    root = tmp_path_factory.mktemp('augds')
    fnames, y = [], []
    for c, name in enumerate(['cat', 'dog', 'fox']):
        for i in range(2):
            f = root / name / f'{i}.png'
            f.parent.mkdir(parents=True, exist_ok=True)
            photo.rotate(30 * c + 5 * i).save(f)
            fnames.append(f); y.append(c)
    return ImageDataset(fnames, y, ['cat', 'dog', 'fox'], tfms_from_stats(STATS, 32, 'side_on')[0])


@pytest.mark.parametrize('preset', [transforms_basic, transforms_side_on, transforms_top_down])
@pytest.mark.parametrize('sz', [16, 33])
def test_presets_shape_and_types(preset, sz, photo):
    augs = preset(sz, 1.3)
    assert isinstance(augs, list) and all(isinstance(t, T.Transform) for t in augs)
    trn, val = tfms_from_stats(STATS, sz, aug_tfms=preset, max_zoom=1.3)
    for tfm in (trn, val):
        x = tfm(photo)
        assert x.shape == (3, sz, sz) and x.dtype == torch.float32 and torch.isfinite(x).all()


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_seed_reproducible(name, photo):
    trn, _ = tfms_from_stats(STATS, 32, aug_tfms=name, max_zoom=1.5)
    torch.manual_seed(123); a = trn(photo)
    torch.manual_seed(123); b = trn(photo)
    assert torch.equal(a, b)
    outs = {trn(photo).numpy().tobytes() for _ in range(8)}
    assert len(outs) > 1, 'augmentation should vary between calls'


def test_describe_deterministic_and_json():
    for name in PRESETS:
        d1 = tfms_from_model('resnet34', 64, name)[0].describe()
        d2 = tfms_from_model('resnet34', 64, name)[0].describe()
        assert d1 == d2
        assert json.loads(json.dumps(d1)) == d1
        assert not any('0x' in r for r in d1['augs']), f'memory address in repr: {d1["augs"]}'
    descs = {json.dumps(tfms_from_model('resnet34', 64, n, max_zoom=z)[0].describe(), sort_keys=True)
             for n in PRESETS for z in (1.0, 1.1, 1.5)}
    assert len(descs) == 9, 'every preset/zoom combination must describe differently'


def test_valid_matches_plain_transform():
    "The valid transform describes exactly like a plain ImageTransform (same cache key)."
    meta = get_arch('resnet34')
    assert tfms_from_model('resnet34', 64, 'side_on')[1].describe() == ImageTransform(64, meta.mean, meta.std).describe()


@pytest.mark.parametrize('arch', sorted(model_meta))
def test_tfms_from_model_stats(arch):
    trn, val = tfms_from_model(arch, 24, transforms_side_on)
    meta = get_arch(arch)
    np.testing.assert_allclose(trn.mean, meta.mean); np.testing.assert_allclose(val.std, meta.std)
    assert trn.is_aug and not val.is_aug and trn.sz == val.sz == 24
    assert tfms_from_model(get_arch(arch), 24)[0].is_aug is False


def test_aug_tfms_forms(photo):
    flip = T.RandomHorizontalFlip(p=1.)
    assert tfms_from_stats(STATS, 16, aug_tfms=flip)[0].augs == [flip]
    assert tfms_from_stats(STATS, 16, aug_tfms=[flip])[0].augs == [flip]
    assert [type(t) for t in tfms_from_stats(STATS, 16, aug_tfms='top_down')[0].augs] == \
           [type(t) for t in transforms_top_down(16)]
    assert tfms_from_stats(STATS, 16, aug_tfms=lambda sz, z: [flip])[0].augs == [flip]
    assert tfms_from_stats(STATS, 16, aug_tfms=None)[0].augs == []


@pytest.mark.parametrize('kwargs, msg', [
    (dict(aug_tfms='diagonal'), 'side_on'),
    (dict(aug_tfms=3.5), 'aug_tfms must be'),
    (dict(aug_tfms=['not a transform']), 'aug_tfms must be'),
    (dict(max_zoom=0.5), 'max_zoom'),
    (dict(max_zoom=10), 'max_zoom'),
    (dict(sz=0), 'sz must be'),
    (dict(sz=True), 'sz must be'),
    (dict(stats=((0.5,) * 3, (1., 0., 1.))), 'std > 0'),
    (dict(stats=((0.5,) * 2, (0.5,) * 2)), '3 numbers'),
    (dict(stats='imagenet'), 'stats must be'),
])
def test_bad_arguments(kwargs, msg):
    args = dict(stats=STATS, sz=16, aug_tfms='side_on')
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=None) as e:
        tfms_from_stats(args.pop('stats'), args.pop('sz'), **args)
    assert msg in str(e.value)


def test_unknown_arch():
    with pytest.raises(ValueError, match='Unknown architecture'):
        tfms_from_model('vgg99', 16)


def test_dihedral_pil_and_tensor_agree(photo):
    x = torch.from_numpy(np.array(photo)).permute(2, 0, 1).contiguous()
    seen = set()
    for k in range(8):
        a = np.asarray(RandomDihedral().transform(photo, dict(k=k)))
        b = RandomDihedral().transform(x, dict(k=k)).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(a, b)
        seen.add(a.tobytes())
    assert len(seen) == 8
    torch.manual_seed(0)
    ks = [RandomDihedral().make_params([x])['k'] for _ in range(400)]
    assert set(ks) == set(range(8))


def test_rotate_reflect(photo):
    x = torch.from_numpy(np.array(photo)).permute(2, 0, 1).contiguous()
    assert torch.equal(RandomRotateReflect(10, p=0)(x), x)
    for angle in (-45., -10., 3., 30., 45.):
        out = RandomRotateReflect(45, p=1).transform(x, dict(angle=angle))
        assert out.shape == x.shape and out.dtype == torch.uint8
        pil = RandomRotateReflect(45, p=1).transform(photo, dict(angle=angle))
        assert pil.size == photo.size
    const = torch.full((3, 20, 31), 77, dtype=torch.uint8)
    assert int(RandomRotateReflect(45, p=1).transform(const, dict(angle=40.)).min()) == 77
    torch.manual_seed(0)
    angles = [RandomRotateReflect(10, p=1).make_params([x])['angle'] for _ in range(200)]
    assert -10 <= min(angles) < -8 and 8 < max(angles) <= 10
    with pytest.raises(ValueError, match='p must be'): RandomRotateReflect(10, p=2)


def test_random_zoom_range():
    assert random_zoom(32, 1) == []
    crop = random_zoom(32, 2.)[0]
    assert crop.scale == (0.25, 1.) and crop.ratio == (1., 1.) and crop.size == (32, 32)


@settings(max_examples=15, deadline=None)
@given(sz=st.integers(4, 48), zoom=st.floats(1., 3.), preset=st.sampled_from(sorted(PRESETS)), seed=st.integers(0, 10**6))
def test_property_any_size_zoom(sz, zoom, preset, seed):
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (13, 29, 3), dtype=np.uint8))
    trn, val = tfms_from_stats(STATS, sz, preset, max_zoom=zoom)
    x = get_augs(img, trn, n=2, seed=seed)
    assert x.shape == (2, 3, sz, sz) and torch.isfinite(x).all()
    # values stay within the normalized image range
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5


def test_get_augs_seed_does_not_touch_global_rng(photo):
    trn, _ = tfms_from_stats(STATS, 16, 'side_on')
    torch.manual_seed(5); ref = torch.rand(3)
    torch.manual_seed(5); a = get_augs(photo, trn, n=4, seed=9); after = torch.rand(3)
    assert torch.equal(ref, after)
    assert torch.equal(a, get_augs(photo, trn, n=4, seed=9))
    assert not torch.equal(a, get_augs(photo, trn, n=4, seed=10))
    with pytest.raises(ValueError, match='n must be'): get_augs(photo, trn, n=0)


def _titles(fig): return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_show_augs_inputs(photo, tiny_ds, tmp_path):
    tfms = tfms_from_stats(STATS, 24, 'side_on')
    fig = show_augs(photo, tfms, n=6, rows=2, seed=0)
    assert _titles(fig) == ['original'] + [f'aug {i}' for i in range(1, 6)]
    assert len(fig.axes) == 6 and fig.axes[0].images[0].get_array().shape == (24, 24, 3)
    plt.close(fig)
    f = tmp_path / 'p h ö.png'; photo.save(f)
    for item in (f, str(f), np.asarray(photo), np.asarray(photo.convert('L')), np.asarray(photo) / 255.):
        fig = show_augs(item, tfms[0], n=3, rows=1); assert len(_titles(fig)) == 3; plt.close(fig)
    fig = show_augs(4, None, ds=tiny_ds, n=4)
    assert fig._suptitle.get_text() == 'fox' and len(_titles(fig)) == 4
    plt.close(fig)
    fig = show_augs(tiny_ds[2], tfms, ds=tiny_ds, n=2, rows=1, title='mine')
    assert fig._suptitle.get_text() == 'mine'
    plt.close(fig)
    fig = show_augs((tiny_ds[0][0], 1), tfms, n=5, rows=2)   # no ds: label shown as given
    assert len(fig.axes) == 6 and len(_titles(fig)) == 5
    plt.close(fig)


def test_show_augs_seeded_is_repeatable(photo):
    tfms = tfms_from_stats(STATS, 16, 'top_down')
    a = show_augs(photo, tfms, n=4, seed=3); b = show_augs(photo, tfms, n=4, seed=3)
    for ax1, ax2 in zip(a.axes, b.axes):
        np.testing.assert_array_equal(ax1.images[0].get_array(), ax2.images[0].get_array())
    plt.close(a); plt.close(b)


@pytest.mark.parametrize('call, err, msg', [
    (lambda ds, t: show_augs(0, t), ValueError, 'ds='),
    (lambda ds, t: show_augs(99, t, ds=ds), IndexError, 'out of range'),
    (lambda ds, t: show_augs('/no/such.png', t), FileNotFoundError, 'no image file'),
    (lambda ds, t: show_augs(3.5, t), TypeError, 'cannot show'),
    (lambda ds, t: show_augs((1, 2, 3), t), ValueError, '(x, y)'),
    (lambda ds, t: show_augs(torch.zeros(1, 8, 8), t), ValueError, '(3, H, W)'),
    (lambda ds, t: show_augs(0, transforms_side_on, ds=ds), TypeError, 'tfms_from_model'),
    (lambda ds, t: show_augs(0, t, ds=ds, n=0), ValueError, 'n and rows'),
])
def test_show_augs_errors(tiny_ds, call, err, msg):
    with pytest.raises(err) as e: call(tiny_ds, tfms_from_stats(STATS, 16, 'basic'))
    assert msg in str(e.value)
