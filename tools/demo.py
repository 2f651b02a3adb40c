"""`make demo`: what a newcomer sees first, in about four minutes on 2 CPU cores.

1. data: materialise the bundled Fashion-MNIST sample; write a labelled image grid and the class counts;
2. train: `lessonlib-train` runs the 8-step recipe of lesson 2 on it (metrics.json, plots, the exported model);
3. course site: every lesson, as nbdev processes it, with the outputs stored in its notebook (no re-execution:
   `make lessons` refreshes those), built into a static site by tools/build_docs.py (Jupyter Book; as `make docs`).
Everything goes under runs/demo/ (or the folder given). The wall time of each phase is printed at the end.
"""
import json, subprocess, sys, time
from pathlib import Path
import numpy as np
import matplotlib
matplotlib.use('Agg')
from lessonlib.core import atomic_write, atomic_write_json
from lessonlib.data import ImageData, ImageTransform, get_dataset

ROOT = Path(__file__).resolve().parents[1]


def show_data(out):
    "Materialise the sample, write `grid.png` and `class_counts.json` into `out`, and return their paths."
    path = get_dataset('fashion-sample')
    data = ImageData.from_paths(path, tfms=(ImageTransform(64), ImageTransform(64)))
    fig = data.show_batch(n=20, ds='valid', ncols=10)          # two per class, titled with their labels
    with atomic_write(out/'grid.png') as f: fig.savefig(f, format='png', dpi=100)
    count = lambda y: {c: int(n) for c, n in zip(data.classes, np.bincount(y, minlength=data.c))}
    atomic_write_json(out/'class_counts.json', {'dataset': str(path), 'classes': data.classes,
                      'train': count(data.trn_y), 'valid': count(data.val_y), 'image_sizes': data.size_stats()})
    print(f'dataset: {path}\nwrote {out/"grid.png"} and {out/"class_counts.json"}', flush=True)
    return out/'grid.png', out/'class_counts.json'


def main(out='runs/demo'):
    out, phases, t_all = Path(out), {}, time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    def phase(name, fn):
        t0 = time.perf_counter(); r = fn(); phases[name] = round(time.perf_counter() - t0, 1); return r
    phase('1 data: sample, grid, class counts', lambda: show_data(out))
    train = Path(sys.executable).parent/'lessonlib-train'
    phase('2 train: lessonlib-train (8-step recipe)', lambda: subprocess.run([str(train), '--out', str(out)], check=True))
    sys.path.insert(0, str(ROOT/'tools'))
    import build_docs
    index = phase('3 course site: lessons with stored outputs', lambda: build_docs.build(out/'docs'))
    m = json.loads((out/'metrics.json').read_text())
    print(f"\nvalid accuracy {m['valid_accuracy']}, TTA {m['tta_accuracy']}")
    print(f"the course: {index}  (or: python -m http.server -d {index.parent} and open http://127.0.0.1:8000)")
    missing = build_docs.without_outputs()
    if missing: print('these lessons have no stored outputs (run `make lessons`):', ' '.join(missing))
    print('\nphase                                          seconds')
    for k, v in phases.items(): print(f'{k:<46} {v:>7.1f}')
    print(f'{"total":<46} {time.perf_counter() - t_all:>7.1f}')
    atomic_write_json(out/'demo_times.json', {**phases, 'total': round(time.perf_counter() - t_all, 1)})
    return phases


if __name__ == '__main__': main(*sys.argv[1:])
