"Tests of lessonlib.csvdata: the CSV layout, `ImageData.from_csv` and `get_cv_idxs`, with every kind of bad CSV (01c_csv)."
import csv
from pathlib import Path
import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as v2

from lessonlib.data import ImageData, ImageTransform
from lessonlib.csvdata import get_cv_idxs
from test_data import _plain_code, _png     # lesson 1's plain code (not lessonlib.fastload's), and the test images

# ---------------------------------------------------------------- helpers
def tiny_csv(root, rows, header=('id', 'label'), folder='train', make_files=True):
    root = Path(root); (root/folder).mkdir(parents=True, exist_ok=True)
    with open(root/'labels.csv', 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f); w.writerow(header)
        for r in rows:
            w.writerow(r)
            if make_files and r and r[0] and '..' not in r[0]: _png(root/folder/f'{r[0]}.png', seed=len(r[0]))
    return root

def _rows(n_per=4, classes=('cat', 'dog')):
    return [(f'{c}{i:02d}', c) for c in classes for i in range(n_per)]

# ---------------------------------------------------------------- from_csv
def test_from_csv_basics(tmp_path):
    root = tiny_csv(tmp_path/'csv ds', _rows(5, ('cat', 'dog')))
    _png(root/'test'/'t1.png')
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[0, 5], tfms=(ImageTransform(16), ImageTransform(16)),
                              bs=3, test_name='test')
    assert data.classes == ['cat', 'dog'] and not data.is_multi and data.layout == 'csv'
    assert data.csv_path == root/'labels.csv' and data.folder == 'train'
    assert [f.name for f in data.val_ds.fnames] == ['cat00.png', 'dog00.png'] and data.val_y.tolist() == [0, 1]
    assert len(data.trn_ds) == 8 and data.trn_y.dtype == np.int64 and len(data.test_ds) == 1
    xb, yb = next(iter(data.trn_dl)); assert xb.shape == (3, 3, 16, 16)
    # the default split is get_cv_idxs(n) over the CSV rows; an absolute csv path works too
    d2 = ImageData.from_csv(root, 'train', root/'labels.csv')
    assert len(d2.val_ds) == 2 and {f.stem for f in d2.val_ds.fnames} == {_rows(5)[i][0] for i in get_cv_idxs(10)}

def test_from_csv_multi_label(tmp_path):
    rows = [('a', 'coat red'), ('b', 'coat'), ('c', 'red dress'), ('d', 'dress'), ('e', 'coat dress red')]
    root = tiny_csv(tmp_path, rows, header=('image_name', 'tags'))
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[4])
    assert data.is_multi and data.classes == ['coat', 'dress', 'red'] and data.c == 3
    assert data.trn_y.dtype == np.float32 and data.trn_y.tolist() == [[1, 0, 1], [1, 0, 0], [0, 1, 1], [0, 1, 0]]
    x, y = data.val_ds[0]; assert y.dtype == torch.float32 and y.tolist() == [1, 1, 1]
    assert data.label_str(y) == 'coat dress red'
    _, yb = next(iter(data.trn_dl)); assert yb.shape == (4, 3)

def test_from_csv_missing_file(tmp_path):
    root = tiny_csv(tmp_path, _rows(3))
    (root/'train'/'dog01.png').unlink()
    with pytest.raises(FileNotFoundError, match=r'labels.csv: 1 image.*line 6: .*dog01.png'):
        ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[0, 3])
    with pytest.raises(FileNotFoundError, match="suffix='.jpg'"):
        ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[0, 3], suffix='.jpg')

def test_from_csv_duplicate_id(tmp_path):
    root = tiny_csv(tmp_path, _rows(3) + [('cat01', 'dog')])
    with pytest.raises(ValueError, match="labels.csv line 8: duplicate id 'cat01' \\(first on line 3\\)"):
        ImageData.from_csv(root, 'train', 'labels.csv')

def test_from_csv_empty_label(tmp_path):
    root = tiny_csv(tmp_path, _rows(3) + [('cat09', '  ')])
    with pytest.raises(ValueError, match="line 8: empty label for id 'cat09'"): ImageData.from_csv(root, 'train', 'labels.csv')

