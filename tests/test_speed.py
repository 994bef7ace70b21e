"""The fast FPS, grouping and fused local MLPs against the pre-change code, kept here as the reference.

`farthest_point_sample`, `ball_query` and `knn_query` below are the implementations before issue 16 (a torch
loop and whole-row tables); `_unfused` is the eval-mode MLP step before BatchNorm folding. Whole encoder
forwards (tiny configurations) must match a forward through those references within 1e-5 in eval mode and
exactly in training mode, where nothing is fused.
"""
import copy

import numpy as np
import pytest
import torch

import ibsr_nb.models.point as P
from ibsr_nb.models.point import create_point_encoder, square_distance


# ---------------------------------------------------------------- the pre-change reference code
@torch.no_grad()
def ref_fps(xyz, n, random_start=False, generator=None, start=None, skip_origin=False):
    assert start is None and not skip_origin, 'the reference has no start/skip_origin options'
    B, N, _ = xyz.shape
    comp = xyz.detach().permute(2, 0, 1).contiguous()
    out = torch.empty(B, n, dtype=torch.long)
    dist = torch.full((B, N), float('inf'), dtype=xyz.dtype)
    d, t = torch.empty_like(dist), torch.empty_like(dist)
    far = torch.randint(N, (B,), generator=generator) if random_start else torch.zeros(B, dtype=torch.long)
    rows = torch.arange(B)
    for i in range(n):
        out[:, i] = far
        centre = xyz[rows, far]
        torch.sub(comp[0], centre[:, 0:1], out=t); torch.mul(t, t, out=d)
        for j in (1, 2): torch.sub(comp[j], centre[:, j:j + 1], out=t); d.addcmul_(t, t)
        torch.minimum(dist, d, out=dist)
        far = dist.argmax(-1)
    return out

