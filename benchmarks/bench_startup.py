"""Start-up cost of the `ibsr` command, beside `python -c "import torch"` measured in the same run.

    python benchmarks/bench_startup.py [--repeats 3]

Each command runs as a fresh process (wall time, min and median of the repeats). `ibsr query` searches a
1,000-shape index of the random tiny encoder with a text or photos (no picture), so it measures start-up, encoder
creation, index load and the searches; three photos run once as one command and once as three. An argument error
(`--chunk 0`) is refused before torch loads. The ratio column divides by the median of `import torch`, the floor
any command that embeds something must pay.
"""
import os, sys, time, argparse, tempfile, statistics, subprocess
from pathlib import Path

def timed(cmds, env, repeats, code=0):
    "(min, median) wall seconds of running the commands `cmds` one after the other, each exiting with `code`."
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        for cmd in cmds:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != code: raise SystemExit(f'{cmd} exited with {r.returncode}, not {code}:\n{r.stderr[-2000:]}')
        ts.append(time.perf_counter() - t)
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
    from PIL import Image
    photos = [tmp/f'photo{i}.png' for i in range(3)]
    for i, f in enumerate(photos): Image.fromarray(np.random.default_rng(i).integers(0, 256, (96, 96, 3), np.uint8)).save(f)
    env = dict(os.environ, IBSR_NUM_THREADS='1', OMP_NUM_THREADS='1', IBSR_PROGRESS='0')
    ibsr = [str(Path(sys.executable).with_name('ibsr'))]
    cmds = {'python -c "import torch"': [sys.executable, '-c', 'import torch'],
            'ibsr --help': ibsr + ['--help'], 'ibsr --version': ibsr + ['--version'],
            'ibsr query --help': ibsr + ['query', '--help'],
            'ibsr encoders': ibsr + ['encoders'],
            'ibsr query (1,000 shapes, text)': ibsr + ['query', '--text', 'a chair', '--index', str(tmp/'shapes.index'), '--no-picture']}
    query = lambda *images: ibsr + ['query', *map(str, images), '--index', str(tmp/'shapes.index'), '--no-picture']
    print(f'load average {os.getloadavg()[0]:.2f}, {a.repeats} runs each, wall seconds')
    rows = {name: timed([cmd], env, a.repeats) for name, cmd in cmds.items()}
    rows['ibsr index --chunk 0 (argument error)'] = timed([ibsr + ['index', str(tmp), '--out', str(tmp/'x.index'), '--chunk', '0']],
                                                         env, a.repeats, code=2)
    rows['ibsr query: 3 photos, one command'] = timed([query(*photos)], env, a.repeats)
    rows['ibsr query: 3 photos, 3 commands'] = timed([query(f) for f in photos], env, a.repeats)
    torch_med = rows['python -c "import torch"'][1]
    print(f'{"command":40s} {"min":>7s} {"median":>7s} {"÷ import torch":>15s}')
    for name, (lo, med) in rows.items(): print(f'{name:40s} {lo:7.2f} {med:7.2f} {med / torch_med:15.2f}')
    one, three = rows['ibsr query: 3 photos, one command'][1], rows['ibsr query: 3 photos, 3 commands'][1]
    print(f'3 photos in one command: {three / one:.2f}x faster than 3 commands (medians)')
    print(f'load average after: {os.getloadavg()[0]:.2f}')

if __name__ == '__main__': main()