def test_from_csv_unknown_column(tmp_path):
    root = tiny_csv(tmp_path, [(i, l, 'x') for i, l in _rows(3)], header=('id', 'breed', 'source'))
    with pytest.raises(ValueError, match=r"line 1: 3 columns.*label_col="): ImageData.from_csv(root, 'train', 'labels.csv')
    with pytest.raises(ValueError, match=r"label_col='label': unknown column.*\['id', 'breed', 'source'\]"):
        ImageData.from_csv(root, 'train', 'labels.csv', label_col='label')
    data = ImageData.from_csv(root, 'train', 'labels.csv', label_col='breed', val_idxs=[0, 3])
    assert data.classes == ['cat', 'dog']

def test_from_csv_ragged_line_and_empty_file(tmp_path):
    root = tiny_csv(tmp_path, _rows(3))
    with open(root/'labels.csv', 'a') as f: f.write('cat07,cat,extra\n')
    with pytest.raises(ValueError, match='line 8: 3 fields but the header has 2'): ImageData.from_csv(root, 'train', 'labels.csv')
    (root/'labels.csv').write_text('')
    with pytest.raises(ValueError, match='line 1'): ImageData.from_csv(root, 'train', 'labels.csv')
    (root/'labels.csv').write_text('id,label\n')
    with pytest.raises(ValueError, match='no labelled rows'): ImageData.from_csv(root, 'train', 'labels.csv')
    with pytest.raises(FileNotFoundError, match='csv_fname.*nolabels.csv'): ImageData.from_csv(root, 'train', 'nolabels.csv')
    with pytest.raises(FileNotFoundError, match="folder='imgs'"): ImageData.from_csv(root, 'imgs', 'labels.csv')

def test_from_csv_class_only_in_valid(tmp_path):
    root = tiny_csv(tmp_path, _rows(3) + [('yak00', 'yak')])
    with pytest.raises(ValueError, match=r"\['yak'\] only appear in validation rows.*lines \[8\]"):
        ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[0, 6])

def test_from_csv_bad_val_idxs(tmp_path):
    root = tiny_csv(tmp_path, _rows(3))
    for bad, msg in (([0, 6], 'in 0..5'), ([1, 1], 'repeated'), ([0.5], 'integer'), ([], 'at least one'),
                     (list(range(6)), 'at least one')):
        with pytest.raises(ValueError, match=msg): ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=bad)

def test_from_csv_id_outside_folder(tmp_path):
    root = tiny_csv(tmp_path, _rows(3) + [('../../etc/passwd', 'cat')])
    with pytest.raises(ValueError, match="line 8: id '../../etc/passwd' points outside"):
        ImageData.from_csv(root, 'train', 'labels.csv')

def test_from_csv_spaces_and_non_ascii(tmp_path):
    rows = [('chat noir', 'Katze'), ('chat été', 'Katze'), ('犬 1', 'Hund'), ('犬 2', 'Hund'), ('ä', 'Hund'), ('ö', 'Katze')]
    root = tiny_csv(tmp_path/'dossier à moi', rows)
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[0, 2], label_delim=None)
    assert data.classes == ['Hund', 'Katze'] and len(data.trn_ds) == 4
    assert sum(len(x) for x, _ in data.trn_dl) == 4

def test_from_csv_bad_image_skipped(tmp_path, warned_here):
    root = tiny_csv(tmp_path, _rows(3))
    (root/'train'/'cat02.png').write_bytes(b'')
    with pytest.warns(UserWarning, match='(?s)1 unusable.*cat02.png: empty') as rec:
        data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[0, 3])
    warned_here(rec, 'unusable')
    assert len(data.trn_ds) == 3 and data.trn_y.tolist() == [0, 1, 1]

# ---------------------------------------------------------------- get_cv_idxs
def test_get_cv_idxs_as_in_the_notes():
    np.random.seed(42); ref = np.random.permutation(1000)
    np.testing.assert_array_equal(get_cv_idxs(1000), ref[800:1000])     # cv_idx=4 is the last fold
    np.testing.assert_array_equal(get_cv_idxs(1000, cv_idx=0, val_pct=0.1, seed=42), ref[:100])
    state = np.random.get_state()[1].copy(); get_cv_idxs(10)
    np.testing.assert_array_equal(np.random.get_state()[1], state)        # global seed untouched
    folds = np.concatenate([get_cv_idxs(1000, cv_idx=i) for i in range(5)])
    assert sorted(folds.tolist()) == list(range(1000))

