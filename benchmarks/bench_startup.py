"""Start-up cost of the `ibsr` command, beside `python -c "import torch"` measured in the same run.

    python benchmarks/bench_startup.py [--repeats 3]

Each command runs as a fresh process (wall time, min and median of the repeats). `ibsr query` searches a
1,000-shape index of the random tiny encoder with a text (no picture), so it measures start-up, encoder
creation, index load and one search. The ratio column divides by the median of `import torch`, the floor any
command that embeds something must pay.
"""
import os, sys, time, argparse, tempfile, statistics, subprocess
from pathlib import Path

def timed(cmd, env, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        ts.append(time.perf_counter() - t)
        if r.returncode != 0: raise SystemExit(f'{cmd} failed:\n{r.stderr[-2000:]}')
    return min(ts), statistics.median(ts)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=3)
    a = p.parse_args()
    import numpy as np
    from ibsr_nb.index import ShapeIndex
    tmp = Path(tempfile.mkdtemp())
    ix = ShapeIndex(128, 'flat', encoder='random-ppat-tiny-s', weights='random:seed=0')
    ix.add(np.random.default_rng(0).standard_normal((1000, 128)).astype('float32'), [f'shape_{i:04d}' for i in range(1000)])
    ix.save(tmp/'shapes.index')
    env = dict(os.environ, IBSR_NUM_THREADS='1', OMP_NUM_THREADS='1', IBSR_PROGRESS='0')
    ibsr = [str(Path(sys.executable).with_name('ibsr'))]
    cmds = {'python -c "import torch"': [sys.executable, '-c', 'import torch'],
            'ibsr --help': ibsr + ['--help'], 'ibsr --version': ibsr + ['--version'],
            'ibsr query --help': ibsr + ['query', '--help'],
            'ibsr encoders': ibsr + ['encoders'],
            'ibsr query (1,000 shapes, text)': ibsr + ['query', '--text', 'a chair', '--index', str(tmp/'shapes.index'), '--no-picture']}
    print(f'load average {os.getloadavg()[0]:.2f}, {a.repeats} runs each, wall seconds')
    rows = {name: timed(cmd, env, a.repeats) for name, cmd in cmds.items()}
    torch_med = rows['python -c "import torch"'][1]
    print(f'{"command":36s} {"min":>7s} {"median":>7s} {"÷ import torch":>15s}')
    for name, (lo, med) in rows.items(): print(f'{name:36s} {lo:7.2f} {med:7.2f} {med / torch_med:15.2f}')
    print(f'load average after: {os.getloadavg()[0]:.2f}')

if __name__ == '__main__': main()
