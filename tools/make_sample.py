"""Regenerate lessonlib/assets/fashion_sample.npz from the official Fashion-MNIST IDX files.

Deterministic: 600 train images per class (official train split) and 100 valid images per class
(official test split), drawn with numpy's default_rng(42). Fashion-MNIST is (c) Zalando Research, MIT licence.
Usage: python tools/make_sample.py [IDX_FOLDER]   (default: Debian's /usr/share/datasets/fashion-mnist)
"""
import gzip, hashlib, sys
from pathlib import Path
import numpy as np

CLASSES = ['T-shirt', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle-boot']

def read_idx(path):
    "Read one (optionally gzipped) IDX file into a numpy array."
    raw = Path(path).read_bytes()
    if raw[:2] == b'\x1f\x8b': raw = gzip.decompress(raw)
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4+4*i:8+4*i], 'big') for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4+4*ndim).reshape(shape)

def find(folder, stem):
    for name in (f'{stem}.gz', stem):
        if (folder/name).exists(): return folder/name
    raise FileNotFoundError(f'{stem}(.gz) not found in {folder}')

def stratified(y, per_class, rng):
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)]))

def main(folder='/usr/share/datasets/fashion-mnist', out='lessonlib/assets/fashion_sample.npz'):
    folder, rng = Path(folder), np.random.default_rng(42)
    xtr, ytr = read_idx(find(folder, 'train-images-idx3-ubyte')), read_idx(find(folder, 'train-labels-idx1-ubyte'))
    xte, yte = read_idx(find(folder, 't10k-images-idx3-ubyte')), read_idx(find(folder, 't10k-labels-idx1-ubyte'))
    itr, ite = stratified(ytr, 600, rng), stratified(yte, 100, rng)
    np.savez_compressed(out, x_train=xtr[itr], y_train=ytr[itr], idx_train=itr.astype(np.int32),
                        x_valid=xte[ite], y_valid=yte[ite], idx_valid=ite.astype(np.int32), classes=np.array(CLASSES))
    print(out, hashlib.sha256(Path(out).read_bytes()).hexdigest(), Path(out).stat().st_size)

if __name__ == '__main__': main(*sys.argv[1:])
