"""Real-data mode: a tiny Pix3D (and a tiny CMIC car set) written in the exact on-disk layout by
`write_tiny_pix3d`, built into benchmarks of the generated format, cached, broken in the ways real files
break, and trained on for a few steps."""
import re, json, logging, argparse
from pathlib import Path
import numpy as np
import pytest

import ibsr_nb.data as data
from ibsr_nb.data import (DatasetError, Benchmark, RealBenchmarkSpec, load_benchmark, real_benchmark_spec, write_tiny_pix3d,
                          load_real_mesh)
from ibsr_nb.pointclouds import sample_points
from ibsr_nb.shapes import make_shape, mesh_hash

SHAPES = [f'{c}/{c}_{k:02d}' for c in ('chair', 'sofa', 'table') for k in range(2)]

@pytest.fixture
def tiny(tmp_path):
    "A data root holding pix3d/ (3 categories x 2 shapes x 3 photos, CMIC split files), and an empty cache root."
    write_tiny_pix3d(tmp_path/'data'/'pix3d')
    return tmp_path/'data', tmp_path/'cache'

def _load(name, data_root, cache, **kw):
    return load_benchmark(name, quick=kw.pop('quick', True), data_root=data_root, root=cache, **kw)

@pytest.fixture
def ibsr_log(caplog):
    "Capture the `ibsr_nb` logger (it does not propagate to the root logger that caplog listens on)."
    log = logging.getLogger('ibsr_nb'); log.addHandler(caplog.handler)
    yield caplog
    log.removeHandler(caplog.handler)

def _cached_entries(cache: Path):
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith('.lock')) if cache.exists() else []

# ---------------------------------------------------------------- the benchmark

def test_arrays_tables_and_cmic_split(tiny):
    root, cache = tiny
    b = _load('pix3d', root, cache)
    assert b.spec.split == 'cmic' and isinstance(b.spec, RealBenchmarkSpec)
    assert list(b.shapes['shape_id']) == SHAPES
    assert b.points.shape == (6, 1024, 6) and b.points.dtype == np.float32
    assert b.views.shape == (6, 12, 64, 64, 3) and b.views.dtype == np.uint8
    assert b.gray_views.shape == (6, 12, 64, 64) and b.gray_views.dtype == np.uint8
    assert b.images.shape == (18, 96, 96, 3) and b.images.dtype == np.uint8
    assert b.masks.shape == (18, 96, 96) and b.masks.dtype == np.bool_
    assert b.queries['split'].value_counts().to_dict() == {'train': 12, 'test': 6}
    # the splits are the CMIC files: the test queries are exactly the records of pix3d_test.json
    test_recs = json.loads((root/'pix3d'/'pix3d_test.json').read_text())
    t = b.queries[b.queries['split'] == 'test']
    assert list(t['img']) == [r['img'] for r in test_recs] and set(t['source']) == {'pix3d_test.json'}
    assert list(t['record']) == list(range(len(test_recs)))
    assert list(b.shapes['shape_id'].to_numpy()[t['shape_idx']]) == [f"{r['category']}/{Path(r['model']).parent.name}" for r in test_recs]
    # CMIC's protocol: the gallery is every shape, for train and test queries
    assert len(b.gallery('test')) == len(b.gallery('train')) == 6 and set(b.shapes['split']) == {'train'}
    # the columns downstream code reads, as in a generated benchmark
    gen = load_benchmark('pix3d-like', spec=data.BenchmarkSpec(categories=('chair',), instances=2, train_queries=1, test_queries=1,
                                                                n_points=32, image_size=16, view_size=16, n_views=2), root=cache)
    assert set(gen.shapes.columns) <= set(b.shapes.columns)
    assert {'query_id', 'shape_idx', 'category', 'split'} <= set(b.queries.columns)
    assert (b.queries['category'].to_numpy() == b.shapes['category'].to_numpy()[b.queries['shape_idx']]).all()
    # the meshes went to Pix3D's frame (front -z) and back: the same points and renders as the procedural shapes
    np.testing.assert_allclose(b.points[2], sample_points(make_shape('sofa', 0).mesh, 1024, seed=0), atol=1e-4)
    assert b.masks.any(axis=(1, 2)).all() and (~b.masks).any(axis=(1, 2)).all()

def test_quick_caps_and_full_sizes(tmp_path):
    write_tiny_pix3d(tmp_path/'pix3d', categories=('chair',), instances=7, photos=4)
    quick = _load('pix3d', tmp_path, tmp_path/'cache')                     # quick stand-in: 5 shapes per category, 2 + 2 photos
    assert len(quick.shapes) == 5 and quick.queries.groupby(['shape_idx', 'split']).size().max() == 2
    assert quick.queries['split'].value_counts().to_dict() == {'train': 10, 'test': 5}
    full = _load('pix3d', tmp_path, tmp_path/'cache', quick=False)
    assert len(full.shapes) == 7 and len(full.queries) == 28
    assert full.points.shape[1:] == (2048, 6) and full.images.shape[1:] == (128, 128, 3) and full.views.shape[1:] == (12, 96, 96, 3)

