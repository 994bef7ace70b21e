"""Property tests for ibsr_nb.losses: finite values and gradients over the whole numeric range training can reach
(cosines in [-1, 1] incl. collapsed and antipodal batches, β ≤ 10, τ ≥ 0.01, τ⁺ ∈ [0, 0.5), batch size 2),
agreement with a per-anchor reference in float64, and the β schedules' invariants.
The per-sample reference loops and the figures live in nbs/08_losses.ipynb."""
import math
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck

from ibsr_nb.losses import (LogitScale, info_nce, clip_loss_trimodal, nt_xent, hcl_simclr, hcl_multimodal, BetaSchedule,
                            cmic_losses, hash_contrastive, quantization_loss, chamfer_distance, masked_patch_mse, cmah_losses)

torch.set_num_threads(1)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KINDS = ['random', 'collapsed', 'antipodal', 'duplicated', 'near']

def feats(kind, B, D, seed, dtype):
    "A pair of (B, D) L2-normalised batches of a given adversarial kind."
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    if kind == 'collapsed': a = b = a[:1].expand(B, D)                       # every cosine is 1
    elif kind == 'antipodal': b = -a                                          # positives at cosine -1
    elif kind == 'duplicated': a, b = a[:1].expand(B, D), b[:1].expand(B, D)  # all rows equal within each modality
    elif kind == 'near': b = F.normalize(a + 1e-4 * b, dim=-1)               # positives almost identical
    return a.to(dtype).clone(), b.to(dtype).clone()

batch = dict(kind=st.sampled_from(KINDS), B=st.integers(2, 6), D=st.integers(2, 8), seed=st.integers(0, 2**16),
             dtype=st.sampled_from([torch.float32, torch.float64]))
beta_st = st.floats(0., 10.)
tau_st = st.floats(0.01, 1.)
tau_plus_st = st.floats(0., 0.5, exclude_max=True)

def assert_finite_grads(fn, *xs):
    xs = [x.clone().requires_grad_() for x in xs]
    out = fn(*xs)
    for k, v in out.items(): assert torch.isfinite(torch.as_tensor(v)).all(), (k, v)
    out['loss'].backward()
    for x in xs: assert x.grad is not None and torch.isfinite(x.grad).all(), x.grad
    return out

@SETTINGS
@given(**batch, beta=beta_st, tau=tau_st, tau_plus=tau_plus_st, beta_on=st.sampled_from(['logits', 'cosine']), text=st.booleans())
def test_hcl_multimodal_finite(kind, B, D, seed, dtype, beta, tau, tau_plus, beta_on, text):
    a, b = feats(kind, B, D, seed, dtype)
    t = feats('random', B, D, seed + 1, dtype)[0] if text else None
    scale = torch.tensor(math.log(1 / tau), dtype=dtype, requires_grad=True)
    out = assert_finite_grads(lambda x, y: hcl_multimodal(x, y, scale.exp(), beta, tau_plus, f_t=t, beta_on=beta_on), a, b)
    assert out['loss'] >= 0 and torch.isfinite(scale.grad)

@SETTINGS
@given(**batch, beta=beta_st, tau=tau_st, tau_plus=tau_plus_st)
def test_hcl_simclr_finite(kind, B, D, seed, dtype, beta, tau, tau_plus):
    a, b = feats(kind, B, D, seed, dtype)
    assert assert_finite_grads(lambda x, y: hcl_simclr(x, y, tau, beta, tau_plus), a, b)['loss'] >= 0

@SETTINGS
@given(**batch, tau=tau_st, text=st.booleans())
def test_info_nce_and_trimodal_finite(kind, B, D, seed, dtype, tau, text):
    a, b = feats(kind, B, D, seed, dtype)
    assert_finite_grads(lambda x, y: info_nce(x, y, 1 / tau), a, b)
    t = feats('random', B, D, seed + 1, dtype)[0] if text else None
    out = assert_finite_grads(lambda x, y: clip_loss_trimodal(x, y, t, 1 / tau), a, b)
    assert ('loss_pt' in out) == text
    assert_finite_grads(lambda x, y: nt_xent(x, y, tau), a, b)

