"Tests of lessonlib.fastload: it changes the speed of lesson 1's loading, never a number (its bitwise tests against torchvision: 01b_fastload)."
import sys, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as v2
from PIL import Image

import lessonlib.fastload as F
from lessonlib.data import ImageData, ImageDataset, ImageTransform
import lessonlib.csvdata                        # ImageData.from_csv
from lessonlib.fastload import Loader, plain_loading

# lesson 1's loader tests, run again here on the fast path (in test_data.py and test_csvdata.py they run on the plain one)
from test_data import (test_bad_files_skipped_with_one_warning, test_file_breaking_mid_epoch_never_crashes,
                       test_from_paths_basics, test_drop_last_only_for_a_batch_of_one, test_loader_with_workers, test_close_stops_workers,
                       test_paths_with_spaces_and_non_ascii, tiny_folder)
from test_csvdata import test_from_csv_basics, test_from_csv_multi_label

class _TensorOnlyFlip(torch.nn.Module):
    "A flip with no PIL support, to force the tensor path."
    def forward(self, x):
        assert isinstance(x, torch.Tensor)
        return x.flip(-1)

AUGS = {'none': [], 'flip': [v2.RandomHorizontalFlip()], 'flips+rotation': [v2.RandomHorizontalFlip(), v2.RandomRotation(10)],
        'rotation, bilinear, fill, expand': [v2.RandomRotation(30, interpolation=v2.InterpolationMode.BILINEAR, fill=7, expand=True),
                                             v2.RandomVerticalFlip(p=0.3)],
        'slow between fast': [v2.RandomVerticalFlip(), v2.RandomResizedCrop(12, scale=(0.5, 1)), v2.RandomRotation((-3.3, 47.1))],
        'container': [v2.RandomApply([v2.RandomRotation(10)], p=0.5), v2.RandomHorizontalFlip()],
        'colour': [v2.ColorJitter(0.3, 0.3, 0.3), v2.RandomHorizontalFlip()],
        'tensor-only': [v2.RandomHorizontalFlip(), _TensorOnlyFlip(), v2.RandomErasing(p=1)]}

def _images(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    files = {}
    for mode, fmt in (('RGB', 'png'), ('L', 'png'), ('P', 'png'), ('RGBA', 'png'), ('LA', 'png'), ('RGB', 'jpeg')):
        f = tmp_path/f'{mode}.{fmt}'; rgb.convert(mode).save(f); files[f'{mode} {fmt} file'] = f
    return {'RGB image': rgb, 'L image': rgb.convert('L'), 'P image': rgb.convert('P'), **files}

@pytest.mark.parametrize('augs', AUGS, ids=list(AUGS))
def test_fast_transform_is_the_plain_one_bit_for_bit(tmp_path, augs):
    for name, img in _images(tmp_path).items():
        for tfm in (ImageTransform(16, augs=AUGS[augs]), ImageTransform(24, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), AUGS[augs]),
                    ImageTransform(16, (0.3,) * 3, (0.7,) * 3, AUGS[augs])):
            for seed in range(3):
                torch.manual_seed(seed); fe, fx, fr = tfm.encode(img), tfm(img), torch.rand(1)
                with plain_loading(): torch.manual_seed(seed); pe, px, pr = tfm.encode(img), tfm(img), torch.rand(1)
                assert fe.dtype == pe.dtype and torch.equal(fe, pe), (name, seed)
                assert fx.dtype == px.dtype == torch.float32 and torch.equal(fx, px), (name, seed)
                assert torch.equal(fr, pr), (name, seed)              # the same random numbers were drawn

def test_fast_normalize_is_the_plain_one_bit_for_bit():
    rng = np.random.default_rng(1)
    for mean, std in (((0.5,) * 3, (0.5,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.3,) * 3, (0.7,) * 3)):
        t = ImageTransform(8, mean, std)
        for c in (1, 3):
            xb = torch.from_numpy(rng.integers(0, 256, (5, c, 8, 8), dtype=np.uint8))
            fast = t.normalize(xb)
            with plain_loading(): plain = t.normalize(xb)
            assert fast.shape == plain.shape == (5, 3, 8, 8) and torch.equal(fast, plain)
    x = torch.rand(2, 3, 8, 8); assert t.normalize(x) is x                   # floats pass through

def _mixed_folder(root):
    "A folder layout with colour, grey and palette PNGs of several sizes."
    rng = np.random.default_rng(2)
    for split, n in (('train', 7), ('valid', 3)):
        for c in ('cat', 'dog'):
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 255, (10 + i, 14, 3), dtype=np.uint8)).convert(('RGB', 'L', 'P')[i % 3])
                (root/split/c).mkdir(parents=True, exist_ok=True); img.save(root/split/c/f'{c}{i}.png')
    return root

