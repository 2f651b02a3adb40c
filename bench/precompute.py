"""Benchmark of lessonlib.precompute (issue #4): prints one JSON object, all measured in this run.

On the bundled sample (`get_dataset('fashion-sample')`: 6,000 train + 1,000 valid images) with the bundled
EfficientNet-Lite0 body, at each size in --sizes:
  (a) cache build time / a bare inference pass of the same feature function over the same images, with the same
      DataLoader settings (goal <= 1.15);
  (b) one frozen-body epoch on images / one head epoch on the cache (goal >= 30): the same head, optimizer (the fused
      AdamW that ConvLearner uses) and batch size; the frozen epoch runs the body under no_grad, then the head forward/backward/step;
  (c) reopening an existing cache, in this process and in a fresh one (goal < 1 s);
and (d) peak RSS while training the head for one epoch from the cache, full 60,000-image Fashion-MNIST vs the sample,
each in a fresh subprocess (goal: within 150 MB), at --full-sz (default 32 to keep the 70,000-image build short). Caches are built in temporary folders and removed afterwards.

Timings are given as wall seconds and as CPU seconds (this process plus its DataLoader workers): on a machine shared
with other jobs the wall clock mostly measures the neighbours, CPU time much less so.

Usage: python bench/precompute.py [--sizes 64 128] [--reps 2] [--no-full] [--full-sz 32] [--threads N]
"""
import os, sys, json, time, shutil, argparse, tempfile, threading, subprocess
from pathlib import Path
os.environ.setdefault('LESSONLIB_QUIET', '1')
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from lessonlib.data import get_dataset, ImageData, ImageTransform, default_workers
from lessonlib.models import create_body, create_head, efficientnet_lite0
from lessonlib.precompute import ActivationCache
from common import Timer

BS = 128       # batch size of the build and of the bare pass
HEAD_BS = 64   # batch size of head training (both sides of (b))

def setup(name, sz):
    "ImageData at `sz` with EfficientNet-Lite0's stats, the feature function (body + pooling + flatten) and a head."
    tfm = ImageTransform(sz, efficientnet_lite0.mean, efficientnet_lite0.std)
    data = ImageData.from_paths(get_dataset(name), tfms=(tfm, tfm), bs=HEAD_BS)
    body, head = create_body('efficientnet_lite0'), create_head(efficientnet_lite0.nf, data.c)
    return data, nn.Sequential(body, head[0], head[1]).eval(), head

def splits(data): return {'train': data.fix_ds, 'valid': data.val_ds}

def bare_pass(feature_fn, dss):
    "A plain inference pass over every split, with the DataLoader settings the cache build uses."
    with Timer() as t:
        for ds in dss.values():
            for xb, _ in DataLoader(ds, batch_size=BS, shuffle=False, num_workers=default_workers(len(ds))):
                with torch.inference_mode(): feature_fn(xb)
    return t

def build(feature_fn, dss, cache_dir, sz):
    with Timer() as t:
        c = ActivationCache.build_or_open(feature_fn, dss, {'arch': 'efficientnet_lite0', 'sz': sz}, cache_dir, bs=BS)
    return t, c

def train_step(head, opt, f, y):
    loss = nn.functional.cross_entropy(head(f), y)
    opt.zero_grad(); loss.backward(); opt.step()

def make_opt(head):
    "The optimizer `ConvLearner` trains with: AdamW, fused into one kernel for all weights."
    return torch.optim.AdamW(head.parameters(), 1e-3, betas=(0.9, 0.99), eps=1e-5, fused=True)

def head_epoch(cache, head):
    "One epoch of the head (after pooling) on cached features."
    head = head.train(); opt = make_opt(head)
    with Timer() as t:
        for xb, yb in cache.loader('train', bs=HEAD_BS, shuffle=True, drop_last=True): train_step(head, opt, xb, yb)
    return t

def frozen_epoch(data, feature_fn, head):
    "One epoch on images with the body frozen: body forward under no_grad, then head forward/backward/step."
    head = head.train(); opt = make_opt(head)
    with Timer() as t:
        for xb, yb in data.trn_dl:
            with torch.no_grad(): f = feature_fn(xb)
            train_step(head, opt, f, yb)
    return t

CHILD = r'''
import os, sys, json, time, threading
sys.path.insert(0, {here!r})
import torch
import precompute as B
mode, name, sz, cache_dir, threads = {args!r}
if threads: torch.set_num_threads(threads)
data, fn, head = B.setup(name, sz)
t = time.perf_counter()
c = B.ActivationCache.build_or_open(fn, B.splits(data), {{'arch': 'efficientnet_lite0', 'sz': sz}}, cache_dir, bs=B.BS)
out = {{'open_s': round(time.perf_counter() - t, 3), 'status': c.status, 'n_train': len(c.features('train'))}}
if mode == 'train':
    def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    peak, stop = [0], threading.Event()
    def sample():
        while not stop.is_set(): peak[0] = max(peak[0], rss()); time.sleep(0.02)
    before = rss()
    th = threading.Thread(target=sample, daemon=True); th.start()
    out['head_epoch_s'] = round(B.head_epoch(c, head[2:]).wall, 3)
    stop.set(); th.join()
    hwm = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024
    out.update(rss_before_train_mb=round(before / 2**20, 1), rss_peak_train_mb=round(peak[0] / 2**20, 1),
               process_peak_rss_mb=round(hwm / 2**20, 1))   # VmHWM: this process's peak (ru_maxrss would carry the parent's)
print('RESULT', json.dumps(out), flush=True)
'''

THREADS = 0   # torch threads (0: torch's default); --threads sets it here and in the child processes

