"""Benchmark: training DataLoader images/s (with augmentation) vs a bare PIL open+convert+resize loop, same files, same run.

Prints one JSON object. Goal (issue #2): loader >= 0.9x the bare loop on 2 cores. The loader is the fast one of
lessonlib.fastload (what training uses); `plain_loader_0_workers_images_per_s` is lesson 1's plain code on the same
images, for comparison (the two give the same batches, bit for bit).
Usage: python bench/data.py [--sizes 64 128] [--repeats 7] [--num-workers N]
The figures depend on what else runs on the machine: `loadavg` says how busy it was. Less sensitive to that are
`cpu_us_per_image` (CPU time of all processes involved; `projected_idle_2core_ratio` derives the ratio on 2 idle
cores from it) and `median_ratio_of_adjacent_runs` (each loader run against the bare run just before it).
"""
import argparse, json, os, platform, statistics, sys, time
import psutil
from PIL import Image
import torch
import torchvision.transforms.v2 as v2
from lessonlib.data import ImageData, ImageTransform, get_dataset, default_workers
from lessonlib.fastload import Loader, plain_loading   # importing it makes ImageData's loaders the fast ones

def _cpu(procs):
    "CPU seconds (user + system) used so far by these processes."
    return sum(sum(p.cpu_times()[:2]) for p in procs)

def bare_loop(fnames, sz):
    "The reference: open, convert to RGB and resize each file with PIL, nothing else (one process)."
    me = psutil.Process(); t0, c0 = time.perf_counter(), _cpu([me])
    for f in fnames:
        with Image.open(f) as img: img.convert('RGB').resize((sz, sz), Image.BILINEAR)
    return len(fnames) / (time.perf_counter() - t0), (_cpu([me]) - c0) / len(fnames)

def loader_epoch(dl):
    "Images/s over one epoch of `dl` (every batch pulled to the main process), and CPU s/image of all its processes."
    it = iter(dl)                       # with persistent workers this reuses them (started by a first epoch)
    me = psutil.Process()
    procs = [me] + me.children(recursive=True)      # the DataLoader's worker processes, when it has them
    t0, c0, n = time.perf_counter(), _cpu(procs), 0
    for xb, yb in it: n += len(xb)
    return n / (time.perf_counter() - t0), (_cpu(procs) - c0) / n

def main(sizes=(64, 128), repeats=7, num_workers=None):
    path = get_dataset('fashion-sample')
    augs = [v2.RandomHorizontalFlip(), v2.RandomRotation(10)]
    res = {'bench': 'data', 'dataset': 'fashion-sample (6000 train PNGs, 28x28 grey)', 'cpu_count': os.cpu_count(),
           'affinity': len(os.sched_getaffinity(0)), 'torch_threads': torch.get_num_threads(),
           'python': platform.python_version(), 'torch': torch.__version__, 'augs': [repr(a) for a in augs],
           'loadavg_before': [round(x, 2) for x in os.getloadavg()], 'sizes': {}}
    for sz in sizes:
        tfms = (ImageTransform(sz, augs=augs), ImageTransform(sz))
        data = ImageData.from_paths(path, tfms=tfms, bs=64, num_workers=num_workers)
        alt = ImageData.from_paths(path, tfms=tfms, bs=64, num_workers=0)   # the same, loading in the main process
        fnames, dl, dl0 = data.trn_ds.fnames, data.trn_dl, alt.trn_dl
        with plain_loading(): dlp = alt.dl('train', shuffle=True)            # lesson 1's plain loader, main process
        assert isinstance(dl, Loader) and isinstance(dl0, Loader) and not isinstance(dlp, Loader)
        t0 = time.perf_counter(); first = loader_epoch(dl)[0]; first_s = time.perf_counter() - t0   # starts the workers
        loader_epoch(dl0)
        bare, loader, loader0, plain0 = [], [], [], []
        for _ in range(repeats):          # interleaved, best of each: all see the same background load
            bare.append(bare_loop(fnames, sz)); loader.append(loader_epoch(dl)); loader0.append(loader_epoch(dl0))
            with plain_loading(): plain0.append(loader_epoch(dlp))
        best = lambda runs: max(runs)[0]
        cpu = lambda runs: min(c for _, c in runs) * 1e6
        r = {'num_workers': dl.num_workers, 'persistent_workers': dl.persistent_workers, 'bs': 64,
             'bare_pil_images_per_s': round(best(bare)), 'loader_images_per_s': round(best(loader)),
             'ratio_loader_over_bare': round(best(loader) / best(bare), 2),
             'median_ratio_of_adjacent_runs': round(statistics.median(l / b for (b, _), (l, _) in zip(bare, loader)), 2),
             'loader_first_epoch_images_per_s': round(first), 'first_epoch_s': round(first_s, 2),
             'loader_0_workers_images_per_s': round(best(loader0)),
             'ratio_0_workers_over_bare': round(best(loader0) / best(bare), 2),
             'plain_loader_0_workers_images_per_s': round(best(plain0)),
             'ratio_fast_over_plain_0_workers': round(best(loader0) / best(plain0), 2),
             'cpu_us_per_image': {'bare': round(cpu(bare)), 'loader_all_processes': round(cpu(loader)),
                                  'loader_0_workers': round(cpu(loader0)), 'plain_loader_0_workers': round(cpu(plain0))},
             'all_bare': [round(b) for b, _ in bare], 'all_loader': [round(l) for l, _ in loader],
             'all_loader_0_workers': [round(l) for l, _ in loader0], 'all_plain_loader_0_workers': [round(l) for l, _ in plain0]}
        # contention-free projection from CPU time: bare uses 1 core; the loader's workers share the cores
        ncores = min(2, res['affinity'])
        r['projected_idle_2core_ratio'] = round(min(ncores, max(dl.num_workers, 1)) * cpu(bare) / cpu(loader), 2)
        r['goal_met'] = r['ratio_loader_over_bare'] >= 0.9
        res['sizes'][str(sz)] = r
        del dl, dl0, dlp, data, alt
    res['loadavg_after'] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=2))
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
    ap.add_argument('--repeats', type=int, default=7)
    ap.add_argument('--num-workers', type=int, default=None)
    a = ap.parse_args()
    main(a.sizes, a.repeats, a.num_workers)
