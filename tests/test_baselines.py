"""The CMIC and CMAH baselines on inputs the notebooks do not show: CMIC's data layout written by hand (json splits,
images and masks on disk, the rendering pickle) loaded end to end through a few training steps and an evaluation, the
ways those files break, property tests of the batched view attention, the distinct-shape batches and the Hamming search,
and both baselines on a tiny in-memory benchmark."""
import json, pickle
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from hypothesis import given, settings, strategies as st, HealthCheck

from ibsr_nb.core import UnsafePickleError, set_seed
from ibsr_nb.data import DatasetError, Benchmark, BenchmarkSpec
from ibsr_nb.baselines.cmic import (CMICData, CMICTrainConfig, ViewAttention, cmic_batches, create_cmic, train_cmic,
                                    evaluate_cmic, cmic_scores, export_cmic_layout)
from ibsr_nb.baselines.cmah import (CMAHTrainConfig, create_cmah, train_cmah, evaluate_cmah, hamming_search,
                                    cmah_report, cmic_report, comparison_table)

# ---------------------------------------------------------------- CMIC's layout, written by hand

CATS = {'chair': ['IKEA_A', 'IKEA_B', 'IKEA_C'], 'table': ['IKEA_T1', 'IKEA_T2']}

def _png(path: Path, arr: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True); Image.fromarray(arr).save(path)

def write_cmic(root: Path, size: int = 40, views=None, records_fn=None) -> Path:
    """A tiny CMIC data folder in the layout that IGLICT/CMIC-Retrieval reads (its code/configs/pix3d.yaml and
    code/datasets/*.py): img/, mask/, mask_ocrnet/, pix3d_{train,test}.json (Pix3D schema), rendering_pix3d.pkl
    ({category: {instance: 12 grayscale views}})."""
    rng = np.random.default_rng(0)
    recs = {'train': [], 'test': []}
    k = 0
    for cat, insts in CATS.items():
        for inst in insts:
            for split in ('train', 'train', 'test'):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                mask = np.zeros((size, size), np.uint8); mask[5:30, 8 + k % 5:32] = 255
                name = f'{k:04d}.png'
                _png(root/'img'/cat/name, img); _png(root/'mask'/cat/name, mask)
                _png(root/'mask_ocrnet'/cat/name, 255 - mask)           # predicted masks: different on purpose
                recs[split].append({'img': f'img/{cat}/{name}', 'mask': f'mask/{cat}/{name}', 'category': cat,
                                    'model': f'model/{cat}/{inst}/model.obj', 'bbox': [8, 5, 32, 30],
                                    'img_size': [size, size], 'truncated': False, 'occluded': False})
                k += 1
    if records_fn is not None: recs = records_fn(recs)
    for split, rs in recs.items(): (root/f'pix3d_{split}.json').write_text(json.dumps(rs))
    if views is None:   # one category stored as uint8 (V, H, W), the other as float (V, H, W, 1) in [0, 1], as pickles vary
        views = {'chair': {i: rng.integers(0, 256, (12, 24, 24), dtype=np.uint8) for i in CATS['chair']},
                 'table': {i: rng.random((12, 24, 24, 1)).astype(np.float32) for i in CATS['table']}}
    with open(root/'rendering_pix3d.pkl', 'wb') as f: pickle.dump(views, f)
    return root

@pytest.fixture
def cmic_root(tmp_path): return write_cmic(tmp_path/'pix3d')

