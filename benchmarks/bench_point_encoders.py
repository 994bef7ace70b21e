"""Point-encoder forwards: ours against the pre-change grouping and unfused MLPs, and 2 threads against 1.

1. Speed-up: each encoder's eval forward (random weights, seeded clouds) with the current code and with the
   pre-change FPS / ball query / kNN / Conv-BN-ReLU swapped in (`_reference.py`), 1 thread, the outputs
   compared (max abs difference printed, 1e-5 wanted). `pointbert-s` runs at 10,000 points.
2. Threads: each encoder in fresh processes with IBSR_NUM_THREADS=1 and =2 (through `configure_threads` and
   `configure_malloc`, the way the CLI runs), two processes of each in the order 1, 2, 2, 1, wall time; the ratios of the pooled
   minimum and median times, > 1 when 2 threads are faster. Run twice: OpenMP's default wait policy (a user's
   shell: the CLI and the notebooks run so), and OMP_WAIT_POLICY=PASSIVE set before torch loads (libgomp reads
   it only then). Under PASSIVE every parallel region wakes a sleeping thread, which costs the small encoders
   more than the second core gives back: that is why the project leaves the policy at OpenMP's default.

Times are min and median of --repeats runs after a warm-up, with the load average printed.

    python benchmarks/bench_point_encoders.py [--repeats 7] [--only speed|threads]
"""
import argparse, json, os, subprocess, sys, time, statistics
import torch
from _reference import use_reference, timings, fmt, header

# name: (batch, points)
ENCODERS = {'ppat-tiny-s': (4, 1024), 'ppat-tiny-l': (4, 1024), 'ulip-pointbert-tiny': (4, 1024),
            'pn2-ssg-tiny': (4, 1024), 'pointbert-s': (4, 10_000), 'ulip-pointbert': (1, 8192),
            'ulip-pn2-ssg': (1, 8192)}


def encoder_and_clouds(name):
    from ibsr_nb.models.point import create_point_encoder
    torch.manual_seed(0)
    enc = create_point_encoder(name).eval()
    for m in enc.modules():                                   # trained-looking BatchNorm statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 2.0)
    B, N = ENCODERS[name]
    x = torch.rand(B, N, enc.in_channels, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return enc, x


def speed(repeats):
    torch.set_num_threads(1)
    header('Encoder forward: ours vs pre-change, 1 thread')
    for name in ENCODERS:
        enc, x = encoder_and_clouds(name)
        with torch.no_grad():
            ours = enc.encode(x)
            t_ours = timings(lambda: enc.encode(x), repeats)
            undo = use_reference()
            try:
                ref = enc.encode(x)
                t_ref = timings(lambda: enc.encode(x), repeats)
            finally: undo()
        diff = float((ours - ref).abs().max())
        print(f'{name:20s} B={x.shape[0]} N={x.shape[1]:>5}: ours {fmt(t_ours)} | pre-change {fmt(t_ref)} | '
              f'{min(t_ref) / min(t_ours):5.2f}x faster | max |diff| {diff:.1e}', flush=True)


CHILD = """
import sys, time, statistics, json, torch
sys.path.insert(0, {here!r})
from ibsr_nb.core import configure_threads, configure_malloc
from bench_point_encoders import encoder_and_clouds
from _reference import timings
n = configure_threads(); configure_malloc()
enc, x = encoder_and_clouds({name!r})
with torch.no_grad(): ts = timings(lambda: enc.encode(x), {repeats})
print(json.dumps({{'threads': n, 'times': ts}}))
"""

def threads(repeats, policy=None):
    header(f'Threads: 2 against 1, fresh processes (1, 2, 2, 1), wall time, OMP_WAIT_POLICY={policy or "unset"} at start')
    here = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if k not in ('IBSR_NUM_THREADS', 'OMP_NUM_THREADS', 'OMP_WAIT_POLICY')}
    if policy: env['OMP_WAIT_POLICY'] = policy              # as an entry point that sets it before torch loads
    for name in ENCODERS:
        res = {1: [], 2: []}
        for t in (1, 2, 2, 1):                              # two processes each, in an order that balances drift
            code = CHILD.format(here=here, name=name, repeats=repeats)
            r = subprocess.run([sys.executable, '-c', code], env={**env, 'IBSR_NUM_THREADS': str(t)},
                               capture_output=True, text=True)
            if r.returncode: sys.exit(f'{name} with {t} threads failed:\n{r.stderr[-2000:]}')
            out = json.loads(r.stdout.strip().splitlines()[-1])
            assert out['threads'] == t
            res[t] += out['times']
        one, two = res[1], res[2]
        print(f'{name:20s} 1 thread {fmt(one)} | 2 threads {fmt(two)} | 2 vs 1: {min(one) / min(two):5.2f}x (min) '
              f'{statistics.median(one) / statistics.median(two):5.2f}x (median) (load {os.getloadavg()[0]:.1f})', flush=True)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=7, help='timed forwards per process (after a warm-up)')
    ap.add_argument('--only', choices=('speed', 'threads'))
    a = ap.parse_args()
    if a.only != 'threads': speed(a.repeats)
    if a.only != 'speed':
        threads(a.repeats)
        threads(a.repeats, 'PASSIVE')
