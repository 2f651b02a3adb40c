"Smoke tests for the benchmarks in bench/: they run and print the figures the issues ask for (speed is never asserted)."
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_data_bench_prints_its_figures():
    out = subprocess.run([sys.executable, str(ROOT/'bench'/'data.py'), '--sizes', '32', '--repeats', '2'],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    r = json.loads(out)['sizes']['32']
    for k in ('bare_pil_images_per_s', 'loader_images_per_s', 'loader_0_workers_images_per_s'): assert r[k] > 0, k
    assert len(r['all_bare']) == len(r['all_loader']) == 2
    ratios = sorted(l / b for b, l in zip(r['all_bare'], r['all_loader']))
    assert ratios[0] - 0.01 <= r['median_ratio_of_adjacent_runs'] <= ratios[-1] + 0.01
    assert r['goal_met'] == (r['ratio_loader_over_bare'] >= 0.9)

def test_benches_share_one_timer():
    "One `Timer` (bench/common.py) serves every benchmark, and the scripts find it when run as `python bench/x.py`."
    import ast
    own = sorted(p.name for p in (ROOT/'bench').glob('*.py')
                 if any(isinstance(n, ast.ClassDef) and n.name == 'Timer' for n in ast.walk(ast.parse(p.read_text()))))
    assert own == ['common.py'], own
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_common', ROOT/'bench'/'common.py')
    common = importlib.util.module_from_spec(spec); spec.loader.exec_module(common)
    Timer = common.Timer
    with Timer() as t: sum(i * i for i in range(200_000))
    assert t.wall > 0 and t.cpu_s >= 0
    r = t.res(1000)
    assert set(r) == {'images_per_s', 'wall_s', 'cpu_s'} and r['images_per_s'] > 0
    for b in ('learner.py', 'precompute.py'):
        out = subprocess.run([sys.executable, str(ROOT/'bench'/b), '--help'], capture_output=True, text=True, timeout=300,
                             cwd=ROOT/'tests')
        assert out.returncode == 0 and out.stdout.startswith('usage:'), (b, out.stderr[-2000:])

def test_gpu_bench_cpu_smoke():
    "bench/gpu.py --device cpu --quick: every figure of every precision (fp16 says why it is skipped on a CPU)."
    out = subprocess.run([sys.executable, str(ROOT/'bench'/'gpu.py'), '--device', 'cpu', '--quick'], capture_output=True,
                         text=True, timeout=600, cwd=ROOT/'tests')
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    assert r['device'] == 'cpu' and set(r['precisions']) == {'fp32', 'bf16', 'fp16'}
    assert 'CUDA' in r['precisions']['fp16']['skipped']
    for p in ('fp32', 'bf16'):
        row = r['precisions'][p]
        for k in ('bare_inference', 'cache_build', 'head_epoch', 'frozen_epoch', 'unfrozen_epoch'): assert row[k]['images_per_s'] > 0, (p, k)
        assert 0 <= row['accuracy'] <= 1 and row['peak_rss_mb'] > 0 and row['frozen_vs_bare'] > 0
    assert 'recipe' not in r                                           # the recipe runs by default on CUDA only


def test_multilabel_bench_full_recipe_smoke(tmp_path):
    "bench/multilabel.py --full-recipe on 160 collages: F2 at 0.5, fitted and cross-fitted, seconds per step, the goal's verdict."
    import os
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'multilabel.py'), '--full-recipe', '--n', '160', '--sz', '32', '--cycles', '1', '--aug-epochs', '0',
                        '--seeds', '0'], capture_output=True, text=True, cwd=tmp_path, timeout=900,
                       env={**os.environ, 'OMP_NUM_THREADS': '2', 'MPLBACKEND': 'Agg'})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    run = out['runs'][0]
    assert out['full_recipe'] and out['cycles'] == 1 and out['sz'] == 32 and out['aug_epochs'] == 0
    assert not any(s['step'].startswith('4') for s in run['steps'])          # step 4 skipped
    assert all(0 <= run[k] <= 1 for k in ('tta_f2_at_0.5', 'tta_f2_fitted', 'tta_f2_cross_fitted'))
    assert run['steps'][0]['step'] == '1 precompute activations' and run['seconds_total'] > 0
    assert set(out['summary']) >= {'min_f2_fitted_cross', 'fitted_beats_half_on_every_seed', 'max_seconds_total', 'goal_f2_0.90_met'}
