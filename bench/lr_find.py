"""Benchmark `lr_find`: a 100-iteration sweep on precomputed activations and on a frozen body at sz 64.

Bundled sample (Fashion, 6,000 training images), bundled backbone (efficientnet_lite0), bs 64. Prints JSON.
The activation cache is built (or reopened) before timing, so the precompute figure is the sweep alone.
Goal: < 2 s for the sweep on precomputed activations on 2 CPU cores.
"""
import json, os, sys
os.environ.setdefault('LESSONLIB_QUIET', '1')
import torch
from lessonlib.core import set_seed, default_device
from lessonlib.data import get_dataset, ImageData, ImageTransform
from lessonlib.models import get_arch
from lessonlib.learner import ConvLearner
from common import Timer
import lessonlib.precompute, lessonlib.lr_find, lessonlib.schedules   # methods their lessons attach


def timed_sweep(learn, **kwargs):
    "Seconds for one `learn.lr_find(**kwargs)`, the steps it ran, why it stopped and its suggestions."
    with Timer() as t: sugg = learn.lr_find(**kwargs)
    return {'seconds': round(t.wall, 3), 'steps': len(learn.sched.losses), 'stop_reason': learn.sched.stop_reason,
            'suggestions': {k: (None if v is None else float(f'{v:.3g}')) for k, v in sugg._asdict().items()}}


def main(sz=64, bs=64, num_it=100):
    arch = get_arch('efficientnet_lite0')
    tfm = ImageTransform(sz, mean=arch.mean, std=arch.std)
    data = ImageData.from_paths(get_dataset('fashion-sample'), tfms=(tfm, tfm), bs=bs)
    out = {'sz': sz, 'bs': bs, 'num_it': num_it, 'n_train': len(data.trn_ds), 'device': str(default_device()),
           'torch_threads': torch.get_num_threads(), 'loadavg_1min': round(os.getloadavg()[0], 2)}

    set_seed(42)
    learn = ConvLearner.pretrained(arch, data, precompute=True)
    with Timer() as t: learn.cache_info()
    out['cache_ready_s'] = round(t.wall, 2)
    timed_sweep(learn, num_it=5)                                   # warm-up (first optimizer step imports, etc.)
    out['precompute'] = timed_sweep(learn, num_it=num_it)
    out['precompute_full_100'] = timed_sweep(learn, num_it=num_it, stop_div=False)
    out['precompute']['goal_s'] = 2.0

    learn.precompute = False                                      # same head, images through the frozen body
    out['frozen_body'] = timed_sweep(learn, num_it=num_it)
    out['frozen_body_full_100'] = timed_sweep(learn, num_it=num_it, stop_div=False)
    print(json.dumps(out, indent=2))
    return out


if __name__ == '__main__':
    main(*(int(a) for a in sys.argv[1:]))
