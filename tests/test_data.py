"Tests of lessonlib.data beyond the lesson: every kind of bad input, loaders and plots (the dataset builders: test_external.py; the CSV layout: test_csvdata.py)."
import json, sys, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as v2
from PIL import Image
import matplotlib
matplotlib.use('Agg')
from matplotlib.figure import Figure

from lessonlib.data import ImageData, ImageDataset, ImageTransform, image_problem, open_image, default_workers

@pytest.fixture(autouse=True)
def _plain_code():
    "These tests check lesson 1's plain code, also when another test file has imported lessonlib.fastload (which speeds it up)."
    fastload = sys.modules.get('lessonlib.fastload')
    if fastload is None: yield
    else:
        with fastload.plain_loading(): yield

# ---------------------------------------------------------------- helpers
def _png(path, size=(12, 10), color=None, mode='RGB', seed=0):
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    if color is None:
        arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(arr)
    else: img = Image.new('RGB', size, color)
    img.convert(mode).save(path)
    return path

def tiny_folder(root, classes=('cat', 'dog', 'eel'), n_train=4, n_valid=2, valid_classes=None):
    "root/{train,valid}/<class>/<class>_<i>.png with small random images."
    root = Path(root)
    for split, n, cls in (('train', n_train, classes), ('valid', n_valid, valid_classes or classes)):
        for c in cls:
            for i in range(n): _png(root/split/c/f'{c}_{i}.png', seed=hash((split, c, i)) % 1000)
    return root

# ---------------------------------------------------------------- images and transforms
@pytest.mark.parametrize('mode,fmt', [('L', 'png'), ('LA', 'png'), ('P', 'png'), ('RGBA', 'png'), ('I;16', 'png'),
                                      ('CMYK', 'jpeg'), ('1', 'png'), ('RGB', 'jpeg'), ('P', 'gif'), ('F', 'tiff')])
def test_open_image_any_mode(tmp_path, mode, fmt):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (9, 11, 3), dtype=np.uint8))
    img = img.convert('L').convert('I').point(lambda v: v*200).convert('I;16') if mode == 'I;16' else img.convert(mode)
    f = tmp_path/f'x.{fmt}'; img.save(f)
    out = open_image(f)
    assert out.mode == 'RGB' and out.size == (11, 9)
    if mode == 'I;16': assert np.asarray(out).max() > 100   # scaled down, not clipped to white
    x = ImageTransform(16)(f)
    assert x.shape == (3, 16, 16) and torch.isfinite(x).all()

def test_open_image_palette_transparency_is_white(tmp_path):
    img = Image.new('P', (4, 4), 0); img.putpalette([0, 0, 0] * 256); img.info['transparency'] = 0
    img.save(tmp_path/'t.png', transparency=0)
    assert open_image(tmp_path/'t.png').getpixel((0, 0)) == (255, 255, 255)

def test_open_image_missing_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.png'): open_image(tmp_path/'nope.png')

def test_transform_normalizes_and_denorms():
    img = Image.new('RGB', (5, 7), (255, 0, 128))
    t = ImageTransform(8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    x = t(img)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [(1-0.5)/0.2, (0-0.4)/0.25, (128/255-0.3)/0.5], rtol=1e-5)
    np.testing.assert_allclose(t.denorm(x)[0, 0], [1, 0, 128/255], atol=1e-6)
    assert t.denorm(torch.stack([x, x])).shape == (2, 8, 8, 3)
    assert json.loads(json.dumps(t.describe())) == t.describe() == {'sz': 8, 'mean': [0.5, 0.4, 0.3], 'std': [0.2, 0.25, 0.5], 'augs': []}

class _TensorOnlyFlip(torch.nn.Module):
    "A flip with no PIL support, to force the tensor path."
    def forward(self, x):
        assert isinstance(x, torch.Tensor)
        return x.flip(-1)

