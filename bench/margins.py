"""Margins of every asserted number that comes from training, over seeds 0-4 x torch threads {1, 2}.

Each experiment is run as written (a whole lesson notebook, slow cells skipped, or a test) in a fresh process with
`LESSONLIB_SEED=s` (every `set_seed` call then uses seed s) and `OMP_NUM_THREADS=t`. Every `check_at_least` it makes
is recorded (`LESSONLIB_MARGINS`) instead of raised, so one run measures them all. Each thread count gets its own
data root, so its activation caches are computed with that thread count, as on a learner's machine.

Prints JSON: per check, its threshold, min / median / max seen, the margin (min - threshold) and whether it holds.
An absolute threshold needs a margin of at least 0.03 (MIN_MARGIN); a comparison made in the same run (listed in
COMPARISONS) needs to hold on every variation. Exit status 1 when a check fails that rule or an experiment errors.

Usage: python bench/margins.py [--seeds 0 1 2 3 4] [--threads 1 2] [--only NAME ...] [--out FILE]
Takes about 40 minutes on 2 cores (jobs with 1 thread run two at a time).
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Lock, Semaphore
os.environ.setdefault('LESSONLIB_QUIET', '1')

ROOT = Path(__file__).resolve().parents[1]
MIN_MARGIN = 0.03
# name -> how to run it; each runs its checks once per (seed, threads)
EXPERIMENTS = {                                         # longest first, so that the pool ends together
    '12_lesson2': ('nb', '12_lesson2.ipynb'),
    '13_multilabel': ('nb', '13_multilabel.ipynb'),
    'index': ('nb', 'index.ipynb'),
    '03_learner': ('nb', '03_learner.ipynb'),
    '06_lr_find': ('nb', '06_lr_find.ipynb'),
    '09_cleaner': ('nb', '09_cleaner.ipynb'),
    '09a_suspects': ('nb', '09a_suspects.ipynb'),
    'test_cleaner_oof': ('pytest', 'tests/test_cleaner.py::test_out_of_fold_ranking_finds_flipped_labels'),
    '14a_precision': ('nb', '14a_precision.ipynb'),
    'test_distributed': ('pytest', 'tests/test_distributed.py::test_default_head_matches_one_process_and_ranks_stay_identical'),
}
# checks that compare two numbers of the same run (or a count against a rule), not a number against a constant
COMPARISONS = {'fall of the loss over five steps on one batch', 'CSV data: 64 px minus 32 px',
               'step 2: fall of the smoothed loss just before lr',
               'step 7: 2 x lowest smoothed loss minus the loss at the head rate',
               'step 8: chance loss minus the first unfrozen batch losses', 'step 8 minus step 4', 'TTA minus step 8',
               'multilabel: F2 with cross-fitted thresholds minus F2 at 0.5',
               'distributed: 0.02 minus |2-process - 1-process accuracy|',
               'precision: 0.05 minus |bf16 - fp32 accuracy, same weights|'}

RUN_NB = '''import sys
from pathlib import Path
from nbdev.test import test_nb
ok, secs = test_nb(Path(sys.argv[1]).resolve(), skip_flags=['slow', 'notest'], showerr=True)
sys.exit(0 if ok else 1)'''


def run_one(name, seed, threads, data_root, work):
    "Run experiment `name` once; returns its records, seconds and error text (None when it ran clean)."
    kind, target = EXPERIMENTS[name]
    d = Path(tempfile.mkdtemp(prefix=f'{name}-s{seed}-t{threads}-', dir=work))
    log = d/'margins.jsonl'
    env = {**os.environ, 'LESSONLIB_SEED': str(seed), 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads),
           'LESSONLIB_MARGINS': str(log), 'LESSONLIB_DATA': str(data_root), 'LESSONLIB_QUIET': '1', 'MPLBACKEND': 'Agg',
           'PYTHONHASHSEED': '0'}
    if kind == 'nb':                                   # a copy of the notebooks: lessons write files beside themselves
        for p in (ROOT/'nbs').glob('*.ipynb'): shutil.copy(p, d/p.name)
        shutil.copytree(ROOT/'nbs'/'images', d/'images')
        cmd, cwd = [sys.executable, '-c', RUN_NB, target], d
    else:
        cmd, cwd = [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', str(ROOT/target)], d
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    recs = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
    err = None if r.returncode == 0 else (r.stdout + r.stderr)[-2000:]
    shutil.rmtree(d, ignore_errors=True)
    return {'experiment': name, 'seed': seed, 'threads': threads, 'seconds': round(secs, 1), 'records': recs, 'error': err}


def summarize(runs, seeds, threads):
    "One row per check: threshold, values seen, min / median / max, margin and verdict."
    rows = {}
    for r in runs:
        for rec in r['records']:
            row = rows.setdefault((r['experiment'], rec['what']), {'experiment': r['experiment'], 'check': rec['what'],
                                  'threshold': rec['threshold'], 'values': {}})
            row['values'][f"s{r['seed']}t{r['threads']}"] = round(rec['value'], 4)
    out = []
    for row in rows.values():
        v = list(row['values'].values())
        row.update(n=len(v), min=min(v), median=round(statistics.median(v), 4), max=max(v),
                   margin=round(min(v) - row['threshold'], 4), kind='comparison' if row['check'] in COMPARISONS else 'absolute')
        need = 0.0 if row['kind'] == 'comparison' else MIN_MARGIN
        row['ok'] = row['n'] == len(seeds) * len(threads) and (row['margin'] >= need if row['kind'] == 'absolute'
                                                                 else row['margin'] >= 0)
        out.append(row)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    ap.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--only', nargs='+', choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    ap.add_argument('--out', help='also write the JSON here')
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix='margins-'))
    roots = {t: work/f'data-threads{t}' for t in a.threads}
    from lessonlib.data import get_dataset          # materialise the datasets once per root before jobs share it
    for root in roots.values():
        os.environ['LESSONLIB_DATA'] = str(root)
        for ds in ('fashion-sample', 'fashion-sample-csv'): get_dataset(ds)
    cores = os.cpu_count() or 1
    slots, taking = Semaphore(cores), Lock()        # a job with t threads holds t of the cores' slots
    def job(args):
        name, seed, t = args
        with taking:                                 # one job takes its slots at a time: no two half-served jobs
            for _ in range(min(t, cores)): slots.acquire()
        try: r = run_one(name, seed, t, roots[t], work)
        finally:
            for _ in range(min(t, cores)): slots.release()
        print(f"{name} seed {seed} threads {t}: {r['seconds']} s, {len(r['records'])} checks"
              f"{'' if r['error'] is None else ', ERROR'}", file=sys.stderr, flush=True)
        return r
    # one seed's first job per thread count builds that root's caches; the rest reuse them
    jobs = [(n, s, t) for s in a.seeds for n in a.only for t in a.threads]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cores) as ex: runs = list(ex.map(job, jobs))
    rows = summarize(runs, a.seeds, a.threads)
    res = {'bench': 'margins', 'seeds': a.seeds, 'threads': a.threads, 'min_margin': MIN_MARGIN, 'cpu_count': cores,
           'wall_s': round(time.perf_counter() - t0, 1),
           'seconds_per_experiment': {n: round(statistics.median([r['seconds'] for r in runs if r['experiment'] == n]), 1)
                                      for n in a.only},
           'errors': [{k: r[k] for k in ('experiment', 'seed', 'threads', 'error')} for r in runs if r['error']],
           'checks': rows, 'all_ok': all(r['ok'] for r in rows) and not any(r['error'] for r in runs)}
    text = json.dumps(res, indent=1)
    if a.out: Path(a.out).write_text(text + '\n')
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if res['all_ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