def test_cmic_layout_end_to_end(cmic_root):
    data = CMICData.from_cmic(cmic_root, 'pix3d', image_size=32, view_size=32, train_mask_dir='mask_ocrnet')
    test_rows, train_rows = data.rows('test'), data.rows('train')
    assert (len(train_rows), len(test_rows), len(data.shapes)) == (10, 5, 5)
    assert data.images.shape == (15, 32, 32, 3) and data.views.shape == (5, 12, 32, 32) and data.views.dtype == np.uint8
    # each query points at its model's (category, instance): the second-to-last component of `model`
    recs = json.loads((cmic_root/'pix3d_test.json').read_text())
    ids = data.shapes['shape_id'].to_numpy()[data.query_shape[test_rows]]
    assert list(ids) == [f"{r['category']}/{r['model'].split('/')[-2]}" for r in recs]
    # training masks come from mask_ocrnet (inverted here), test masks from `mask` as the json says
    assert data.masks[train_rows].mean() > 0.5 > data.masks[test_rows].mean()
    set_seed(0)
    model = create_cmic('cmic-tiny')
    log = train_cmic(model, data, CMICTrainConfig.quick(steps=3, batch_size=4, log_every=1), show_progress=False)
    assert list(log['step']) == [1, 2, 3] and np.isfinite(log[['loss', 'loss_inst', 'loss_cat']].to_numpy()).all()
    scores = cmic_scores(model, data)
    assert scores.shape == (5, 5) and np.isfinite(scores).all()
    table = evaluate_cmic(model, data)
    assert table.loc['Total', 'n_queries'] == 5 and set(table.index) == {'chair', 'table', 'Total'}
    assert {'acc@1', 'acc@10', 'cat_acc', 'map@10'} <= set(table.columns)
    assert table.loc['Total', 'acc@10'] == 1.0                          # 5 shapes: every GT is in the top 10

def test_cmic_layout_explicit_pickle_and_sizes(cmic_root):
    other = cmic_root.parent/'elsewhere.pkl'
    (cmic_root/'rendering_pix3d.pkl').rename(other)
    with pytest.raises(FileNotFoundError, match='rendering_pix3d.pkl'): CMICData.from_cmic(cmic_root, 'pix3d')
    data = CMICData.from_cmic(cmic_root, 'pix3d', rendering=other)     # no resizing: stored sizes kept
    assert data.images.shape[1:] == (40, 40, 3) and data.views.shape[2:] == (24, 24)

def _drop_record_shape(recs):
    recs['test'][1]['model'] = 'model/chair/IKEA_MISSING/model.obj'; return recs

@pytest.mark.parametrize('make,exc,msg', [
    (lambda r: write_cmic(r, records_fn=_drop_record_shape), DatasetError, "pix3d_test.json record 1: shape 'chair/IKEA_MISSING'"),
    (lambda r: write_cmic(r, views={'chair': {'IKEA_A': np.zeros((11, 8, 8), np.uint8)}}), DatasetError, 'expected 12 grayscale views'),
    (lambda r: write_cmic(r, views=[np.zeros((12, 8, 8))]), DatasetError, 'expected {category: {instance: views}}'),
    (lambda r: write_cmic(r, records_fn=lambda recs: {**recs, 'test': [{**recs['test'][0], 'img': '../outside.png'}]}),
     DatasetError, 'escapes the dataset root'),
    (lambda r: write_cmic(r, records_fn=lambda recs: {'train': [], 'test': []}), DatasetError, 'hold no records'),
], ids=['shape-without-renders', 'eleven-views', 'not-a-dict', 'path-escape', 'empty-splits'])
def test_cmic_layout_errors_name_the_file(tmp_path, make, exc, msg):
    root = make(tmp_path/'pix3d')
    with pytest.raises(exc) as e: CMICData.from_cmic(root, 'pix3d', image_size=32, view_size=32)
    assert msg in str(e.value)

def test_cmic_pickle_with_code_is_refused(cmic_root):
    class Evil:
        def __reduce__(self): return (print, ('pwned',))
    with open(cmic_root/'rendering_pix3d.pkl', 'wb') as f: pickle.dump({'chair': {'IKEA_A': Evil()}}, f)
    with pytest.raises(UnsafePickleError, match='rendering_pix3d.pkl: refusing to unpickle builtins.print'):
        CMICData.from_cmic(cmic_root, 'pix3d')

