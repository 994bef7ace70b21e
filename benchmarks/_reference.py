"""The point-grouping code before issue 16, kept as the benchmarks' reference (tests/test_speed.py keeps its own copy).

`use_reference()` swaps it into `ibsr_nb.models.point` (FPS, ball query, kNN, and the unfused eval-mode
Conv -> BatchNorm -> ReLU); the returned function undoes the swap.
"""
import os, sys, time, statistics
import torch
import torch.nn.functional as F
import ibsr_nb.models.point as P
from ibsr_nb.models.point import square_distance

PEERS = os.path.join(os.path.dirname(__file__), '..', '.cache', 'peers')   # optional --target installs (open3d)
if os.path.isdir(PEERS): sys.path.append(PEERS)


@torch.no_grad()
def old_fps(xyz, n, random_start=False, generator=None, start=None, skip_origin=False):
    B, N, _ = xyz.shape
    comp = xyz.detach().permute(2, 0, 1).contiguous()
    out = torch.empty(B, n, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float('inf'), dtype=xyz.dtype, device=xyz.device)
    d, t = torch.empty_like(dist), torch.empty_like(dist)
    far = torch.zeros(B, dtype=torch.long, device=xyz.device)
    rows = torch.arange(B, device=xyz.device)
    for i in range(n):
        out[:, i] = far
        centre = xyz[rows, far]
        torch.sub(comp[0], centre[:, 0:1], out=t); torch.mul(t, t, out=d)
        for j in (1, 2): torch.sub(comp[j], centre[:, j:j + 1], out=t); d.addcmul_(t, t)
        torch.minimum(dist, d, out=dist)
        far = dist.argmax(-1)
    return out

@torch.no_grad()
def textbook_fps(xyz, n):
    "pointnet2-pytorch's loop: ((xyz - centroid) ** 2).sum(-1), start at 0."
    B, N, _ = xyz.shape
    out = torch.zeros(B, n, dtype=torch.long)
    dist = torch.full((B, N), float('inf'), dtype=xyz.dtype)
    far, rows = torch.zeros(B, dtype=torch.long), torch.arange(B)
    for i in range(n):
        out[:, i] = far
        dist = torch.minimum(dist, ((xyz - xyz[rows, far][:, None]) ** 2).sum(-1))
        far = dist.argmax(-1)
    return out

OLD_CHUNK = 1 << 22

def _chunks(B, S, N):
    step = max(1, OLD_CHUNK // max(1, S * N))
    return [slice(b, min(B, b + step)) for b in range(0, B, step)]

@torch.no_grad()
def old_ball(radius, nsample, xyz, centers):
    B, N, _ = xyz.shape; S = centers.shape[1]
    k = min(nsample, N)
    out = []
    for sl in _chunks(B, S, N):
        d = square_distance(centers[sl].detach(), xyz[sl].detach())
        key = torch.where(d <= radius ** 2, torch.arange(N, device=xyz.device), N)
        idx = key.topk(k, dim=-1, largest=False, sorted=True).values
        empty = idx[..., 0] == N
        if empty.any(): idx[..., 0] = torch.where(empty, d.argmin(-1), idx[..., 0])
        out.append(torch.where(idx == N, idx[..., :1], idx))
    idx = torch.cat(out)
    if k < nsample: idx = torch.cat([idx, idx[..., :1].expand(-1, -1, nsample - k)], -1)
    return idx

@torch.no_grad()
def old_knn(k, xyz, centers):
    B, N, _ = xyz.shape; S = centers.shape[1]
    return torch.cat([square_distance(centers[sl].detach(), xyz[sl].detach()).topk(k, dim=-1, largest=False).indices
                      for sl in _chunks(B, S, N)])

def old_conv_bn_relu(conv, bn, x): return F.relu(P._bn_last(bn, P._pointwise(conv, x)))

def use_reference():
    "Swap the pre-change functions into ibsr_nb.models.point; return the undo function."
    names = dict(farthest_point_sample=old_fps, ball_query=old_ball, knn_query=old_knn,
                 _conv_bn_relu=old_conv_bn_relu, _folds=lambda bn: False)
    saved = {k: getattr(P, k) for k in names}
    for k, v in names.items(): setattr(P, k, v)
    return lambda: [setattr(P, k, v) for k, v in saved.items()]


def timings(fn, repeats=3, clock=time.perf_counter):
    "Seconds of `repeats` calls after one warm-up call."
    fn()
    ts = []
    for _ in range(repeats):
        t0 = clock(); fn(); ts.append(clock() - t0)
    return ts

def fmt(ts): return f'min {min(ts) * 1e3:9.1f} ms  median {statistics.median(ts) * 1e3:9.1f} ms'

def header(title):
    print(f'# {title}  (torch threads {torch.get_num_threads()}, load average {os.getloadavg()})', flush=True)
