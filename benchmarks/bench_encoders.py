"""Benchmark the point-cloud encoders: sampling/grouping against reference implementations, and forward throughput.

    python benchmarks/bench_encoders.py                 # full: 10k points, batch 8 and 32, CPU (+ CUDA if present)
    python benchmarks/bench_encoders.py --quick         # a smoke run in seconds
    python benchmarks/bench_encoders.py --out bench.csv

Every ratio is measured in the same run against a reference run on the same inputs. Nothing is compared with
numbers from elsewhere. Three references:

1. a pure Python loop (FPS and ball query written point by point), on a small cloud because it is slow;
2. the textbook PyTorch code that the published repositories use (FPS with a masked update per step; ball
   query by sorting each centre's full row of N indices; kNN by `topk` of the full table);
3. for throughput, no reference: shapes per second and the share of the forward pass spent in grouping.

The sampled indices of ours and of each reference are checked for equality before any time is reported.
Threads come from --threads or $IBSR_NUM_THREADS (see ibsr_nb.core.configure_threads).
"""
import argparse, math, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ibsr_nb.core import configure_threads, environment_report, set_seed
from ibsr_nb.models.point import (POINT_CONFIGS, ball_query, count_parameters, create_point_encoder,
                                  farthest_point_sample, knn_query, square_distance)


# ------------------------------------------------------------------ references

def fps_textbook(xyz, n):
    "FPS as in the published PyTorch code: a (B, N, 3) temporary and a masked update per step; start at 0."
    B, N, _ = xyz.shape
    out = torch.zeros(B, n, dtype=torch.long, device=xyz.device)
    distance = torch.full((B, N), 1e10, device=xyz.device)
    far = torch.zeros(B, dtype=torch.long, device=xyz.device)
    rows = torch.arange(B, device=xyz.device)
    for i in range(n):
        out[:, i] = far
        dist = ((xyz - xyz[rows, far].view(B, 1, 3)) ** 2).sum(-1)
        mask = dist < distance
        distance[mask] = dist[mask]
        far = distance.max(-1)[1]
    return out

def ball_query_textbook(radius, nsample, xyz, centers):
    "Ball query as in the published PyTorch code: sort every centre's full row of N indices."
    B, N, _ = xyz.shape
    S = centers.shape[1]
    idx = torch.arange(N, device=xyz.device).view(1, 1, N).repeat(B, S, 1)
    idx[square_distance(centers, xyz) > radius ** 2] = N
    idx = idx.sort(dim=-1)[0][:, :, :nsample]
    first = idx[:, :, :1].repeat(1, 1, nsample)
    idx[idx == N] = first[idx == N]
    return idx

def knn_textbook(k, xyz, centers):
    "kNN as in ULIP: topk over the full (B, S, N) table at once (here sorted, to compare indices)."
    return square_distance(centers, xyz).topk(k, dim=-1, largest=False).indices

def fps_python(xyz, n):
    "FPS in plain Python loops over points (one cloud, numpy float32 arithmetic)."
    pts = xyz.numpy()
    chosen, best = [0], [math.inf] * len(pts)
    for _ in range(n - 1):
        c = pts[chosen[-1]]
        for j, p in enumerate(pts):
            d = float(((p - c) ** 2).sum())
            if d < best[j]: best[j] = d
        chosen.append(int(np.argmax(best)))
    return chosen

def ball_query_python(radius, nsample, xyz, centers):
    "Ball query in plain Python loops (one cloud): in-ball points in index order, padded with the first."
    pts, out = xyz.numpy(), []
    for c in centers.numpy():
        inside = [j for j, p in enumerate(pts) if float(((p - c) ** 2).sum()) <= radius * radius][:nsample]
        out.append(inside + [inside[0]] * (nsample - len(inside)))
    return out


# ------------------------------------------------------------------ timing

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()

