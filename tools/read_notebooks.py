"""Run the notebooks top to bottom as a reader runs them, and print each one's time.

    python tools/read_notebooks.py [NOTEBOOK ...] [--jobs 2] [--timeout 900] [--json times.json]

Unlike `nbdev_test` (which sets IN_TEST, so every notebook shrinks to its smoke size, and skips cells flagged
slow/gpu/data), this executes every code cell of each notebook in a fresh Jupyter kernel (nbclient), from `nbs/` as
the working directory, with the scale variables a reader would not have set removed from the environment
(IN_TEST, IBSR_QUICK, IBSR_SCALE, IBSR_JOBS). `IBSR_HOME` (where caches go) and the thread variables are kept, so a
test can point the caches at a folder of its own. Each notebook's default is a laptop scale; the paper notebooks
(20-25) run at quick scale and reuse the run cache under $IBSR_HOME/paper/quick once it exists.

Exits 1 if a notebook fails, naming the notebook, the cell and the error; the others still run. `--jobs 2` runs two
notebooks at a time (one per core); the paper notebooks share one run cache, whose locks keep any run from being
trained twice.
"""
import argparse, json, os, re, sys, time, concurrent.futures as cf, multiprocessing as mp
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
READER_UNSET = ('IN_TEST', 'IBSR_QUICK', 'IBSR_SCALE', 'IBSR_JOBS', 'IBSR_DEBUG')

def reader_env(env=None) -> dict:
    "The environment of a reader: `env` (default os.environ) without the variables that choose a scale."
    env = dict(os.environ if env is None else env)
    for k in READER_UNSET: env.pop(k, None)
    env.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')   # figures as a reader sees them
    if env['MPLBACKEND'].lower() == 'agg': env['MPLBACKEND'] = 'module://matplotlib_inline.backend_inline'
    return env

def run_notebook(path: Path, timeout: int = 900, starts: int = 3) -> dict:
    "Execute `path` top to bottom in a fresh kernel; return {notebook, seconds, cells, error}."
    for start in range(starts):
        nb = nbformat.read(path, as_version=4)
        # The kernel app logs at ERROR: its start-up warnings (ipykernel 7.4: "running over TCP without encryption")
        # are not the notebook's; a failing cell still fails the run.
        client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}},
                                extra_arguments=['--IPKernelApp.log_level=ERROR'])
        t0, error = time.perf_counter(), None
        try: client.execute(env=reader_env())                    # the kernel's environment
        except CellExecutionError as e:
            lines = [l for l in re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines() if l.strip()]   # no colour codes
            error = next((l for l in reversed(lines) if 'Error' in l.split(':')[0]), lines[-1] if lines else type(e).__name__)
        except Exception as e:
            error = f'{type(e).__name__}: {e}'
            ran = any(c.get('execution_count') for c in nb.cells if c.cell_type == 'code')
            if not ran and start + 1 < starts:   # the kernel never started (two kernels starting at once can race
                print(f'note: {path.name}: the kernel did not start ({error}); starting another', file=sys.stderr, flush=True)
                continue                         # for a port: "Address already in use"); no cell of the notebook ran
        break
    if error:   # the failing cell: the first one whose outputs hold an error
        cell = next((i for i, c in enumerate(nb.cells) if c.cell_type == 'code'
                     and any(o.get('output_type') == 'error' for o in c.get('outputs', []))), None)
        if cell is not None: error = f'cell {cell}: {error}'
    n_code = sum(c.cell_type == 'code' for c in nb.cells)
    return dict(notebook=path.name, seconds=round(time.perf_counter() - t0, 1), cells=n_code, error=error)

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='*', type=Path, help='notebooks to run (default: every nbs/*.ipynb, in order)')
    ap.add_argument('--jobs', type=int, default=1, help='notebooks run at a time')
    ap.add_argument('--timeout', type=int, default=900, help='seconds a single cell may run')
    ap.add_argument('--json', type=Path, default=None, help='also write the times to this JSON file')
    a = ap.parse_args(argv)
    paths = a.notebooks or sorted((ROOT/'nbs').glob('*.ipynb'))
    if a.jobs < 1: ap.error(f'--jobs: must be at least 1, got {a.jobs}')
    missing = [p for p in paths if not p.exists()]
    rows = [dict(notebook=str(p), seconds=0.0, cells=0, error='file not found') for p in missing]
    t0 = time.perf_counter()
    def report(r):
        rows.append(r)
        print(f"{r['notebook']:<28} {r['seconds']:7.1f} s  {r['cells']:3d} cells  {'ok' if not r['error'] else 'FAILED: ' + r['error']}",
              flush=True)
    todo = [p.resolve() for p in paths if p.exists()]
    if a.jobs == 1:
        for p in todo: report(run_notebook(p, a.timeout))
    else:
        with cf.ProcessPoolExecutor(a.jobs, mp_context=mp.get_context('spawn')) as pool:
            for f in cf.as_completed([pool.submit(run_notebook, p, a.timeout) for p in todo]): report(f.result())
    total, bad = time.perf_counter() - t0, [r for r in rows if r['error']]
    print(f'{len(rows) - len(bad)} of {len(rows)} notebooks ran top to bottom in {total:.0f} s')
    if a.json: a.json.write_text(json.dumps(dict(total_seconds=round(total, 1), notebooks=rows), indent=1))
    for r in bad: print(f"error: nbs/{r['notebook']}: {r['error']}", file=sys.stderr)
    return 1 if bad else 0

if __name__ == '__main__': sys.exit(main())