def _chunks(B, S, N):
    step = max(1, (1 << 22) // max(1, S * N))
    return [slice(b, min(B, b + step)) for b in range(0, B, step)]

@torch.no_grad()
def ref_ball(radius, nsample, xyz, centers):
    B, N, _ = xyz.shape; S = centers.shape[1]
    k = min(nsample, N)
    out = []
    for sl in _chunks(B, S, N):
        d = square_distance(centers[sl].detach(), xyz[sl].detach())
        key = torch.where(d <= radius ** 2, torch.arange(N), N)
        idx = key.topk(k, dim=-1, largest=False, sorted=True).values
        empty = idx[..., 0] == N
        if empty.any(): idx[..., 0] = torch.where(empty, d.argmin(-1), idx[..., 0])
        out.append(torch.where(idx == N, idx[..., :1], idx))
    idx = torch.cat(out)
    if k < nsample: idx = torch.cat([idx, idx[..., :1].expand(-1, -1, nsample - k)], -1)
    return idx

@torch.no_grad()
def ref_knn(k, xyz, centers):
    B, N, _ = xyz.shape; S = centers.shape[1]
    return torch.cat([square_distance(centers[sl].detach(), xyz[sl].detach()).topk(k, dim=-1, largest=False).indices
                      for sl in _chunks(B, S, N)])

def _unfused(conv, bn, x):
    return torch.nn.functional.relu(P._bn_last(bn, P._pointwise(conv, x)))

def textbook_fps(xyz, n):
    "pointnet2-pytorch's loop: ((xyz - centroid) ** 2).sum(-1), start at 0."
    B, N, _ = xyz.shape
    out, dist, far = torch.zeros(B, n, dtype=torch.long), torch.full((B, N), float('inf'), dtype=xyz.dtype), torch.zeros(B, dtype=torch.long)
    for i in range(n):
        out[:, i] = far
        dist = torch.minimum(dist, ((xyz - xyz[torch.arange(B), far][:, None]) ** 2).sum(-1))
        far = dist.argmax(-1)
    return out

@pytest.fixture
def reference(monkeypatch):
    "Run the encoders through the pre-change functions."
    def use():
        monkeypatch.setattr(P, 'farthest_point_sample', ref_fps)
        monkeypatch.setattr(P, 'ball_query', ref_ball)
        monkeypatch.setattr(P, 'knn_query', ref_knn)
        monkeypatch.setattr(P, '_conv_bn_relu', _unfused)
        monkeypatch.setattr(P, '_folds', lambda bn: False)
    return use


# ---------------------------------------------------------------- FPS
@pytest.mark.parametrize('B,N,n,dtype', [(1, 5000, 256, torch.float32), (16, 3000, 128, torch.float32),
                                         (3, 2000, 64, torch.float64)])
def test_fps_equals_reference_and_textbook(B, N, n, dtype):
    g = torch.Generator().manual_seed(B * N)
    xyz = (torch.rand(B, N, 3, generator=g) * 2 - 1).to(dtype)
    ours = P.farthest_point_sample(xyz, n)
    assert torch.equal(ours, ref_fps(xyz, n))
    assert torch.equal(ours, textbook_fps(xyz, n))
    torch.set_num_threads(2)
    try: assert torch.equal(P.farthest_point_sample(xyz, n), ours)          # clouds shared among threads
    finally: torch.set_num_threads(1)

def test_fps_torch_path_without_numba(monkeypatch):
    xyz = torch.rand(4, 1500, 3, generator=torch.Generator().manual_seed(3))
    want = P.farthest_point_sample(xyz, 100)
    monkeypatch.setenv('IBSR_NUMBA', '0'); P._compiled.cache_clear()
    try: assert torch.equal(P.farthest_point_sample(xyz, 100), want)
    finally: P._compiled.cache_clear()

def test_fps_random_start_reproduces_reference():
    xyz = torch.rand(5, 800, 3, generator=torch.Generator().manual_seed(4))
    g = lambda: torch.Generator().manual_seed(9)
    assert torch.equal(P.farthest_point_sample(xyz, 50, True, g()), ref_fps(xyz, 50, True, g()))

def test_ulip_near_origin_convention():
    "pointnet2_ops skips points with squared norm <= 1e-3 after the first centre; the textbook loop does not."
    g = torch.Generator().manual_seed(5)
    outer = torch.rand(2, 300, 3, generator=g) * 2 - 1
    inner = (torch.rand(2, 200, 3, generator=g) * 2 - 1) * 0.018              # |p|² <= 3 * 0.018² < 1e-3
    xyz = torch.cat([inner[:, :1], outer, inner[:, 1:]], 1)                    # the first point is near the origin
    near = (xyz * xyz).sum(-1) <= 1e-3
    plain, ulip = P.farthest_point_sample(xyz, 280), P.farthest_point_sample(xyz, 280, skip_origin=True)
    assert near.gather(1, plain).sum() > 0                                     # the textbook loop picks them
    assert near.gather(1, ulip)[:, 0].all() and not near.gather(1, ulip)[:, 1:].any()   # start 0, then never
    enc = create_point_encoder('ulip-pointbert-tiny', fps_reference='pointnet2_ops', in_channels=3).eval()
    assert enc.point_encoder.fps_skip_origin
    assert create_point_encoder('ulip-pointbert').point_encoder.fps_skip_origin          # the published models
    assert not create_point_encoder('ulip-pointbert-tiny').point_encoder.fps_skip_origin
    with pytest.raises(ValueError, match="fps_reference must be one of"):
        create_point_encoder('ppat-tiny-s', fps_reference='open3d')


# ---------------------------------------------------------------- grouping
@pytest.mark.parametrize('B,N,S', [(2, 5000, 512), (9, 700, 64), (1, 300, 2000)])
def test_grouping_equals_reference(B, N, S):
    "Blocks over the centres (S * N above the block size) give the rows of the whole-batch tables."
    g = torch.Generator().manual_seed(N)
    xyz = torch.rand(B, N, 3, generator=g) * 2 - 1
    centers = torch.cat([xyz[:, :S // 2], torch.rand(B, S - S // 2, 3, generator=g) * 3 - 1.5], 1)   # some balls empty
    assert len(P._blocks(B, S, N)) > 1 or B * S * N <= P._CHUNK
    for r, k in ((0.1, 32), (0.3, 64), (0.05, 8)):
        assert torch.equal(P.ball_query(r, k, xyz, centers), ref_ball(r, k, xyz, centers))
    assert torch.equal(P.knn_query(16, xyz, centers), ref_knn(16, xyz, centers))


# ---------------------------------------------------------------- whole encoders
CONFIGS = [('ppat-tiny-s', {}), ('ppat-tiny-l', {}), ('ulip-pointbert-tiny', {}), ('pn2-ssg-tiny', {}),
           ('pointbert-s', dict(depth=1, n_points=2048))]

def _encoder(name, kw):
    torch.manual_seed(0)
    depth = kw.get('depth')
    enc = create_point_encoder(name, **({'depth': depth} if depth else {}))
    for m in enc.modules():                       # non-trivial running statistics, as a trained model has
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 2.0); m.weight.data.uniform_(0.5, 1.5)
    return enc

def _clouds(enc, n):
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, n, enc.in_channels, generator=g) * 2 - 1

@pytest.mark.parametrize('name,kw', CONFIGS)
def test_encoder_forward_equals_pre_change(name, kw, reference):
    enc = _encoder(name, kw).eval()
    x = _clouds(enc, kw.get('n_points', 1024))
    def run(train):
        m = copy.deepcopy(enc).train(train)                  # training updates the running statistics: a copy each
        torch.manual_seed(2)
        with torch.set_grad_enabled(train): return m.encode(x)
    ours, ours_train = run(False), run(True)
    reference()
    ref, ref_train = run(False), run(True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours_train, ref_train)                                  # training mode: nothing fused


# ---------------------------------------------------------------- threads
@pytest.mark.parametrize('env,want', [({'OMP_NUM_THREADS': '1'}, 1), ({'OMP_NUM_THREADS': '2,1'}, 2),
                                      ({'IBSR_NUM_THREADS': '2', 'OMP_NUM_THREADS': '1'}, 2), ({}, None)])
def test_configure_threads_honours_the_environment(env, want):
    import os, subprocess, sys
    clean = {k: v for k, v in os.environ.items() if k not in ('IBSR_NUM_THREADS', 'OMP_NUM_THREADS', 'OMP_WAIT_POLICY')}
    code = ("import os; from ibsr_nb.core import configure_threads; "
            "print(configure_threads(), os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    r = subprocess.run([sys.executable, '-c', code], env={**clean, **env}, capture_output=True, text=True, check=True)
    n, policy = r.stdout.split()
    assert int(n) == (want or os.cpu_count())
    assert policy == 'unset'     # OpenMP's default wait (spin briefly, then sleep): PASSIVE made 2 threads slower than 1

@pytest.mark.skipif(__import__('platform').libc_ver()[0] != 'glibc', reason='mallopt is glibc\'s')
def test_configure_malloc_stops_the_page_faults_of_a_forward():
    "With the CLI's allocator settings a published-size forward reuses its memory: no fresh pages per forward."
    import os, subprocess, sys
    code = ("import resource, torch; from ibsr_nb.core import configure_threads, configure_malloc\n"
            "configure_threads(1); assert configure_malloc()\n"
            "from ibsr_nb.models.point import create_point_encoder\n"
            "enc = create_point_encoder('ulip-pn2-ssg').eval(); x = torch.rand(1, 8192, 3) * 2 - 1\n"
            "with torch.no_grad():\n"
            "    for _ in range(4): enc.encode(x)\n"
            "    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "    for _ in range(6): enc.encode(x)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 6)")
    env = {k: v for k, v in os.environ.items() if k != 'IBSR_MALLOC'}
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
    # measured here: configured 0-342 faults per forward (a heap that grows now and then); glibc's defaults 5,700-6,700
    assert float(r.stdout.split()[-1]) < 1000

def test_configure_threads_rejects_a_bad_value(monkeypatch):
    from ibsr_nb.core import configure_threads
    monkeypatch.setenv('IBSR_NUM_THREADS', 'four')
    with pytest.raises(ValueError, match=r"\$IBSR_NUM_THREADS: expected a positive number of threads, got 'four'"):
        configure_threads()


@pytest.mark.parametrize('skip_origin', [False, True])
def test_fps_ties_and_duplicates_follow_the_first_index(skip_origin):
    "Coordinates on a coarse grid: many equal distances and duplicate points; the blocked loop keeps argmax's rule."
    g = torch.Generator().manual_seed(11)
    xyz = torch.randint(-4, 5, (3, 3000, 3), generator=g).float() / 4                 # 729 distinct positions
    n = 700
    near = (xyz * xyz).sum(-1) <= 1e-3
    dist = torch.where(near, float('-inf'), float('inf')) if skip_origin else torch.full((3, 3000), float('inf'))
    want = P._fps_torch(xyz, n, dist, torch.zeros(3, dtype=torch.long))
    assert torch.equal(P.farthest_point_sample(xyz, n, skip_origin=skip_origin), want)
    if not skip_origin: assert torch.equal(want, textbook_fps(xyz, n))


# ---------------------------------------------------------------- exact search against FAISS IndexFlatIP
def _gallery_with_duplicates(n, d, seed):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, d), dtype=np.float32)
    g[n // 2:n // 2 + n // 10] = g[:n // 10]                                   # a tenth of the rows twice
    return g / np.linalg.norm(g, axis=1, keepdims=True)

@pytest.mark.parametrize('nq', [1, 8, 9, 300, 1100])    # the row scan; 4 x 4 blocks; GEMM tiles; two query tiles
def test_flat_search_equals_faiss(nq):
    import faiss
    from ibsr_nb.index import flat_search
    g = _gallery_with_duplicates(6000, 48, nq)
    q = np.random.default_rng(nq + 1).standard_normal((nq, 48), dtype=np.float32)
    q[:1] = g[:1]                                                              # a query equal to a duplicated row
    peer = faiss.IndexFlatIP(48)
    peer.add(g)
    v, i = flat_search(q, g, 10)
    pv, pi = peer.search(q, 10)
    np.testing.assert_allclose(v, pv, atol=1e-5)
    s = q @ g.T
    np.testing.assert_allclose(np.take_along_axis(s, i, 1), v, atol=1e-5)    # the ids carry the scores returned
    tied = (np.abs(s[:, None, :] - v[:, :, None]) <= 1e-5).sum(-1) > 1        # a duplicate (or a near-equal score)
    assert (i[~tied] == pi[~tied]).all()                                       # identical ids wherever not tied
    assert tied.mean() < 0.5                                                   # ... which is most places
    u = g.copy()
    u[3000:3600] = np.random.default_rng(7).standard_normal((600, 48), dtype=np.float32)
    u[3000:3600] /= np.linalg.norm(u[3000:3600], axis=1, keepdims=True)       # no duplicates left: ids all equal
    peer = faiss.IndexFlatIP(48)
    peer.add(u)
    assert (flat_search(q, u, 10)[1] == peer.search(q, 10)[1]).all()

@pytest.mark.parametrize('nq', [1, 3, 64, 130])          # the row scan; 4 x 4 blocks (3 pads a block); GEMM tiles
def test_flat_search_ties_follow_the_index_and_memory_is_bounded(nq):
    "Exact integer scores: ties go to the smaller index (topk_stable's rule); the score buffer never grows with N."
    import tracemalloc
    from ibsr_nb.index import flat_search
    from ibsr_nb.metrics import topk_stable
    rng = np.random.default_rng(0)
    g = rng.integers(-2, 3, (200_000, 8)).astype(np.float32)                 # 5^8 patterns: many equal scores
    q = rng.integers(-2, 3, (nq, 8)).astype(np.float32)
    tracemalloc.start()
    v, i = flat_search(q, g, 10)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2 ** 20                                                  # a 4 MB tile; the Q x N table is 51 MB
    want_v, want_i = topk_stable(q @ g.T, 10)
    assert (i == want_i).all() and (v == want_v).all()

@pytest.mark.parametrize('nq', [1, 2, 5, 64])         # the row scan; the 4 x 4 blocks
@pytest.mark.parametrize('threads', [2, 3])
def test_flat_search_split_among_threads_is_the_same_search(nq, threads, monkeypatch):
    "Gallery shares on several threads, merged: the same scores and ids as one thread, ties included."
    import ibsr_nb.index as I
    from ibsr_nb.core import torch_threads
    from ibsr_nb.metrics import topk_stable
    rng = np.random.default_rng(nq)
    g = rng.integers(-2, 3, (10_003, 8)).astype(np.float32)                  # not a multiple of 4; many ties
    q = rng.integers(-2, 3, (nq, 8)).astype(np.float32)
    monkeypatch.setattr(I, '_THREADED_MIN', 0)                                 # split even this small gallery
    with torch_threads(threads): v, i = I.flat_search(q, g, 10)
    want_v, want_i = topk_stable(q @ g.T, 10)
    assert (i == want_i).all() and (v == want_v).all()

def test_flat_search_threads_survive_a_fork(monkeypatch):
    "A child forked after a threaded search gets its own worker threads (the parent's do not exist in it)."
    import multiprocessing as mp
    import ibsr_nb.index as I
    from ibsr_nb.core import torch_threads
    g = np.random.default_rng(0).standard_normal((20_000, 64), dtype=np.float32)
    q = g[:3] + 0
    monkeypatch.setattr(I, '_THREADED_MIN', 0)                                 # split (the child inherits this)
    with torch_threads(2): want = I.flat_search(q, g, 5)                     # the pool's threads start here
    ctx = mp.get_context('fork')
    with ctx.Pool(1) as pool: got = pool.apply_async(_threaded_search, (q, g)).get(timeout=60)
    assert (got[1] == want[1]).all() and (got[0] == want[0]).all()

def _threaded_search(q, g):
    import ibsr_nb.index as I
    from ibsr_nb.core import torch_threads
    with torch_threads(2): return I.flat_search(q, g, 5)

@pytest.mark.parametrize('nq', [1, 5, 64])
def test_flat_search_scores_equal_rows_equally(nq):
    "The compiled kernels sum every score in one order: copies of a row score the same wherever they sit in a block."
    from ibsr_nb.index import flat_search
    rng = np.random.default_rng(11)
    g = rng.standard_normal((4001, 40), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[2001:2201], g[3002:3202] = g[:200], g[:200]                              # copies at offsets 1 and 2 (mod 4)
    q = rng.standard_normal((nq, 40), dtype=np.float32)
    q[0] = g[5]
    v, i = flat_search(q, g, 12)
    assert i[0, :3].tolist() == [5, 2006, 3007] and v[0, 0] == v[0, 1] == v[0, 2]
    orig = np.where(i >= 3002, i - 3002, np.where(i >= 2001, i - 2001, i))     # the row each result copies
    orig = np.where(orig < 200, orig, -1 - np.arange(i.size).reshape(i.shape))  # rows without copies: unique keys
    for r in range(nq):
        for o in set(orig[r][orig[r] >= 0]): assert len(set(v[r][orig[r] == o])) == 1

def test_flat_search_without_numba_is_the_torch_path(monkeypatch):
    import ibsr_nb.index as I
    g = _gallery_with_duplicates(3000, 32, 1)
    q = np.random.default_rng(2).standard_normal((40, 32), dtype=np.float32)
    fast = I.flat_search(q, g, 7)
    monkeypatch.setenv('IBSR_NUMBA', '0')
    I._search_kernels.cache_clear()
    try:
        assert I._search_kernels() is None
        slow = I.flat_search(q, g, 7)
    finally: I._search_kernels.cache_clear()
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-5)
    assert (fast[1] == slow[1]).mean() > 0.99                                  # the same but for near-equal duplicates