def ref_hcl_direction(cos, scale, beta, tau_plus, q, beta_on):
    "Per-anchor reference of one HCL direction (float64 Python)."
    B, out = len(cos), []
    for i in range(B):
        pos = math.exp(scale * cos[i][i])
        js = [j for j in range(B) if j != i]
        w = [math.exp(beta * (scale * cos[i][j] if beta_on == 'logits' else cos[i][j])) for j in js]
        e_q = sum(wj * math.exp(scale * cos[i][j]) for wj, j in zip(w, js)) / sum(w)
        ng = max((q * e_q - tau_plus * q * pos) / (1 - tau_plus), q * math.exp(-scale))
        out.append(-math.log(pos / (pos + ng)))
    return sum(out) / B

@SETTINGS
@given(kind=st.sampled_from(['random', 'near', 'antipodal']), B=st.integers(2, 6), D=st.integers(2, 8), seed=st.integers(0, 2**16),
       beta=st.floats(0., 4.), tau=st.floats(0.05, 1.), tau_plus=tau_plus_st, beta_on=st.sampled_from(['logits', 'cosine']))
def test_hcl_multimodal_matches_reference(kind, B, D, seed, beta, tau, tau_plus, beta_on):
    a, b = feats(kind, B, D, seed, torch.float64)
    cos = (a @ b.T).tolist()
    want = (ref_hcl_direction(cos, 1 / tau, beta, tau_plus, B - 1, beta_on)
            + ref_hcl_direction([list(r) for r in zip(*cos)], 1 / tau, beta, tau_plus, B - 1, beta_on)) / 2
    got = hcl_multimodal(a, b, 1 / tau, beta, tau_plus, beta_on=beta_on)['loss'].item()
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)

@SETTINGS
@given(kind=st.sampled_from(['random', 'near', 'collapsed']), B=st.integers(2, 5), D=st.integers(2, 8), seed=st.integers(0, 2**16),
       beta=st.floats(0., 4.), tau=st.floats(0.05, 1.), tau_plus=tau_plus_st)
def test_hcl_simclr_matches_reference(kind, B, D, seed, beta, tau, tau_plus):
    a, b = feats(kind, B, D, seed, torch.float64)
    z = torch.cat([a, b]).tolist()
    n, losses = 2 * B - 2, []
    dot = lambda u, v: sum(x * y for x, y in zip(u, v))
    for i in range(2 * B):
        p = (i + B) % (2 * B)
        pos = math.exp(dot(z[i], z[p]) / tau)
        negs = [math.exp(dot(z[i], z[j]) / tau) for j in range(2 * B) if j not in (i, p)]
        imp = [g ** beta for g in negs]
        ng = max((-tau_plus * n * pos + sum(w * g for w, g in zip(imp, negs)) / (sum(imp) / n)) / (1 - tau_plus), n * math.exp(-1 / tau))
        losses.append(-math.log(pos / (pos + ng)))
    assert hcl_simclr(a, b, tau, beta, tau_plus)['loss'].item() == pytest.approx(sum(losses) / len(losses), rel=1e-9, abs=1e-9)

@SETTINGS
@given(**batch, tau=tau_st)
def test_special_cases(kind, B, D, seed, dtype, tau):
    "β = 0, τ⁺ = 0 reduces HCL to InfoNCE (multi-modal) and NT-Xent (SimCLR)."
    a, b = feats(kind, B, D, seed, torch.float64)
    assert hcl_multimodal(a, b, 1 / tau, 0.)['loss'].item() == pytest.approx(info_nce(a, b, 1 / tau)['loss'].item(), rel=1e-10, abs=1e-10)
    assert hcl_simclr(a, b, tau, 0., 0.)['loss'].item() == pytest.approx(nt_xent(a, b, tau)['loss'].item(), rel=1e-10, abs=1e-10)