def test_cmic_mask_and_image_size_mismatch(cmic_root):
    _png(cmic_root/'mask'/'chair'/'0002.png', np.zeros((20, 20), np.uint8))     # test record 0 of chair/IKEA_A
    with pytest.raises(DatasetError, match=r'0002.png: mask size \(20, 20\) differs from its image'):
        CMICData.from_cmic(cmic_root, 'pix3d', image_size=32)
    _png(cmic_root/'mask'/'chair'/'0002.png', np.zeros((40, 40), np.uint8))
    _png(cmic_root/'img'/'chair'/'0005.png', np.zeros((36, 36, 3), np.uint8)); _png(cmic_root/'mask'/'chair'/'0005.png', np.zeros((36, 36), np.uint8))
    with pytest.raises(DatasetError, match='pass image_size to resize'): CMICData.from_cmic(cmic_root, 'pix3d')
    assert CMICData.from_cmic(cmic_root, 'pix3d', image_size=32).images.shape[1:] == (32, 32, 3)

# ---------------------------------------------------------------- properties of the batched pieces

def _naive(att, q, h):
    W = att.W_a.weight.double(); out = torch.zeros(len(q), len(h), dtype=torch.float64)
    for i, qi in enumerate(q.double()):
        for s, hs in enumerate(h.double()):
            a = torch.softmax(hs @ (W.T @ qi), 0)             # q^T W h_v for every view
            out[i, s] = qi @ (a[:, None] * hs).sum(0)
    return out

@settings(max_examples=25, deadline=None)
@given(Q=st.integers(1, 5), S=st.integers(1, 6), V=st.integers(1, 12), D=st.integers(2, 9), tile=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_view_attention_equals_a_loop(Q, S, V, D, tile, seed):
    g = torch.Generator().manual_seed(seed)
    att = ViewAttention(D)
    with torch.no_grad(): att.W_a.weight.copy_(torch.randn(D, D, generator=g))
    q, h = torch.randn(Q, D, generator=g), torch.randn(S, V, D, generator=g)
    with torch.no_grad(): got = att(q, h, query_tile=tile)
    torch.testing.assert_close(got.double(), _naive(att, q, h), rtol=1e-4, atol=1e-4)

@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=st.lists(st.integers(0, 14), min_size=2, max_size=40), extra=st.integers(0, 5), B=st.integers(2, 12), seed=st.integers(0, 999))
def test_cmic_batches_hold_distinct_shapes(shapes, extra, B, seed):
    qshape = np.array(shapes); pool = np.arange(max(shapes) + 1 + extra)
    seen = []
    for qi, rows, target in cmic_batches(qshape, pool, B, np.random.default_rng(seed)):
        assert len(qi) == B and len(set(rows.tolist())) == len(rows) == min(B, len(pool))
        assert (rows[target] == qshape[qi]).all() and np.isin(rows, pool).all()
        seen += qi.tolist()
    assert len(seen) == len(set(seen)) == (len(qshape) // B) * B      # each query at most once per epoch

@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 40), Q=st.integers(1, 6), K=st.sampled_from([8, 16, 32, 64, 128]), seed=st.integers(0, 999))
def test_hamming_search_matches_brute_force(N, Q, K, seed):
    rng = np.random.default_rng(seed)
    db, qs = rng.standard_normal((N, K)), rng.standard_normal((Q, K))
    scores, idx, ix = hamming_search(db, qs, N)
    ham = ((db[None] > 0) != (qs[:, None] > 0)).sum(-1)                 # (Q, N)
    assert ix.kind == 'binary' and len(ix) == N
    np.testing.assert_array_equal(scores, np.sort(K - 2 * ham, 1)[:, ::-1])                  # the same multiset, best first
    np.testing.assert_array_equal(np.take_along_axis(K - 2 * ham, idx, 1), scores)          # and each index has its score

# ---------------------------------------------------------------- both baselines on a tiny in-memory benchmark