@pytest.mark.parametrize('val_pct', [0, 1, -0.2, 1.2, float('nan'), 'x'])
def test_get_cv_idxs_val_pct_outside(val_pct):
    with pytest.raises(ValueError, match='val_pct'): get_cv_idxs(100, val_pct=val_pct)

def test_get_cv_idxs_other_bad_args():
    with pytest.raises(ValueError, match='n=1'): get_cv_idxs(1)
    with pytest.raises(ValueError, match='cv_idx=5'): get_cv_idxs(100, cv_idx=5)

# ---------------------------------------------------------------- resizing keeps the CSV layout
def test_resize_and_with_tfms_keep_the_split(tmp_path):
    root = tiny_csv(tmp_path, _rows(4))
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[1, 5], tfms=(ImageTransform(16, augs=[v2.RandomHorizontalFlip()]), ImageTransform(16)))
    big = data.resize(40)
    assert big.sz == 40 and big.tfms[1].sz == 40 and big.tfms[0].augs == data.tfms[0].augs
    assert big.trn_ds.fnames == data.trn_ds.fnames and big.val_ds.fnames == data.val_ds.fnames
    assert big.layout == 'csv' and big.csv_path == data.csv_path and big.fix_ds[0][0].shape == (3, 40, 40)
    other = data.with_tfms((ImageTransform(8), ImageTransform(8)))
    assert other.val_ds[0][0].shape == (3, 8, 8) and data.val_ds[0][0].shape == (3, 16, 16)


# ---------------------------------------------------------------- multi-label bad input (issue 19)
def test_multi_label_empty_tags_mean_no_tags(tmp_path):
    rows = [('a', 'coat red'), ('b', ''), ('c', 'red dress'), ('d', 'dress'), ('e', 'coat dress')]
    root = tiny_csv(tmp_path, rows, header=('image_name', 'tags'))
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[4])
    assert data.is_multi and data.trn_y.tolist()[1] == [0, 0, 0] and data.label_str(data.trn_y[1]) == '(none)'

def test_single_label_empty_label_is_refused(tmp_path):
    root = tiny_csv(tmp_path, [('a', 'cat'), ('b', ''), ('c', 'dog'), ('d', 'dog')])
    with pytest.raises(ValueError, match=r"labels.csv line 3: empty label for id 'b'.*multi=True"):
        ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[3])
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[3], multi=True)   # forced: one tag per line is fine
    assert data.is_multi and data.trn_y.tolist() == [[1, 0], [0, 0], [0, 1]]

def test_tags_differing_by_case_are_refused(tmp_path):
    root = tiny_csv(tmp_path, [('a', 'coat red'), ('b', 'coat'), ('c', 'Coat dress'), ('d', 'dress')],
                    header=('image_name', 'tags'))
    with pytest.raises(ValueError, match=r"line 4: label 'Coat' differs only by case from 'coat' \(line 2\)"):
        ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[3])

def test_tag_only_in_validation_names_the_line(tmp_path):
    rows = [('a', 'coat red'), ('b', 'coat'), ('c', 'red'), ('d', 'coat hat'), ('e', 'red coat')]
    root = tiny_csv(tmp_path, rows, header=('image_name', 'tags'))
    with pytest.raises(ValueError, match=r"\['hat'\] only appear in validation rows .*lines \[5\]"):
        ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[3])

def test_multi_label_duplicate_and_missing_image(tmp_path):
    root = tiny_csv(tmp_path, [('a', 'coat red'), ('b', 'coat'), ('a', 'red')], header=('image_name', 'tags'))
    with pytest.raises(ValueError, match="line 4: duplicate id 'a' \\(first on line 2\\)"):
        ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[1])
    root = tiny_csv(tmp_path/'m', [('a', 'coat red'), ('b', 'coat'), ('c', 'red')], header=('image_name', 'tags'))
    (root/'train'/'b.png').unlink()
    with pytest.raises(FileNotFoundError, match=r'line 3: .*b.png'): ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[1])

def test_repeated_tag_in_a_line_counts_once(tmp_path):
    root = tiny_csv(tmp_path, [('a', 'coat coat red'), ('b', 'coat'), ('c', 'red')], header=('image_name', 'tags'))
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[2])
    assert data.trn_y.tolist() == [[1, 1], [1, 0]]