def test_fallback_split_is_seeded_and_warns(tmp_path, ibsr_log):
    write_tiny_pix3d(tmp_path/'pix3d', prefix=None)
    b = _load('pix3d', tmp_path, tmp_path/'cache', quick=False)
    assert b.spec.split == 'random' and b.queries['split'].value_counts().to_dict() == {'train': 14, 'test': 4}
    assert 'not comparable with published ones' in ibsr_log.text and 'pix3d_train.json' in ibsr_log.text
    again = _load('pix3d', tmp_path, tmp_path/'cache2', quick=False)
    other = _load('pix3d', tmp_path, tmp_path/'cache', quick=False, seed=1)
    assert list(again.queries['split']) == list(b.queries['split']) != list(other.queries['split'])
    assert len(b.gallery('test')) == 6

def test_half_a_cmic_split_is_an_error(tiny):
    root, cache = tiny
    (root/'pix3d'/'pix3d_test.json').unlink()
    with pytest.raises(DatasetError, match='found pix3d_train.json but not pix3d_test.json'): _load('pix3d', root, cache)

def test_car_set_and_data_root_forms(tmp_path, monkeypatch):
    cars = write_tiny_pix3d(tmp_path/'stanfordcars', categories=('car',), instances=4, prefix='StanfordCars', index=False)
    a = _load('stanford-cars', tmp_path, tmp_path/'cache')                  # the parent of the dataset folder
    b = _load('stanford-cars', cars, tmp_path/'cache')                      # the dataset folder itself
    monkeypatch.setenv('IBSR_DATA_ROOT', str(tmp_path))
    c = load_benchmark('stanford-cars', quick=True, root=tmp_path/'cache')   # $IBSR_DATA_ROOT
    assert a.root == b.root == c.root and len(a.shapes) == 4 and set(a.shapes['category']) == {'car'}
    assert a.spec.split == 'cmic' and a.queries['split'].value_counts().to_dict() == {'train': 8, 'test': 4}

# ---------------------------------------------------------------- the cache

def test_second_load_reads_the_cache(tiny, monkeypatch):
    root, cache = tiny
    b = _load('pix3d', root, cache)
    assert b.manifest['data']['files'].keys() == {'pix3d_train.json', 'pix3d_test.json'}
    def no_build(*a, **k): raise AssertionError('rebuilt instead of reading the cache')
    monkeypatch.setattr(data, 'build_real_benchmark', no_build)
    again = _load('pix3d', root, cache)
    assert again.root == b.root and again.manifest['created'] == b.manifest['created']
    np.testing.assert_array_equal(again.images, b.images)
    assert Benchmark.load(b.root).spec == b.spec                             # the real spec comes back from the manifest
    # an edited split file is a new benchmark, built anew
    monkeypatch.undo()
    recs = json.loads((root/'pix3d'/'pix3d_test.json').read_text())
    (root/'pix3d'/'pix3d_test.json').write_text(json.dumps(recs[:-1]))
    edited = _load('pix3d', root, cache)
    assert edited.root != b.root and len(edited.query_rows('test')) == 5
    # a spec made from other files is refused
    with pytest.raises(DatasetError, match='differ from the ones the spec was made from'):
        load_benchmark('pix3d', spec=b.spec, data_root=root, root=cache)

# ---------------------------------------------------------------- errors

def test_missing_data_root_says_what_to_put_where(monkeypatch, tmp_path):
    monkeypatch.delenv('IBSR_DATA_ROOT', raising=False)
    with pytest.raises(DatasetError) as e: load_benchmark('pix3d', quick=True, root=tmp_path)
    msg = str(e.value)
    assert 'no data root is set' in msg and 'IBSR_DATA_ROOT' in msg
    assert 'pix3d.json, img/, mask/, model/' in msg and 'http://pix3d.csail.mit.edu/' in msg and 'CMIC-Retrieval' in msg
    with pytest.raises(DatasetError, match='no pix3d.json or pix3d_train.json'): load_benchmark('pix3d', data_root=tmp_path, root=tmp_path)
    with pytest.raises(DatasetError, match='data root not found'): load_benchmark('comp-cars', data_root=tmp_path/'nowhere', root=tmp_path)
    with pytest.raises(ValueError, match="unknown benchmark 'pix4d'"): load_benchmark('pix4d')

def test_missing_car_mesh_is_named(tmp_path):
    cars = write_tiny_pix3d(tmp_path/'stanfordcars', categories=('car',), instances=3, prefix='StanfordCars', index=False)
    gone = cars/'model'/'car'/'car_01'/'model.obj'; gone.unlink()
    with pytest.raises(DatasetError) as e: _load('stanford-cars', tmp_path, tmp_path/'cache')
    msg = str(e.value)
    assert f'mesh file not found: {gone}' in msg and 'point-cloud methods need the meshes' in msg
    assert 'StanfordCars_train.json record 2' in msg and 'CMIC ships only renderings' in msg
    assert _cached_entries(tmp_path/'cache') == []