@SETTINGS
@given(Bq=st.integers(1, 5), extra=st.integers(0, 4), n_cat=st.integers(1, 3), seed=st.integers(0, 2**16),
       scale=st.floats(0.01, 100.), tau=st.floats(0.01, 1.), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_cmic_finite(Bq, extra, n_cat, seed, scale, tau, dtype):
    g = torch.Generator().manual_seed(seed)
    Bs = Bq + extra
    scores = (scale * torch.randn(Bq, Bs, generator=g)).to(dtype)
    shape_cat = torch.randint(n_cat, (Bs,), generator=g)
    target = torch.randperm(Bs, generator=g)[:Bq]
    out = assert_finite_grads(lambda s: cmic_losses(s, target, shape_cat[target], shape_cat, tau=tau), scores)
    if shape_cat.unique().numel() == 1: assert out['loss_cat'].item() == 0

@SETTINGS
@given(B=st.integers(2, 5), K=st.integers(2, 16), seed=st.integers(0, 2**16), tau=tau_st, sat=st.floats(0.1, 50.),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_hash_losses_finite(B, K, seed, tau, sat, dtype):
    "Relaxed codes from barely-moved to fully saturated tanh (|h| = 1 exactly in float32)."
    g = torch.Generator().manual_seed(seed)
    x, y = (sat * torch.randn(B, K, generator=g)).to(dtype), (sat * torch.randn(B, K, generator=g)).to(dtype)
    assert_finite_grads(lambda u, v: hash_contrastive(torch.tanh(u), torch.tanh(v), tau), x, y)
    out = assert_finite_grads(lambda u, v: cmah_losses(torch.tanh(u), torch.tanh(v), tau, torch.tanh(0.5 * u), torch.tanh(0.5 * v)), x, y)
    assert 0 <= out['loss_quant'].item() <= 1

@SETTINGS
@given(B=st.integers(1, 3), N=st.integers(1, 8), M=st.integers(1, 8), seed=st.integers(0, 2**16), dup=st.booleans(), squared=st.booleans())
def test_chamfer_finite_and_symmetric(B, N, M, seed, dup, squared):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(B, N, 3, generator=g, dtype=torch.float64)
    q = p[:, :1].expand(B, M, 3).clone() if dup else torch.randn(B, M, 3, generator=g, dtype=torch.float64)  # coincident points
    p_, q_ = p.clone().requires_grad_(), q.clone().requires_grad_()
    d = chamfer_distance(p_, q_, squared=squared)
    d.sum().backward()
    assert d.shape == (B,) and torch.isfinite(d).all() and (d >= 0).all()
    assert torch.isfinite(p_.grad).all() and torch.isfinite(q_.grad).all()
    assert torch.allclose(d, chamfer_distance(q, p, squared=squared))
    assert torch.allclose(chamfer_distance(p, p), torch.zeros(B, dtype=torch.float64), atol=1e-12)

@SETTINGS
@given(B=st.integers(1, 3), L=st.integers(1, 6), P=st.integers(2, 6), seed=st.integers(0, 2**16), norm=st.booleans())
def test_masked_patch_mse(B, L, P, seed, norm):
    g = torch.Generator().manual_seed(seed)
    pred, target = torch.randn(B, L, P, generator=g), torch.randn(B, L, P, generator=g)
    mask = torch.rand(B, L, generator=g) < 0.5
    mask[0, 0] = True
    out = masked_patch_mse(pred, target, mask, norm_target=norm)
    assert torch.isfinite(out) and out >= 0
    # unmasked patches do not matter
    assert torch.allclose(out, masked_patch_mse(torch.where(mask[..., None], pred, torch.zeros_like(pred)), target, mask, norm_target=norm))

@SETTINGS
@given(kind=st.sampled_from(BetaSchedule.KINDS), b0=st.floats(0., 10.), b1=st.floats(0., 10.), stages=st.integers(1, 12),
       total=st.integers(1, 500))
def test_beta_schedule_invariants(kind, b0, b1, stages, total):
    lo, hi = min(b0, b1), max(b0, b1)
    beta, beta_end = {'anneal_up': (lo, hi), 'anneal_down': (hi, lo)}.get(kind, (b0, b1))
    if kind.startswith('anneal') and stages < 2:
        with pytest.raises(ValueError, match='needs stages >= 2'): BetaSchedule(kind=kind, beta=beta, beta_end=beta_end, stages=stages)
        return
    sch = BetaSchedule(kind=kind, beta=beta, beta_end=beta_end, stages=stages)
    vals = [sch(s, total) for s in range(total)]
    assert all(math.isfinite(v) and min(beta, beta_end) - 1e-12 <= v <= max(beta, beta_end) + 1e-12 for v in vals)
    assert vals[0] == pytest.approx(beta)
    diffs = [v1 - v0 for v0, v1 in zip(vals, vals[1:])]
    if kind == 'anneal_up': assert all(d >= -1e-12 for d in diffs)
    if kind == 'anneal_down': assert all(d <= 1e-12 for d in diffs)
    if kind == 'constant': assert len(set(vals)) == 1
    if kind == 'linear' and total > 1: assert vals[-1] == pytest.approx(beta_end)
    if kind == 'anneal_up' and total >= stages: assert vals[-1] == pytest.approx(beta_end) and len(set(vals)) <= stages
    assert BetaSchedule.from_yaml(sch.to_yaml()) == sch

def test_gradcheck_double():
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(2))
    ls = torch.tensor(math.log(5.), dtype=torch.float64, requires_grad=True)
    n = lambda v: F.normalize(v, dim=-1)
    assert torch.autograd.gradcheck(lambda a, b, s: hcl_multimodal(n(a), n(b), s.exp(), 3., 0.3)['loss'], (x, y, ls))
    assert torch.autograd.gradcheck(lambda a, b: hcl_simclr(n(a), n(b), 0.2, 4., 0.4)['loss'], (x, y))
    assert torch.autograd.gradcheck(lambda a, b, s: info_nce(n(a), n(b), s.exp())['loss'], (x, y, ls))

def test_logit_scale_gradient_and_cap():
    ls = LogitScale()
    a, b = feats('random', 4, 8, 0, torch.float32)
    hcl_multimodal(a, b, ls, 1.0, 0.1)['loss'].backward()
    assert ls.logit_scale.grad is not None and torch.isfinite(ls.logit_scale.grad)
    with torch.no_grad(): ls.logit_scale.fill_(20.)
    assert ls().item() == 100.

def test_half_precision_inputs_are_computed_in_float32():
    a, b = feats('random', 4, 8, 0, torch.float32)
    full = hcl_multimodal(a, b, 50., 5., 0.2)['loss']
    half = hcl_multimodal(a.bfloat16(), b.bfloat16(), 50., 5., 0.2)['loss']
    assert half.dtype == torch.float32 and torch.isfinite(half) and abs(half.item() - full.item()) < 0.5

@pytest.mark.parametrize('call, msg', [
    (lambda a, b: hcl_multimodal(a[:1], b[:1], 14., 1.), 'batch size 1 < 2'),
    (lambda a, b: hcl_multimodal(a, b[:3], 14., 1.), 'same (B, D) shape'),
    (lambda a, b: hcl_multimodal(a, b, 14., 1., tau_plus=0.5 * 2), 'tau_plus must be in [0, 1)'),
    (lambda a, b: hcl_multimodal(a, b, 14., float('nan')), 'beta must be a finite number'),
    (lambda a, b: hcl_multimodal(a, b, torch.ones(2), 1.), 'logit_scale: expected a scalar'),
    (lambda a, b: hcl_multimodal(a, b, 14., 1., q=0), 'q must be > 0'),
    (lambda a, b: hcl_simclr(a, b, temperature=0.), 'temperature must be > 0'),
    (lambda a, b: info_nce(a[0], b, 14.), 'a: expected a (B, D) feature tensor'),
    (lambda a, b: hash_contrastive(a, b, 0.), 'temperature must be > 0'),
    (lambda a, b: cmic_losses(a @ b.T, torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)), 'inst_target must be a (4,) long tensor'),
    (lambda a, b: BetaSchedule(kind='anneal_down', beta=0.5, beta_end=2.), 'anneal_down needs beta_end <= beta'),
    (lambda a, b: BetaSchedule()(-1, 10), 'need step >= 0'),
])
def test_bad_input_errors(call, msg):
    a, b = feats('random', 4, 8, 0, torch.float32)
    with pytest.raises(ValueError) as e: call(a, b)
    assert msg in str(e.value)