def timeit(fn, device, min_time=0.5, max_reps=20, warmup=1):
    "Median seconds per call of `fn` (after `warmup` calls), repeating until `min_time` has passed."
    for _ in range(warmup): fn()
    sync(device)
    times = []
    while (not times or sum(times) < min_time) and len(times) < max_reps:
        t0 = time.perf_counter(); fn(); sync(device); times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ------------------------------------------------------------------ benchmarks

def bench_grouping(device, n_points, batch, quick):
    "Ours vs the textbook PyTorch code (and vs plain Python loops on a small cloud)."
    rows = []
    g = torch.Generator().manual_seed(0)
    xyz = (torch.rand(batch, n_points, 3, generator=g) * 2 - 1).to(device)
    for label, S, r, K in [('PPAT-G14 (FPS 384 + ball r=0.2, 64)', 384, 0.2, 64), ('ULIP Point-BERT (FPS 512 + kNN 32)', 512, None, 32)]:
        if r is not None:
            ours = lambda: ball_query(r, K, xyz, xyz.gather(1, farthest_point_sample(xyz, S)[..., None].expand(-1, -1, 3)))
            ref = lambda: ball_query_textbook(r, K, xyz, xyz.gather(1, fps_textbook(xyz, S)[..., None].expand(-1, -1, 3)))
        else:
            ours = lambda: knn_query(K, xyz, xyz.gather(1, farthest_point_sample(xyz, S)[..., None].expand(-1, -1, 3)))
            ref = lambda: knn_textbook(K, xyz, xyz.gather(1, fps_textbook(xyz, S)[..., None].expand(-1, -1, 3)))
        same = torch.equal(ours(), ref())
        t_ours, t_ref = timeit(ours, device, min_time=0.3 if quick else 1.0), timeit(ref, device, min_time=0.3 if quick else 1.0)
        rows.append({'device': device.type, 'task': label, 'B': batch, 'N': n_points, 'ours_ms': t_ours * 1e3,
                     'reference': 'textbook torch', 'reference_ms': t_ref * 1e3, 'speedup': t_ref / t_ours, 'same_indices': same})
        fps_only_same = torch.equal(farthest_point_sample(xyz, S), fps_textbook(xyz, S))
        t_f, t_fr = timeit(lambda: farthest_point_sample(xyz, S), device), timeit(lambda: fps_textbook(xyz, S), device)
        rows.append({'device': device.type, 'task': f'  FPS only ({S})', 'B': batch, 'N': n_points, 'ours_ms': t_f * 1e3,
                     'reference': 'textbook torch', 'reference_ms': t_fr * 1e3, 'speedup': t_fr / t_f, 'same_indices': fps_only_same})
    if device.type == 'cpu':                               # the pure-Python loop, on a cloud small enough to wait for
        n_small, S, r, K = (512, 32, 0.3, 16) if quick else (1024, 64, 0.3, 32)
        one = torch.rand(1, n_small, 3, generator=g) * 2 - 1
        ours = lambda: ball_query(r, K, one, one.gather(1, farthest_point_sample(one, S)[..., None].expand(-1, -1, 3)))
        def naive():
            idx = fps_python(one[0], S)
            return ball_query_python(r, K, one[0], one[0, idx])
        same = ours()[0].tolist() == naive()
        t_ours = timeit(ours, device, min_time=0.3)
        t0 = time.perf_counter(); naive(); t_naive = time.perf_counter() - t0
        rows.append({'device': 'cpu', 'task': f'FPS {S} + ball query {K}', 'B': 1, 'N': n_small, 'ours_ms': t_ours * 1e3,
                     'reference': 'python loops', 'reference_ms': t_naive * 1e3, 'speedup': t_naive / t_ours, 'same_indices': same})
    return rows