def test_corrupt_image_names_file_and_record(tiny):
    root, cache = tiny
    rec = json.loads((root/'pix3d'/'pix3d_test.json').read_text())[3]
    img = root/'pix3d'/rec['img']
    img.write_bytes(img.read_bytes()[:80])
    with pytest.raises(DatasetError) as e: _load('pix3d', root, cache)
    assert f"pix3d_test.json record 3: {img}: truncated or corrupt image" in str(e.value)
    img.write_text('not a png')
    with pytest.raises(DatasetError, match=f'record 3: {img}: not a readable image'): _load('pix3d', root, cache)
    assert _cached_entries(cache) == []

def test_unreadable_mask_and_bad_bbox(tiny):
    root, cache = tiny
    recs = json.loads((root/'pix3d'/'pix3d_train.json').read_text())
    (root/'pix3d'/recs[5]['mask']).write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    with pytest.raises(DatasetError, match=r"pix3d_train.json record 5: .*" + re.escape(recs[5]['mask'])): _load('pix3d', root, cache)
    write_tiny_pix3d(root/'pix3d')                                           # repair
    recs[2]['bbox'] = [10, 5, 80, 40]                                        # the photos are 64 x 48
    (root/'pix3d'/'pix3d_train.json').write_text(json.dumps(recs))
    with pytest.raises(DatasetError, match=r"pix3d_train.json record 2: bbox \[10, 5, 80, 40\] lies outside the 64x48 image"):
        _load('pix3d', root, cache)
    assert _cached_entries(cache) == []

def test_empty_mesh_names_file_and_record(tiny):
    root, cache = tiny
    mesh = root/'pix3d'/'model'/'table'/'table_01'/'model.obj'
    mesh.write_text('')
    with pytest.raises(DatasetError) as e: _load('pix3d', root, cache)
    assert 'pix3d_train.json record' in str(e.value) and str(mesh) in str(e.value) and 'no triangle meshes' in str(e.value)
    assert _cached_entries(cache) == []

def test_mask_of_another_size_is_resized_with_a_warning(tiny, ibsr_log):
    root, cache = tiny
    from PIL import Image
    rec = json.loads((root/'pix3d'/'pix3d_test.json').read_text())[0]
    m = root/'pix3d'/rec['mask']
    Image.open(m).resize((32, 24)).save(m)
    b = _load('pix3d', root, cache)
    assert f"mask {m} is 32x24 but its photo 64x48; resized the mask" in ibsr_log.text and b.masks.shape == (18, 96, 96)

# ---------------------------------------------------------------- Benchmark.shape

def test_shape_reads_the_mesh(tiny):
    root, cache = tiny
    b = _load('pix3d', root, cache)
    for i in (0, 5):
        s = b.shape(i)
        assert mesh_hash(s.mesh) == b.shapes['mesh_hash'][i] and s.category == b.shapes['category'][i]
        assert len(s.mesh.faces) == len(make_shape(s.category, i % 2).mesh.faces) and len(s.part_ids) == len(s.mesh.faces)
    assert np.allclose(b.shape(0).mesh.bounds, make_shape('chair', 0).mesh.bounds, atol=1e-6)   # our frame and scale again
    with pytest.raises(DatasetError, match='load the benchmark with data_root='): Benchmark.load(b.root).shape(0)
    assert len(load_real_mesh(root/'pix3d'/b.shapes['model'][0]).faces) == len(make_shape('chair', 0).mesh.faces)

# ---------------------------------------------------------------- training and evaluation on it

def test_train_and_evaluate_smoke(tiny, tmp_path, monkeypatch, capsys):
    from ibsr_nb.model import TrainConfig
    from ibsr_nb.train import train, evaluate
    from ibsr_nb.cli import main as cli_main
    root, _ = tiny
    monkeypatch.setenv('IBSR_HOME', str(tmp_path/'home'))
    monkeypatch.delenv('IBSR_DATA_ROOT', raising=False)
    assert 'data_root' not in TrainConfig().to_dict()                        # unset: existing config hashes unchanged
    cfg = TrainConfig(mode='scratch', benchmark='pix3d', data_root=str(root), quick=True, point_encoder='ppat-tiny-s', batch_size=4,
                      steps=3, eval_every=3, save_every=3, log_every=1, warmup_steps=1, n_points=256)
    s = train(cfg, tmp_path/'run')
    assert s['completed'] and s['step'] == 3 and s['train_shapes'] == 6
    assert TrainConfig.load(tmp_path/'run'/'config.yaml').data_root == str(root)
    table = evaluate(tmp_path/'run', 'pix3d')                                 # data_root from the run's config
    assert int(table.loc['Total', 'n_queries']) == 6 and 0 <= table.loc['Total', 'acc@1'] <= 1
    assert cli_main(['evaluate', str(tmp_path/'run'), '--benchmark', 'pix3d', '--data-root', str(root)]) == 0
    assert 'Total' in capsys.readouterr().out
    assert cli_main(['train', '--resume', str(tmp_path/'run'), '--data-root', str(tmp_path)]) == 2   # another data root is refused
    assert re.search(r'other settings \(data_root\)', capsys.readouterr().err)
