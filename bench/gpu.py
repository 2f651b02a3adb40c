"""GPU benchmark of the lesson's recipe (issue #18): prints one JSON object, everything measured in this run.

For each precision (fp32, bf16, fp16 = `learn.to_fp32()`, `to_bf16()`, `to_fp16()`), on the bundled sample (or the full
Fashion-MNIST with --full), EfficientNet-Lite0, a fresh learner each time:

- `bare_inference`: the whole model in eval mode under inference_mode (and the precision's autocast) over the training
  images, read through the learner's own loader (decoding and resizing included): the reference speed;
- `cache_build`: `learn.precompute = True` into an empty cache folder (body over train + valid images);
- `head_epoch`: one training epoch of the head on the cached activations;
- `frozen_epoch`: one training epoch on images with the body frozen; `frozen_vs_bare` is its images/s over the bare
  pass (goal on a GPU: >= 0.7);
- `unfrozen_epoch`: one training epoch with every layer trainable (--quick: its first batches only);
- `accuracy`: validation accuracy after those epochs; `peak_gpu_mb` (CUDA: `torch.cuda.max_memory_allocated`) or
  `peak_rss_mb` (CPU: the process's peak resident memory, which only grows).

With --recipe (the default on CUDA): the whole recipe timed once in bf16 (fp16 with --recipe-precision fp16): cache,
head on the cache, unfrozen 1cycle epochs, TTA; goals on a GPU for the full Fashion-MNIST: test accuracy >= 0.93 and
at most 180 s. fp16 on a CPU is refused by the library, so on a CPU its row says why it was skipped.

CPU smoke (tests/test_bench.py): python bench/gpu.py --device cpu --quick
Usage: python bench/gpu.py [--device cuda|cpu] [--quick] [--full] [--sz 64] [--bs 256] [--precisions fp32 bf16 fp16] [--recipe]
"""
import os, sys, json, time, argparse, resource, tempfile, contextlib
os.environ.setdefault('LESSONLIB_QUIET', '1')
import numpy as np
import torch
from lessonlib.core import set_seed
from lessonlib.data import get_dataset, ImageData, ImageDataset
from lessonlib.augment import tfms_from_model, transforms_side_on
from lessonlib.learner import ConvLearner
from common import Timer, train_epoch
import lessonlib.precompute, lessonlib.schedules, lessonlib.precision   # methods their lessons attach

ARCH = 'efficientnet_lite0'


def subset(ds, n, seed=0):
    "A random subset of `n` items of `ds` (all of them when n is None)."
    if n is None or n >= len(ds): return ds
    keep = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return ImageDataset([ds.fnames[i] for i in keep], ds.y[keep], ds.classes, ds.tfm, check=False)


def get_data(a, aug=False):
    path = get_dataset('fashion-mnist' if a.full else 'fashion-sample')
    tfms = tfms_from_model(ARCH, a.sz, aug_tfms=transforms_side_on if aug else None)
    data = ImageData.from_paths(path, tfms=tfms, bs=a.bs)
    if a.n_train or a.n_valid:
        data = ImageData(data.path, subset(data.trn_ds, a.n_train), subset(data.val_ds, a.n_valid), bs=a.bs)
    return data


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def bare_inference(learn, max_batches=None):
    model, n = learn.model.eval(), 0
    with torch.inference_mode(), learn._autocast(), Timer() as t:
        for i, (xb, _) in enumerate(learn.data.fix_dl):
            model(learn._to_device(xb)); n += len(xb)
            if max_batches and i + 1 >= max_batches: break
        sync(learn.device)
    return t, n