@pytest.mark.parametrize('num_workers', [0, 2])
@pytest.mark.parametrize('augs', ['flips+rotation', 'slow between fast', 'none', 'tensor-only'])
def test_fast_loader_gives_lesson_1s_batches(tmp_path, num_workers, augs):
    root = _mixed_folder(tmp_path/'ds')
    tfms = (ImageTransform(16, augs=AUGS[augs]), ImageTransform(16))
    data = ImageData.from_paths(root, tfms=tfms, bs=4, num_workers=num_workers)
    for split, shuffle in (('train', True), ('fix', False), ('valid', False)):
        dl = data.dl(split, shuffle)
        with plain_loading(): pdl = data.dl(split, shuffle)
        assert isinstance(dl, Loader) and isinstance(pdl, torch.utils.data.DataLoader)
        for k in ('batch_size', 'num_workers', 'drop_last', 'pin_memory'): assert getattr(dl, k) == getattr(pdl, k), k
        torch.manual_seed(0); fast = list(dl)
        with plain_loading(): torch.manual_seed(0); plain = list(pdl)
        assert len(fast) == len(plain) == len(dl)
        for (fx, fy), (px, py) in zip(fast, plain): assert torch.equal(fx, px) and torch.equal(fy, py)

def test_fast_loader_multi_label_csv(tmp_path):
    from test_csvdata import tiny_csv
    rows = [('a', 'coat red'), ('b', 'coat'), ('c', 'red dress'), ('d', 'dress'), ('e', 'coat dress red'), ('f', 'red')]
    root = tiny_csv(tmp_path, rows, header=('image_name', 'tags'))
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[4], bs=2,
                              tfms=(ImageTransform(8, augs=AUGS['flips+rotation']), ImageTransform(8)))
    torch.manual_seed(3); fast = list(data.trn_dl)
    with plain_loading(): torch.manual_seed(3); plain = list(data.dl('train', shuffle=True))
    for (fx, fy), (px, py) in zip(fast, plain, strict=True):
        assert torch.equal(fx, px) and torch.equal(fy, py) and fy.dtype == torch.float32

def test_encoded_batch_equals_items(tmp_path):
    root = _mixed_folder(tmp_path/'ds')
    for augs in ('flips+rotation', 'slow between fast', 'none'):
        ds = ImageData.from_paths(root, tfms=(ImageTransform(16, augs=AUGS[augs]), ImageTransform(16))).trn_ds
        enc = ds.encoded(); idxs = [5, 0, 13, 2, 2]
        torch.manual_seed(4); one = [enc[i] for i in idxs]; r1 = torch.rand(1)
        torch.manual_seed(4); many = enc.__getitems__(idxs); r2 = torch.rand(1)
        assert torch.equal(r1, r2)
        for (x1, y1), (x2, y2) in zip(one, many, strict=True):
            assert isinstance(x1, np.ndarray) and x1.dtype == np.uint8 and np.array_equal(x1, x2) and y1 == y2

def test_plain_loading_switches_back_even_after_an_error():
    assert F._FAST['on']
    with pytest.raises(KeyError):
        with plain_loading(): assert not F._FAST['on']; raise KeyError('x')
    assert F._FAST['on']

def test_the_plain_methods_are_lesson_1s():
    for name, cls in (('encode', ImageTransform), ('normalize', ImageTransform), ('dl', ImageData)):
        plain = F._PLAIN[name]
        assert plain.__module__ == 'lessonlib.data' and getattr(cls, name).plain is plain
        assert F._plain(cls, name) is plain                     # a second import would find them again
    assert ImageDataset.encoded.__module__ == 'lessonlib.fastload'

@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='F_SETPIPE_SZ is Linux only')
def test_workers_send_batches_through_wide_pipes(tmp_path):
    import fcntl
    data = ImageData.from_paths(tiny_folder(tmp_path, n_train=6), bs=4, num_workers=2)
    dl = data.trn_dl; it = iter(dl.dl); next(it)
    assert fcntl.fcntl(it._data_queue._reader.fileno(), fcntl.F_GETPIPE_SZ) == 1 << 20
    del it

def test_fast_args_are_torchvisions_draws():
    "The flip flags and angles are torchvision's own, float32 for float32 (pixels alone might not show a last-bit slip)."
    for rot in (v2.RandomRotation(10), v2.RandomRotation((-3.3, 47.1))):
        us, ref = [], []
        for seed in range(500):
            torch.manual_seed(seed); us.append(torch.rand(1).item())
            torch.manual_seed(seed); ref.append(torch.empty(1).uniform_(*rot.degrees).item())
        assert F._fast_args(rot, us) == ref
    flip = v2.RandomHorizontalFlip(p=0.3)
    us = torch.rand(2000)
    assert F._fast_args(flip, us.tolist()) == (us < flip.p).tolist()
