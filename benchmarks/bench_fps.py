"""Farthest point sampling and grouping against peers, in one run, 1 thread.

FPS: ours (numba loop on CPU), the pre-change torch loop, the textbook torch loop, fpsample's plain loop
(`fps_sampling`) and open3d's `farthest_point_down_sample` when importable. open3d 0.20 imports from a folder
beside the project's packages: `pip install --no-deps --target .cache/peers open3d dash`, then
`pip install --target .cache/peers pydantic janus`, and run with `PYTHONPATH=.cache/peers`.
Ratios are peer time / our time (> 1: we are faster).
Batch 16 / batch 1 is the per-cloud cost ratio (<= 1 wanted). Grouping: ball query and kNN against the
pre-change code (identical results are asserted) and the largest scratch table each allocates.

    python benchmarks/bench_fps.py [--repeats 3] [--quick]
"""
import argparse, statistics
import numpy as np
import torch
from _reference import old_fps, textbook_fps, old_ball, old_knn, timings, fmt, header, OLD_CHUNK
import ibsr_nb.models.point as P

try: import fpsample
except ImportError: fpsample = None
try: import open3d as o3d
except ImportError: o3d = None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--quick', action='store_true', help='skip the slow textbook loop at 100k points')
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    header('FPS')
    for N, n in ((1_024, 96), (10_000, 512), (100_000, 1024)):    # a training cloud, and two large ones
        xyz = torch.rand(16, N, 3, generator=torch.Generator().manual_seed(N)) * 2 - 1
        one = xyz[:1]
        ours = P.farthest_point_sample(one, n)
        assert torch.equal(ours, old_fps(one, n)), 'FPS differs from the pre-change loop'
        res = {'ours': timings(lambda: P.farthest_point_sample(one, n), a.repeats),
               'pre-change torch loop': timings(lambda: old_fps(one, n), a.repeats)}
        if not (a.quick and N > 10_000): res['textbook torch loop'] = timings(lambda: textbook_fps(one, n), a.repeats)
        pts = one[0].numpy()
        if fpsample is not None:
            assert sorted(fpsample.fps_sampling(pts, n, start_idx=0).tolist()) == sorted(ours[0].tolist())
            res['fpsample fps_sampling'] = timings(lambda: fpsample.fps_sampling(pts, n, start_idx=0), a.repeats)
        if o3d is not None:
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
            res['open3d farthest_point_down_sample'] = timings(lambda: pc.farthest_point_down_sample(n), a.repeats)
        print(f'{N:>7} -> {n} points, one cloud')
        for k, ts in res.items():
            ratio = '' if k == 'ours' else f'   ours is {min(ts) / min(res["ours"]):5.2f}x faster (min)'
            print(f'  {k:36s} {fmt(ts)}{ratio}')
        b1 = timings(lambda: [P.farthest_point_sample(xyz[b:b + 1], n) for b in range(16)], a.repeats)
        b16 = timings(lambda: P.farthest_point_sample(xyz, n), a.repeats)
        print(f'  ours, 16 clouds one by one, per cloud {fmt([t / 16 for t in b1])}')
        print(f'  ours, the same 16 as one batch       {fmt([t / 16 for t in b16])}   '
              f'batch-16 / batch-1 per cloud: {min(b16) / min(b1):.2f}')
    header('Grouping')
    for B, N, S, r, K in ((8, 10_000, 512, 0.2, 32), (8, 10_000, 64, 0.4, 256), (32, 1024, 128, 0.25, 16)):
        xyz = torch.rand(B, N, 3, generator=torch.Generator().manual_seed(B)) * 2 - 1
        cen = P.index_points(xyz, P.farthest_point_sample(xyz, S))
        assert torch.equal(P.ball_query(r, K, xyz, cen), old_ball(r, K, xyz, cen)), 'ball query differs'
        assert torch.equal(P.knn_query(K, xyz, cen), old_knn(K, xyz, cen)), 'kNN differs'
        new_b = timings(lambda: P.ball_query(r, K, xyz, cen), a.repeats)
        old_b = timings(lambda: old_ball(r, K, xyz, cen), a.repeats)
        new_k = timings(lambda: P.knn_query(K, xyz, cen), a.repeats)
        old_k = timings(lambda: old_knn(K, xyz, cen), a.repeats)
        step = max(1, OLD_CHUNK // (S * N))
        old_mb = min(B, step) * S * N * (4 + 8 + 8) / 2 ** 20                    # distances, int64 keys, topk copy
        block = max(len(range(B)[bs]) * len(range(S)[ss]) for bs, ss in P._blocks(B, S, N))
        new_mb = block * N * 4 / 2 ** 20                                         # one float32 distance block
        out_mb = B * S * K * 8 / 2 ** 20
        print(f'B={B} N={N} S={S} K={K}: ball query ours {fmt(new_b)}; pre-change {fmt(old_b)}; '
              f'ours is {min(old_b) / min(new_b):.2f}x faster')
        print(f'{"":27s}kNN        ours {fmt(new_k)}; pre-change {fmt(old_k)}; '
              f'ours is {min(old_k) / min(new_k):.2f}x faster')
        print(f'{"":27s}scratch: ours {new_mb:.1f} MB (bounded block) vs pre-change {old_mb:.1f} MB; '
              f'result {out_mb:.2f} MB')


if __name__ == '__main__': main()