def tiny_benchmark(instance_split=False) -> Benchmark:
    "A Benchmark built from random arrays (no rendering): 2 categories x 4 shapes, 2 train + 1 test photo each."
    rng = np.random.default_rng(0)
    spec = BenchmarkSpec(name='pix3d-like', categories=('chair', 'table'), instances=4, train_queries=2, test_queries=1,
                         instance_split=instance_split, test_instances=1 if instance_split else 0, n_points=256, image_size=32, view_size=32)
    shapes, queries = [], []
    for c in spec.categories:
        for i in range(spec.instances):
            split = 'test' if instance_split and i == spec.instances - 1 else 'train'
            shapes.append(dict(shape_id=f'{c}/{c}_{i}', category=c, instance=f'{c}_{i}', caption=c, split=split, seed=i))
            plan = [split] * 3 if instance_split else ['train', 'train', 'test']
            queries += [dict(query_id=f'{c}/{c}_{i}/q{k}', shape_idx=len(shapes) - 1, category=c, split=s, seed=k) for k, s in enumerate(plan)]
    S, Q = len(shapes), len(queries)
    pts = np.concatenate([rng.standard_normal((S, 256, 3)) * 0.3, rng.random((S, 256, 3))], -1).astype(np.float32)
    return Benchmark(spec, pd.DataFrame(shapes), pd.DataFrame(queries), pts,
                     rng.integers(0, 256, (S, 12, 32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (S, 12, 32, 32), dtype=np.uint8),
                     rng.integers(0, 256, (Q, 32, 32, 3), dtype=np.uint8), rng.random((Q, 32, 32)) > 0.5)

def test_cmah_trains_and_evaluates_both_directions():
    bench = tiny_benchmark()
    set_seed(0)
    model = create_cmah('cmah-tiny', bits=16, n_points=128, groups=8, group_size=8)
    log = train_cmah(model, bench, CMAHTrainConfig(steps=2, batch_size=4, log_every=1), show_progress=False)
    assert len(log) == 2 and np.isfinite(log['loss']).all()
    t = evaluate_cmah(model, bench)
    assert t.loc[('image→points', 'Total'), 'n_queries'] == 8 and t.loc[('points→image', 'Total'), 'n_queries'] == 8
    rep = cmah_report(model, bench, t.loc['image→points'], train_s=1.0, large_gallery=100)
    assert (rep.values_per_shape, rep.bytes_per_shape, rep.gallery_size) == (16, 2.0, 8)
    assert rep.params_retrieval < rep.params                              # fusion and decoders are training-only

def test_instance_split_gallery_and_cost_table():
    bench = tiny_benchmark(instance_split=True)
    data = CMICData.from_benchmark(bench, 32, 32)
    assert list(data.gallery('test')) == [3, 7] and len(data.rows('test')) == 6
    set_seed(0)
    model = create_cmic('cmic-tiny')
    train_cmic(model, data, CMICTrainConfig.quick(steps=2, batch_size=4), show_progress=False)
    table = evaluate_cmic(model, data)
    assert table.loc['Total', 'n_queries'] == 6 and table.loc['Total', 'acc@10'] == 1.0
    t = comparison_table([cmic_report(model, data, table, train_s=2.0, large_gallery=50)])
    row = t.loc['CMIC']
    assert row['values/shape'] == 12 * 128 and row['bytes/shape'] == 4 * 12 * 128 and row['chance@1'] == 0.5
    assert row['search µs/query (G=50)'] > 0 and row['train s'] == 2.0

def test_export_layout_round_trip(tmp_path):
    bench = tiny_benchmark()
    root = export_cmic_layout(bench, tmp_path/'synthetic', name='Synthetic')
    assert (root/'Synthetic_train.json').exists() and (root/'rendering_synthetic.pkl').exists()
    a, b = CMICData.from_benchmark(bench), CMICData.from_cmic(root, 'Synthetic')
    order = [list(b.shapes['shape_id']).index(s) for s in a.shapes['shape_id']]
    np.testing.assert_array_equal(b.views[order], a.views)
    np.testing.assert_array_equal(np.sort(b.images.reshape(len(b.images), -1), 0), np.sort(a.images.reshape(len(a.images), -1), 0))
