"""Benchmark of lessonlib.learner (issue #3): prints one JSON object, everything measured in this run.

On the bundled sample (`get_dataset('fashion-sample')`: 6,000 train + 1,000 valid images) with the bundled
EfficientNet-Lite0 body (ImageNet weights), batch size 64, at each size in --sizes (default 64 and 128):

- `bare_tensors`: a bare torch inference pass of the body (eval, inference_mode, channels_last) over the 6,000
  training images already decoded into tensors: pure compute, no data loading;
- `bare_loader`: the same body over the same images read through the same DataLoader the learner uses (decoding +
  resizing included): "a bare torch inference pass over the same images";
- `frozen_epoch_fit`: `learn.fit(1e-2, 1)` with the body frozen (lessonlib's default: frozen BatchNorm, body under
  no_grad), training + validation on 1,000 images; `frozen_train`: its training part (the fit minus a separately
  timed `validate()`); `valid_acc_frozen`: the valid accuracy after that fit;
- `frozen_train_bn` / `frozen_epoch_fit_train_bn` / `valid_acc_frozen_train_bn`: the same with `train_bn=True`
  (fastai's choice: BatchNorm trains, so the backward pass runs through the whole body);
- `finetune_train`: one training epoch (or its first --finetune-batches batches) with the whole network unfrozen.

Images/s use wall time; CPU seconds (this process plus DataLoader workers) are given too, because on a machine
shared with other jobs the wall clock partly measures the neighbours. No augmentation in the training transform,
so the only difference between a frozen epoch and the bare pass is the training work. Ratio goal (issue #3): a
frozen-body epoch at most 2x the bare inference pass, i.e. `frozen_train_vs_bare_loader` <= 2.

Usage: python bench/learner.py [--sizes 64 128] [--skip-finetune] [--finetune-batches N] [--n-train N] [--threads T]
"""
import os, sys, json, time, argparse, contextlib
os.environ.setdefault('LESSONLIB_QUIET', '1')
import numpy as np
import torch
from lessonlib.core import set_seed
from lessonlib.data import get_dataset, ImageData, ImageTransform, ImageDataset
from lessonlib.models import efficientnet_lite0
from lessonlib.learner import ConvLearner
from common import Timer, train_epoch
import lessonlib.lr_find, lessonlib.schedules, lessonlib.precompute, lessonlib.export   # methods their lessons attach

BS = 64


def get_data(sz, n_train=None):
    tfm = ImageTransform(sz, efficientnet_lite0.mean, efficientnet_lite0.std)
    data = ImageData.from_paths(get_dataset('fashion-sample'), tfms=(tfm, tfm), bs=BS)
    if n_train:                                            # a stratified subset, for quick runs
        keep = np.sort(np.random.default_rng(0).permutation(len(data.trn_ds))[:n_train])
        ds = data.trn_ds
        sub = ImageDataset([ds.fnames[i] for i in keep], ds.y[keep], ds.classes, ds.tfm, check=False)
        data = ImageData(data.path, sub, data.val_ds, bs=BS)
    return data


def warm(learn, n=3):
    "A few training batches first (oneDNN builds its kernels for each new shape), then put everything back exactly."
    snap = learn.state_snapshot()
    opt = learn.make_opt(1e-3)
    for i, (xb, yb) in enumerate(learn.train_batches()):
        learn.loss_batch(xb, yb, opt)
        if i + 1 >= n: break
    learn.restore(snap)




def timed_fit(learn, n):
    "`fit(1e-2, 1)`: the whole epoch, the validation part (timed again on its own) and the training part."
    set_seed(1)
    with contextlib.redirect_stdout(sys.stderr), Timer() as t_fit: learn.fit(1e-2, 1)
    with Timer() as t_val: learn.validate()
    train = {'images_per_s': round(n / (t_fit.wall - t_val.wall), 1), 'wall_s': round(t_fit.wall - t_val.wall, 2),
             'cpu_s': round(t_fit.cpu_s - t_val.cpu_s, 2)}
    return train, {**t_fit.res(n), 'includes': 'train + validation'}, round(learn.sched.val_results[-1]['accuracy'], 4)


def bare_passes(learn, data):
    body = learn.body.eval()
    xs = [xb.contiguous(memory_format=torch.channels_last) for xb, _ in data.fix_dl]
    with torch.inference_mode():
        body(xs[0])                                        # warm-up
        with Timer() as t_tensors:
            for xb in xs: body(xb)
        with Timer() as t_loader:
            for xb, _ in data.fix_dl: body(xb.contiguous(memory_format=torch.channels_last))
    return t_tensors, t_loader


def bench_size(sz, skip_finetune=False, n_train=None, finetune_batches=None):
    data = get_data(sz, n_train)
    n = len(data.trn_ds)
    out = {'sz': sz, 'n_train': n, 'n_valid': len(data.val_ds), 'bs': BS}
    set_seed(0)
    learn = ConvLearner.pretrained('efficientnet_lite0', data)
    warm(learn)
    t_tensors, t_loader = bare_passes(learn, data)
    out['bare_tensors'], out['bare_loader'] = t_tensors.res(n), t_loader.res(n)
    out['frozen_train'], out['frozen_epoch_fit'], out['valid_acc_frozen'] = timed_fit(learn, n)

    set_seed(0)
    learn_bn = ConvLearner.pretrained('efficientnet_lite0', data, train_bn=True)
    warm(learn_bn)
    out['frozen_train_bn'], out['frozen_epoch_fit_train_bn'], out['valid_acc_frozen_train_bn'] = timed_fit(learn_bn, n)

    if not skip_finetune:
        learn.unfreeze()
        warm(learn)
        t, n_ft = train_epoch(learn, lr=1e-4, max_batches=finetune_batches)
        out['finetune_train'] = {**t.res(n_ft), 'images': n_ft}

    bare = out['bare_loader']['images_per_s']
    out['frozen_train_vs_bare_loader'] = round(bare / out['frozen_train']['images_per_s'], 2)
    out['frozen_train_vs_bare_tensors'] = round(out['bare_tensors']['images_per_s'] / out['frozen_train']['images_per_s'], 2)
    out['frozen_train_cpu_vs_bare_loader_cpu'] = round(out['frozen_train']['cpu_s'] / out['bare_loader']['cpu_s'], 2)
    out['frozen_train_bn_vs_bare_loader'] = round(bare / out['frozen_train_bn']['images_per_s'], 2)
    if 'finetune_train' in out: out['finetune_train_vs_bare_loader'] = round(bare / out['finetune_train']['images_per_s'], 2)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
    ap.add_argument('--skip-finetune', action='store_true')
    ap.add_argument('--n-train', type=int, default=None, help='use a subset of the training images (quick runs)')
    ap.add_argument('--finetune-batches', type=int, default=None, help='time only the first N batches of the fine-tune epoch')
    ap.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch decides)')
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    res = {'benchmark': 'lessonlib.learner', 'torch': torch.__version__, 'threads': torch.get_num_threads(),
           'cpus': os.cpu_count(), 'device': 'cpu' if not torch.cuda.is_available() else torch.cuda.get_device_name(),
           'loadavg_start': [round(x, 2) for x in os.getloadavg()],
           'goal': 'frozen_train_vs_bare_loader <= 2',
           'sizes': [bench_size(sz, a.skip_finetune, a.n_train, a.finetune_batches) for sz in a.sizes]}
    res['loadavg_end'] = [round(x, 2) for x in os.getloadavg()]
    res['total_s'] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
