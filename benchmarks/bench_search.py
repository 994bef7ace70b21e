"""Exact search: ours (`ShapeIndex.search` on a `flat` index, i.e. `index.flat_search`) against FAISS `IndexFlatIP`.

Both read the same vectors (our kernel reads FAISS's storage in place). For each gallery size and query count the
methods run in interleaved rounds (every method once per round), and the min and median wall time of the rounds
are printed with the load average (and the ratio of minimum process CPU times, steadier on shared cores), so a busy neighbour on a shared machine biases all methods alike. FAISS runs
twice: with its defaults (below `faiss.cvar.distance_compute_blas_threshold` queries it scores query by query
without BLAS) and with its BLAS path forced; "ours ÷ best FAISS" compares against the faster of the two.
Everything runs on one thread by default: FAISS's OpenMP, torch (whose thread count is the number of gallery shares
our compiled kernels run on), and both OpenBLAS libraries (numpy's and FAISS's).
Their pools size themselves when the libraries load, so `--threads` is put into OMP_NUM_THREADS, OPENBLAS_NUM_THREADS
and MKL_NUM_THREADS before numpy and FAISS are imported (threadpoolctl, when installed, also limits them and prints
each pool's count); without that, numpy's OpenBLAS took every core while FAISS ran on one.

    python benchmarks/bench_search.py                                  # 10k, 100k, 1M x 512; 1 and 100 queries; k=10
    python benchmarks/bench_search.py --sizes 100000 --queries 1 16 100 1000 --repeats 7
"""
import argparse, os, statistics, sys, time


THREADS = argparse.ArgumentParser(add_help=False)     # --threads alone: read before the libraries load, and a parent of `main`'s parser
THREADS.add_argument('--threads', type=int, default=1, help='threads for FAISS, torch and OpenBLAS (default 1)')


def _thread_count(argv) -> int:
    "The --threads value, read before the BLAS and OpenMP libraries load (the full parse comes later, in `main`)."
    return max(1, THREADS.parse_known_args(argv)[0].threads)


if __name__ == '__main__':
    for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'): os.environ[_var] = str(_thread_count(sys.argv[1:]))

import numpy as np    # after the thread variables: numpy's OpenBLAS and FAISS's OpenMP read them as they load
import faiss

from ibsr_nb.core import configure_threads
from ibsr_nb.index import ShapeIndex


def load() -> str:
    try: return '%.1f %.1f %.1f' % os.getloadavg()
    except OSError: return 'n/a'


def blas_threads(n: int) -> str:
    "Limit every BLAS/OpenMP pool in the process to `n` threads (threadpoolctl) and say what each one now uses."
    try: from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return ('threadpoolctl not installed; set before loading: ' +
                ', '.join(f'{v}={os.environ.get(v)}' for v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')))
    threadpool_limits(n)
    return ', '.join(f"{p['internal_api']} {os.path.basename(p['filepath'])[:24]}={p['num_threads']}" for p in threadpool_info())


def faiss_with_blas_threshold(ix, threshold):
    "IndexFlatIP.search with FAISS's BLAS threshold set for this call (restored after)."
    def run(q, k):
        old = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = threshold
        try: return ix.search(q, k)
        finally: faiss.cvar.distance_compute_blas_threshold = old
    return run


def bench(n, dim, queries, k, repeats, seed):
    "Rows of (n, Q, method, min s, median s) plus the agreement of ids with FAISS, for one gallery size."
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, dim), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    ix = ShapeIndex(dim, 'flat')
    ix.add(g, np.arange(n).astype(str))
    del g                                                   # both methods read FAISS's copy
    rows = []
    for nq in queries:
        q = rng.standard_normal((nq, dim), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        methods = {'faiss IndexFlatIP (default)': lambda: ix.faiss.search(q, k),
                   'faiss IndexFlatIP (BLAS path)': lambda: faiss_with_blas_threshold(ix.faiss, 1)(q, k),
                   'ours (ShapeIndex.search)': lambda: ix.search(q, k)}
        (ov, oi), (fv, fi) = ix.search(q, k), ix.faiss.search(q, k)
        same, diff = float((oi == fi).mean()), float(np.abs(ov - fv).max())
        times, cpu = {m: [] for m in methods}, {m: [] for m in methods}
        for f in methods.values(): f()                      # warm-up (numba compiles once per process)
        for _ in range(repeats):
            for m, f in methods.items():
                t0, c0 = time.perf_counter(), time.process_time()
                f()
                times[m].append(time.perf_counter() - t0); cpu[m].append(time.process_time() - c0)
        for m, t in times.items(): rows.append((n, nq, m, min(t), statistics.median(t)))
        best = min(min(times[m]) for m in methods if m.startswith('faiss'))
        best_med = min(statistics.median(times[m]) for m in methods if m.startswith('faiss'))
        best_cpu = min(min(cpu[m]) for m in methods if m.startswith('faiss'))
        ours = times['ours (ShapeIndex.search)']
        print(f'{n:>9d} x {dim} {nq:>5d} q | ' + ' | '.join(f'{m.split(" ", 1)[-1]} {min(t) * 1e3:8.2f} / '
              f'{statistics.median(t) * 1e3:8.2f} ms' for m, t in times.items()) +
              f" | ours ÷ FAISS default: {min(times['faiss IndexFlatIP (default)']) / min(ours):.2f}x (min)"
              f' | ours ÷ best FAISS: {best / min(ours):.2f}x (min) {best_med / statistics.median(ours):.2f}x (median) '
              f"{best_cpu / min(cpu['ours (ShapeIndex.search)']):.2f}x (CPU min)"
              f' | ids identical {same:.4f}, max |score diff| {diff:.1e} | load {load()}', flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[THREADS])
    ap.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000, 1_000_000])
    ap.add_argument('--queries', type=int, nargs='+', default=[1, 100])
    ap.add_argument('--dim', type=int, default=512)
    ap.add_argument('--k', type=int, default=10)
    ap.add_argument('--repeats', type=int, default=5, help='interleaved timing rounds (min and median reported)')
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args(argv)
    threads = configure_threads(a.threads)
    faiss.omp_set_num_threads(threads)
    print(f'exact search, k={a.k}, {threads} thread(s) (FAISS OpenMP {faiss.omp_get_max_threads()}; {blas_threads(threads)});'
          f' {a.repeats} interleaved rounds, min / median wall ms; FAISS BLAS threshold '
          f'{faiss.cvar.distance_compute_blas_threshold}; load average {load()} on {os.cpu_count()} cores')
    for n in a.sizes: bench(n, a.dim, a.queries, a.k, a.repeats, a.seed)
    print(f'load average at the end: {load()} (a load above the core count means the cores were shared)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