def test_pil_and_tensor_paths_agree():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    grey = rgb.convert('L')
    pil_t, ten_t = ImageTransform(16, augs=[v2.RandomHorizontalFlip(p=1)]), ImageTransform(16, augs=[_TensorOnlyFlip()])
    for img in (rgb, grey):
        np.testing.assert_allclose(pil_t(img).numpy(), ten_t(img).numpy(), atol=1e-5)
    np.testing.assert_allclose(pil_t(grey).numpy(), pil_t(grey.convert('RGB')).numpy(), atol=1e-5)
    # a container of PIL-capable transforms still takes the PIL path; output shape is right either way
    comp = ImageTransform(16, augs=[v2.RandomApply([v2.RandomRotation(10)], p=1.0), _TensorOnlyFlip(), v2.RandomErasing(p=1)])
    assert comp(rgb).shape == (3, 16, 16)

def test_transform_bad_args_and_with_sz():
    with pytest.raises(ValueError, match='sz=-3'): ImageTransform(-3)
    with pytest.raises(ValueError, match='sz=64.0'): ImageTransform(64.0)
    with pytest.raises(ValueError, match='std'): ImageTransform(8, mean=(0.5, 0.5))
    augs = [v2.RandomHorizontalFlip()]
    t = ImageTransform(8, (0.1, 0.2, 0.3), (1, 2, 3), augs).with_sz(32)
    assert (t.sz, t.mean, t.std, t.augs, t.is_aug) == (32, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0), augs, True)
    assert not ImageTransform(8).is_aug