def peak(device):
    if device.type == 'cuda': return {'peak_gpu_mb': round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    return {'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def set_precision(learn, p):
    return {'fp32': learn.to_fp32, 'bf16': learn.to_bf16, 'fp16': learn.to_fp16}[p]()


def bench_precision(a, p, device):
    if p == 'fp16' and device.type != 'cuda': return {'skipped': 'fp16 needs a CUDA GPU (learn.to_fp16() refuses a CPU)'}
    data = get_data(a)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    set_seed(0)
    learn = set_precision(ConvLearner.pretrained(ARCH, data, device=device), p)
    n_tr, n_va, out = len(data.trn_ds), len(data.val_ds), {}
    train_epoch(learn, 1e-3, max_batches=2)                       # warm-up: kernels for these shapes, workers started
    t, n = bare_inference(learn, a.max_batches); out['bare_inference'] = t.res(n)
    with tempfile.TemporaryDirectory() as cache_dir:
        learn.cache_dir = cache_dir
        with learn._autocast(), Timer() as t:
            learn.precompute = True; sync(device)
        out['cache_build'] = {**t.res(n_tr + n_va), 'images': n_tr + n_va}
        t, n = train_epoch(learn, 1e-2); out['head_epoch'] = t.res(n)
        learn.precompute = False
    t, n = train_epoch(learn, 1e-2, a.max_batches); out['frozen_epoch'] = t.res(n)
    learn.unfreeze()
    t, n = train_epoch(learn, 1e-4, a.max_batches); out['unfrozen_epoch'] = {**t.res(n), 'images': n}
    out['accuracy'] = round(learn.validate()['accuracy'], 4)
    out['frozen_vs_bare'] = round(out['frozen_epoch']['images_per_s'] / out['bare_inference']['images_per_s'], 3)
    return {**out, **peak(device)}


def recipe(a, device, p):
    "The lesson's recipe, timed from data to TTA accuracy: cache, head, unfrozen 1cycle, TTA."
    t0 = time.perf_counter()
    data = get_data(a, aug=True)
    set_seed(0)
    with tempfile.TemporaryDirectory() as cache_dir, contextlib.redirect_stdout(sys.stderr):
        learn = set_precision(ConvLearner.pretrained(ARCH, data, device=device), p)
        learn.cache_dir = cache_dir
        with learn._autocast(): learn.precompute = True
        learn.fit(1e-2, a.head_epochs)
        learn.precompute = False
        learn.unfreeze()
        learn.fit_one_cycle(a.unfrozen_epochs, lr_max=1e-3)
        log_preds, y = learn.TTA()
    acc = float((np.argmax(log_preds, 1) == y).mean())
    secs = round(time.perf_counter() - t0, 1)
    return {'precision': p, 'tta_accuracy': round(acc, 4), 'seconds': secs, 'n_train': len(data.trn_ds),
            'n_valid': len(data.val_ds), 'goal_accuracy_0.93': acc >= 0.93, 'goal_180_s': secs <= 180, **peak(device)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--quick', action='store_true', help='a smoke test: 256 + 128 images, sz 32, a few batches per epoch')
    ap.add_argument('--full', action='store_true', help='the full Fashion-MNIST (60,000 + 10,000) instead of the sample')
    ap.add_argument('--sz', type=int, default=64)
    ap.add_argument('--bs', type=int, default=256)
    ap.add_argument('--n-train', type=int, default=None)
    ap.add_argument('--n-valid', type=int, default=None)
    ap.add_argument('--max-batches', type=int, default=None, help='batches timed in the frozen/unfrozen epochs (default: all)')
    ap.add_argument('--precisions', nargs='+', default=['fp32', 'bf16', 'fp16'], choices=['fp32', 'bf16', 'fp16'])
    ap.add_argument('--recipe', action=argparse.BooleanOptionalAction, default=None, help='time the whole recipe too (default: on CUDA)')
    ap.add_argument('--recipe-precision', default='bf16', choices=['fp32', 'bf16', 'fp16'])
    ap.add_argument('--head-epochs', type=int, default=2)
    ap.add_argument('--unfrozen-epochs', type=int, default=3)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == 'cuda' and not torch.cuda.is_available(): ap.error('--device cuda, but CUDA is not available here')
    if a.quick:
        a.sz, a.bs, a.n_train, a.n_valid = 32, 64, a.n_train or 256, a.n_valid or 128
        a.max_batches, a.head_epochs, a.unfrozen_epochs = a.max_batches or 3, 1, 1
    res = {'device': str(device), 'device_name': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
           'torch': torch.__version__, 'threads': torch.get_num_threads(), 'dataset': 'fashion-mnist' if a.full else 'fashion-sample',
           'sz': a.sz, 'bs': a.bs, 'quick': a.quick, 'precisions': {}}
    for p in a.precisions: res['precisions'][p] = bench_precision(a, p, device)
    if a.recipe or (a.recipe is None and device.type == 'cuda'): res['recipe'] = recipe(a, device, a.recipe_precision)
    print(json.dumps(res, indent=1))


if __name__ == '__main__': main()
