"""Interim `make demo`: materialize the bundled Fashion-MNIST sample, then write a labelled image grid (PNG) and the
class counts (JSON) under runs/demo/. (To be replaced by the training recipe of the lessons issue.)"""
import sys, time
from pathlib import Path
import numpy as np
import matplotlib
matplotlib.use('Agg')
from lessonlib.core import atomic_write, atomic_write_json
from lessonlib.data import ImageData, ImageTransform, get_dataset

def main(out='runs/demo'):
    "Materialize the sample, write `grid.png` and `class_counts.json` into `out`, and return their paths."
    t0, out = time.perf_counter(), Path(out)
    path = get_dataset('fashion-sample')
    data = ImageData.from_paths(path, tfms=(ImageTransform(64), ImageTransform(64)))
    fig = data.show_batch(n=20, ds='valid', ncols=10)          # two per class, titled with their labels
    with atomic_write(out/'grid.png') as f: fig.savefig(f, format='png', dpi=100)
    count = lambda y: {c: int(n) for c, n in zip(data.classes, np.bincount(y, minlength=data.c))}
    atomic_write_json(out/'class_counts.json', {'dataset': str(path), 'classes': data.classes,
                      'train': count(data.trn_y), 'valid': count(data.val_y), 'image_sizes': data.size_stats()})
    print(f'dataset: {path}\nwrote {out/"grid.png"} and {out/"class_counts.json"} in {time.perf_counter()-t0:.1f} s')
    return out/'grid.png', out/'class_counts.json'

if __name__ == '__main__': main(*sys.argv[1:])
