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