def grouping_time(enc, x, device):
    "Seconds spent in the encoder's sampling/grouping step for input `x`."
    c, xyz = enc.config, x[..., :3]
    if enc.arch == 'ppat':
        fn = lambda: ball_query(c['prad'], c['nsamp'], xyz, xyz.gather(1, farthest_point_sample(xyz, c['patches'])[..., None].expand(-1, -1, 3)))
    elif enc.arch == 'ulip-pointbert':
        fn = lambda: knn_query(c['group_size'], xyz, xyz.gather(1, farthest_point_sample(xyz, c['num_group'])[..., None].expand(-1, -1, 3)))
    else:
        s = c['sa1']
        fn = lambda: ball_query(s[1], s[2], xyz, xyz.gather(1, farthest_point_sample(xyz, s[0])[..., None].expand(-1, -1, 3)))
    return timeit(fn, device, min_time=0.2, max_reps=3)

def bench_throughput(device, names, n_points, batches, quick):
    rows = []
    for name in names:
        set_seed(0)
        enc = create_point_encoder(name).eval().to(device)
        for B in batches:
            x = (torch.rand(B, n_points, enc.in_channels) * 2 - 1).to(device)
            big = count_parameters(enc) > 10_000_000 and device.type == 'cpu'
            with torch.no_grad():
                t = timeit(lambda: enc.encode(x), device, min_time=0.2 if (quick or big) else 1.0,
                           max_reps=2 if big else 20, warmup=0 if big and B > 8 else 1)
                tg = grouping_time(enc, x, device)
            rows.append({'device': device.type, 'encoder': name, 'params': count_parameters(enc), 'B': B, 'N': n_points,
                         'ms_per_batch': t * 1e3, 'shapes_per_s': B / t, 'grouping_share': tg / t})
            print(f'  {device.type} {name:22s} B={B:3d}: {B / t:8.1f} shapes/s', file=sys.stderr, flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='small sizes, a smoke run in seconds')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: $IBSR_NUM_THREADS or all cores)')
    ap.add_argument('--devices', default=None, help="comma-separated, e.g. 'cpu,cuda' (default: cpu, plus cuda when available)")
    ap.add_argument('--out', type=Path, default=None, help='write both tables to this CSV path (two files: *_grouping, *_throughput)')
    a = ap.parse_args(argv)
    threads = configure_threads(a.threads)
    devices = [torch.device(d) for d in (a.devices.split(',') if a.devices else ['cpu'] + (['cuda'] if torch.cuda.is_available() else []))]
    n_points, batches = (2048, [2, 4]) if a.quick else (10_000, [8, 32])
    names = ['ppat-tiny-s', 'ppat-tiny-l', 'ulip-pointbert-tiny', 'pn2-ssg-tiny'] + ([] if a.quick else ['ppat-g14'])
    env = environment_report()
    print(f"torch {env['torch']} | threads {threads} | devices {[d.type for d in devices]} | quick={a.quick}")

    grouping, throughput = [], []
    for dev in devices:
        grouping += bench_grouping(dev, n_points, batches[0], a.quick)
        throughput += bench_throughput(dev, names, n_points, batches, a.quick)
    g, t = pd.DataFrame(grouping), pd.DataFrame(throughput)
    pd.set_option('display.width', 200)
    print('\n== sampling and grouping: ours vs reference (speedup = reference time / our time)')
    print(g.to_string(index=False, float_format=lambda v: f'{v:.2f}'))
    print('\n== forward throughput (eval, no grad); grouping_share = FPS + grouping time / forward time')
    print(t.to_string(index=False, float_format=lambda v: f'{v:.3f}' if v < 1 else f'{v:.1f}'))
    if not g['same_indices'].all(): print('\nWARNING: some indices differ from the reference', file=sys.stderr); return 1
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        g.to_csv(a.out.with_name(a.out.stem + '_grouping.csv'), index=False)
        t.to_csv(a.out.with_name(a.out.stem + '_throughput.csv'), index=False)
    return 0


if __name__ == '__main__': sys.exit(main())