def child(mode, name, sz, cache_dir):
    "Run CHILD in a fresh Python process and return its RESULT dict."
    code = CHILD.format(here=os.path.dirname(os.path.abspath(__file__)), args=(mode, name, sz, str(cache_dir), THREADS))
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'LESSONLIB_QUIET': '1'})
    lines = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
    if r.returncode or not lines: raise RuntimeError(f'child {mode} {name} failed:\n{r.stderr[-3000:]}')
    return json.loads(lines[-1][7:])

def bench_size(sz, reps, tmp):
    data, fn, head = setup('fashion-sample', sz)
    dss = splits(data)
    bare, builds, cache = [], [], None
    for r in range(reps):           # interleaved, to share the noise of a machine shared with others
        bare.append(bare_pass(fn, dss))
        d = tmp/f'build{sz}-{r}'
        t, cache = build(fn, dss, d, sz); builds.append(t)
        assert cache.status == 'built'
        if r < reps - 1: shutil.rmtree(d)
    t = time.perf_counter(); c2 = ActivationCache.build_or_open(fn, dss, {'arch': 'efficientnet_lite0', 'sz': sz}, cache.path.parent)
    reopen = time.perf_counter() - t
    assert c2.status == 'reused'
    reopen_fresh = child('open', 'fashion-sample', sz, cache.path.parent)['open_s']
    heads = [head_epoch(cache, create_head(efficientnet_lite0.nf, data.c)[2:]) for _ in range(2)]
    frozen = frozen_epoch(data, fn, create_head(efficientnet_lite0.nf, data.c)[2:])
    hd = min(heads, key=lambda t: t.wall)
    r2 = lambda ts, k: [round(getattr(t, k), 2) for t in ts]
    return {'a_build_wall_s': r2(builds, 'wall'), 'a_bare_wall_s': r2(bare, 'wall'),
            'a_build_cpu_s': r2(builds, 'cpu_s'), 'a_bare_cpu_s': r2(bare, 'cpu_s'),
            'a_build_over_bare_wall': round(min(t.wall for t in builds) / min(t.wall for t in bare), 3),
            'a_build_over_bare_cpu': round(min(t.cpu_s for t in builds) / min(t.cpu_s for t in bare), 3),
            'b_head_epoch_cache_wall_s': round(hd.wall, 3), 'b_frozen_epoch_images_wall_s': round(frozen.wall, 2),
            'b_head_epoch_cache_cpu_s': round(hd.cpu_s, 3), 'b_frozen_epoch_images_cpu_s': round(frozen.cpu_s, 2),
            'b_speedup_wall': round(frozen.wall / hd.wall, 1), 'b_speedup_cpu': round(frozen.cpu_s / hd.cpu_s, 1),
            'c_reopen_s': round(reopen, 3), 'c_reopen_fresh_process_s': reopen_fresh,
            'cache_mb': round(sum(f['bytes'] for f in cache.manifest['files'].values()) / 2**20, 1),
            'features': cache.manifest['shapes']}

def bench_rss(sz, tmp, full):
    out = {}
    for name in (['fashion-sample', 'fashion-mnist'] if full else ['fashion-sample']):
        d = tmp/f'rss-{name}'
        t = time.perf_counter(); b = child('build', name, sz, d); b['build_s'] = round(time.perf_counter() - t, 1)
        r = child('train', name, sz, d)
        out[name] = {**r, 'build_wall_s': b['build_s']}
        shutil.rmtree(d, ignore_errors=True)
    if full:
        out['peak_train_rss_diff_mb'] = round(out['fashion-mnist']['rss_peak_train_mb'] - out['fashion-sample']['rss_peak_train_mb'], 1)
        out['process_peak_rss_diff_mb'] = round(out['fashion-mnist']['process_peak_rss_mb'] - out['fashion-sample']['process_peak_rss_mb'], 1)
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
    ap.add_argument('--reps', type=int, default=2)
    ap.add_argument('--no-full', action='store_true', help='skip (d) on the full 60,000-image set')
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: default); 1 avoids thread thrashing on a busy machine')
    ap.add_argument('--full-sz', type=int, default=32, help='image size for (d); the feature width (2560) does not depend on it')
    a = ap.parse_args()
    global THREADS
    THREADS = a.threads
    if a.threads: torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix='lessonlib-bench-precompute-'))
    res = {'device': str(next(create_body('efficientnet_lite0', pretrained=False).parameters()).device),
           'torch_threads': torch.get_num_threads(), 'cpus': os.cpu_count(), 'load_avg_start': os.getloadavg()}
    t0 = time.perf_counter()
    try:
        for sz in a.sizes: res[f'sz{sz}'] = bench_size(sz, a.reps, tmp)
        res['d_rss'] = bench_rss(a.full_sz, tmp, not a.no_full)
    finally: shutil.rmtree(tmp, ignore_errors=True)
    res['load_avg_end'] = os.getloadavg(); res['total_s'] = round(time.perf_counter() - t0, 1)
    res['goals'] = {'a_build_over_bare_cpu<=1.15': all(res[f'sz{s}']['a_build_over_bare_cpu'] <= 1.15 for s in a.sizes),
                    'a_build_over_bare_wall<=1.15': all(res[f'sz{s}']['a_build_over_bare_wall'] <= 1.15 for s in a.sizes),
                    'b_speedup_wall>=30': all(res[f'sz{s}']['b_speedup_wall'] >= 30 for s in a.sizes),
                    'c_reopen<1s': all(max(res[f'sz{s}']['c_reopen_s'], res[f'sz{s}']['c_reopen_fresh_process_s']) < 1 for s in a.sizes),
                    'd_rss_within_150MB': abs(res['d_rss'].get('peak_train_rss_diff_mb', float('nan'))) <= 150 if not a.no_full else None}
    print(json.dumps(res, indent=1))

if __name__ == '__main__': main()