# ---------------------------------------------------------------- bad files
def test_image_problem_kinds(tmp_path):
    good = _png(tmp_path/'good.png', size=(64, 64))
    big = tmp_path/'big.jpg'; Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(big)
    (tmp_path/'zero.png').write_bytes(b'')
    (tmp_path/'cut.png').write_bytes(good.read_bytes()[:len(good.read_bytes())//2])
    (tmp_path/'cut.jpg').write_bytes(big.read_bytes()[:len(big.read_bytes())//2])
    (tmp_path/'notes.png').write_text('I am text')
    assert image_problem(good) is None and image_problem(big) is None
    assert image_problem(tmp_path/'zero.png') == 'empty (0 bytes)'
    assert image_problem(tmp_path/'cut.png').startswith('truncated')
    assert image_problem(tmp_path/'cut.jpg').startswith('truncated')
    assert image_problem(tmp_path/'notes.png') == 'not an image'
    assert image_problem(tmp_path/'gone.png').startswith('cannot read')

def test_bad_files_skipped_with_one_warning(tmp_path):
    root = tiny_folder(tmp_path/'ds')
    good = root/'train'/'cat'/'cat_0.png'
    (root/'train'/'cat'/'zero.png').write_bytes(b'')
    (root/'train'/'dog'/'cut.png').write_bytes(good.read_bytes()[:60])
    (root/'train'/'eel'/'readme.txt').write_text('not an image')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        data = ImageData.from_paths(root, bs=4)
    msgs = [str(x.message) for x in w if 'unusable' in str(x.message)]
    assert len(msgs) == 1 and all(n in msgs[0] for n in ('zero.png', 'cut.png', 'readme.txt', '3 unusable'))
    assert sorted(p.name for p in data.trn_ds.bad_files) == ['cut.png', 'readme.txt', 'zero.png']
    assert len(data.trn_ds) == 12 and len(data.trn_y) == 12
    assert sum(len(xb) for xb, _ in data.trn_dl) == 12 and data.fix_ds.bad_files == data.trn_ds.bad_files

def test_file_breaking_mid_epoch_never_crashes(tmp_path):
    root = tiny_folder(tmp_path/'ds', n_train=3)
    data = ImageData.from_paths(root, bs=3, num_workers=0)
    victim = data.trn_ds.fnames[4]
    victim.write_bytes(b'garbage now')                        # broken after the dataset was built
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        for _ in range(2): ys = torch.cat([yb for _, yb in data.trn_dl])
        x, y = data.trn_ds[4]
    msgs = [str(m.message) for m in w if 'could not read' in str(m.message)]
    assert len(msgs) == 1 and str(victim) in msgs[0]         # warned once, naming the file
    assert len(ys) == 9 and int(y) == data.trn_y[5]          # substituted by the next image, with its own label
    victim.unlink()
    assert data.trn_ds[4][0].shape == (3, 64, 64)

# ---------------------------------------------------------------- from_paths
def test_from_paths_basics(tmp_path):
    root = tiny_folder(tmp_path/'ds')
    (root/'train'/'.ipynb_checkpoints').mkdir(); (root/'train'/'cat'/'.DS_Store').write_bytes(b'junk')
    _png(root/'test'/'a.png'); _png(root/'test'/'sub'/'b.png')
    tfms = (ImageTransform(32, augs=[v2.RandomHorizontalFlip()]), ImageTransform(32))
    data = ImageData.from_paths(root, tfms=tfms, bs=5, test_name='test')
    assert data.classes == ['cat', 'dog', 'eel'] and data.c == 3 and not data.is_multi
    assert data.trn_y.dtype == np.int64 and data.trn_y.tolist() == [0]*4 + [1]*4 + [2]*4
    assert data.val_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert [f.name for f in data.test_ds.fnames] == ['a.png', 'b.png']
    assert data.layout == 'folder' and data.csv_path is None and data.folder == 'train' and data.path == root
    assert data.sz == 32 and data.bs == 5 and data.tfms == tfms
    assert data.fix_ds.tfm is tfms[1] and data.fix_ds.fnames == data.trn_ds.fnames
    xb, yb = next(iter(data.trn_dl))
    assert xb.shape == (5, 3, 32, 32) and yb.dtype == torch.int64
    assert [len(b[0]) for b in data.val_dl] == [5, 1] and len(list(data.test_dl)) == 1
    assert data.trn_dl.pin_memory == torch.cuda.is_available()
    assert data.trn_dl is data.trn_dl                          # loaders are made once
    assert 'train 12' in repr(data)

def test_drop_last_only_for_a_batch_of_one(tmp_path):
    data = ImageData.from_paths(tiny_folder(tmp_path/'ds', n_train=3), bs=4)   # 9 = 2*4 + 1
    assert [len(x) for x, _ in data.trn_dl] == [4, 4] and [len(x) for x, _ in data.fix_dl] == [4, 4, 1]

def test_from_paths_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'): ImageData.from_paths(tmp_path/'nowhere')
    (tmp_path/'f.txt').write_text('x')
    with pytest.raises(NotADirectoryError, match='f.txt'): ImageData.from_paths(tmp_path/'f.txt')

@pytest.mark.parametrize('missing,arg', [('train', 'trn_name'), ('valid', 'val_name')])
def test_from_paths_without_split(tmp_path, missing, arg):
    root = tiny_folder(tmp_path/'ds')
    import shutil; shutil.rmtree(root/missing)
    with pytest.raises(FileNotFoundError, match=f"{arg}='{missing}'.*folder layout"): ImageData.from_paths(root)

def test_from_paths_custom_split_names(tmp_path):
    root = tiny_folder(tmp_path/'ds')
    (root/'train').rename(root/'trn'); (root/'valid').rename(root/'val')
    assert len(ImageData.from_paths(root, trn_name='trn', val_name='val').val_ds) == 6

def test_from_paths_no_class_subfolders(tmp_path):
    _png(tmp_path/'train'/'a.png'); _png(tmp_path/'valid'/'b.png')
    with pytest.raises(ValueError, match='train has no class subfolders.*from_csv'): ImageData.from_paths(tmp_path)

def test_from_paths_loose_files_warn(tmp_path, warned_here):
    root = tiny_folder(tmp_path/'ds'); _png(root/'train'/'stray.png')
    with pytest.warns(UserWarning, match=r"ignored 1 file\(s\) outside the class folders: \['stray.png'\]") as rec:
        assert len(ImageData.from_paths(root).trn_ds) == 12
    warned_here(rec, 'outside the class folders')                # the warning names this line, not the library's

def test_from_paths_empty_class(tmp_path):
    root = tiny_folder(tmp_path/'ds'); (root/'train'/'fox').mkdir()
    with pytest.raises(ValueError, match='empty class.*train/fox'): ImageData.from_paths(root)

def test_from_paths_class_only_in_valid(tmp_path):
    root = tiny_folder(tmp_path/'ds', classes=('cat', 'dog'), valid_classes=('cat', 'dog', 'yak'))
    with pytest.raises(ValueError, match=r"\['yak'\].*valid.*never sees"): ImageData.from_paths(root)

def test_from_paths_missing_test_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_name='tst'"): ImageData.from_paths(tiny_folder(tmp_path), test_name='tst')

def test_paths_with_spaces_and_non_ascii(tmp_path):
    root = tmp_path/'my data'/'Kleidung – Übersicht'
    for split in ('train', 'valid'):
        for c in ('Mäntel', 'T shirt', '靴'):
            _png(root/split/c/'ä b ü.png'); _png(root/split/c/'日本 1.png', seed=3)
    data = ImageData.from_paths(root, bs=4)
    assert data.classes == sorted(['Mäntel', 'T shirt', '靴']) and len(data.trn_ds) == 6
    assert sum(len(x) for x, _ in data.trn_dl) == 6
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # the default font has no CJK glyphs
        assert data.show_batch(n=3).axes[0].get_title() in data.classes

def test_bad_loader_args(tmp_path):
    root = tiny_folder(tmp_path)
    with pytest.raises(ValueError, match='bs=0'): ImageData.from_paths(root, bs=0)
    with pytest.raises(ValueError, match='num_workers=-1'): ImageData.from_paths(root, num_workers=-1)
    with pytest.raises(TypeError, match='tfms must be a pair'): ImageData.from_paths(root, tfms=ImageTransform(8))
    data = ImageData.from_paths(root)
    with pytest.raises(ValueError, match='no test set'): data.dl('test')
    with pytest.raises(ValueError, match="ds='tain'"): data.dl('tain')
    assert data.test_dl is None

def test_loader_with_workers(tmp_path):
    data = ImageData.from_paths(tiny_folder(tmp_path, n_train=6), bs=4, num_workers=2)
    assert sorted(torch.cat([y for _, y in data.trn_dl]).tolist()) == sorted(data.trn_y.tolist())
    assert default_workers(10) == 0 and default_workers(100_000) >= 1


def loader_workers(dl):
    "The worker processes of a loader's live iterator (a DataLoader, or the one inside fastload's Loader)."
    return list(getattr(dl, 'dl', dl)._iterator._workers)


def test_close_stops_workers(tmp_path):
    "close() stops the persistent workers of a loader left mid-epoch (as lr_find leaves it), at once; used again, it starts afresh."
    data = ImageData.from_paths(tiny_folder(tmp_path, n_train=6), bs=2, num_workers=2)
    it = iter(data.trn_dl); next(it); del it
    held = data.trn_dl                       # something still holds the loader (a learner does, in a reference cycle)
    workers = loader_workers(held)           # test_fastload runs this on its Loader
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    data.close()
    assert not any(w.is_alive() for w in workers)
    assert sorted(torch.cat([y for _, y in data.trn_dl]).tolist()) == sorted(data.trn_y.tolist())
    data.close()

# ---------------------------------------------------------------- exploring, resizing
def test_show_batch_and_size_hist(tmp_path):
    root = tiny_folder(tmp_path)
    _png(root/'train'/'cat'/'wide.png', size=(40, 10))
    data = ImageData.from_paths(root, bs=4, test_name=None)
    fig = data.show_batch(n=5, ds='valid')
    assert isinstance(fig, Figure) and [a.get_title() for a in fig.axes[:5]] == ['cat', 'cat', 'dog', 'eel', 'eel']
    assert isinstance(data.show_batch(n=4, seed=1), Figure)
    st = data.size_stats()
    assert st['n'] == 13 and st['width'] == {'min': 12, 'median': 12.0, 'max': 40, 'mean': round((12*12+40)/13, 2)}
    assert st['most_common'][0] == [12, 10, 12]
    fig = data.plot_size_hist(); assert isinstance(fig, Figure) and 'sz = 64' in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    import matplotlib.pyplot as plt
    f2, ax = plt.subplots(); assert data.plot_size_hist(ds='valid', ax=ax) is f2; plt.close(f2)

def test_dataset_validation():
    with pytest.raises(ValueError, match='2 files but 1 labels'): ImageDataset(['a', 'b'], [0], ['x'], check=False)
    with pytest.raises(ValueError, match='class indices'): ImageDataset(['a'], [3], ['x', 'y'], check=False)
    with pytest.raises(ValueError, match='shape \\(N, 2\\)'): ImageDataset(['a'], [[1, 0, 1]], ['x', 'y'], is_multi=True, check=False)
    ds = ImageDataset(['a'], [1], ['x', 'y'], check=False)
    assert ds.c == 2 and ds.y.dtype == np.int64 and ds.with_tfm(ImageTransform(8)).tfm.sz == 8 and ds.tfm.sz == 64
