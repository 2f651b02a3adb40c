"""What the benchmarks in bench/ share: `Timer` and `train_epoch`. Not a benchmark itself (`make bench` skips it).

The scripts run as `python bench/x.py`, so bench/ is first on `sys.path` and they import it as `from common import Timer`.
"""
import time, resource


class Timer:
    "Wall seconds and CPU seconds (this process + its finished children, e.g. DataLoader workers) of a block."
    def cpu(self):
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
    def __enter__(self): self.w0, self.c0 = time.perf_counter(), self.cpu(); return self
    def __exit__(self, *a): self.wall, self.cpu_s = time.perf_counter() - self.w0, self.cpu() - self.c0
    def res(self, n): return {'images_per_s': round(n / self.wall, 1), 'wall_s': round(self.wall, 2), 'cpu_s': round(self.cpu_s, 2)}


def train_epoch(learn, lr=1e-2, max_batches=None):
    "The training loop of `fit` for one epoch (or its first `max_batches`), no validation; returns (Timer, n_images)."
    opt, n = learn.make_opt(lr), 0
    with Timer() as t:
        for i, (xb, yb) in enumerate(learn.train_batches()):
            learn.loss_batch(xb, yb, opt); n += len(xb)
            if max_batches and i + 1 >= max_batches: break
        if getattr(learn.device, 'type', 'cpu') == 'cuda':    # queued GPU work counts in the time
            import torch; torch.cuda.synchronize()
    learn.model.eval()
    return t, n
