"""Malformed and odd inputs for the data path: mesh files, point clouds, dataset JSON, CMIC pickles, images,
folders and the benchmark cache. Every bad input must give a clear error that names the file; odd-but-usable
images are converted. The notebooks show the happy paths; this file walks the many ways inputs break."""
import os, sys, json, pickle, subprocess, collections
from pathlib import Path
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from hypothesis import given, settings, strategies as st, HealthCheck
from hypothesis.extra.numpy import arrays

from ibsr_nb.core import UnsafePickleError
from ibsr_nb.shapes import make_shape, mesh_hash, CATEGORIES
from ibsr_nb.pointclouds import (MeshError, load_mesh, sample_points, normalize_pc, convert_up_axis, augment_points,
                                 MISSING_RGB)
from ibsr_nb.render import synth_query, render, Camera, color_transfer
from ibsr_nb.data import (DatasetError, BenchmarkSpec, load_benchmark, load_pix3d, load_cmic_split, load_cmic_renderings,
                          load_image, load_mask, MeshFolder, ImageFolder, safe_join)

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- mesh files

def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path

BAD_MESHES = [  # (file name, content, expected message fragment)
    ('corrupt.glb', b'glTF\x02\x00\x00\x00garbage that is not a gltf container', 'could not read the file as a mesh'),
    ('corrupt.off', 'OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n', 'could not read the file as a mesh'),
    ('empty.obj', b'', 'no triangle meshes'),
    ('empty_scene.gltf', '{"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": []}]}', 'no triangle meshes'),
    ('points_only.obj', 'v 0 0 0\nv 1 0 0\nv 0 1 0\n', 'point cloud without faces'),
    ('nan.obj', 'v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n', 'non-finite (NaN/inf)'),
    ('inf.obj', 'v 0 0 0\nv 1 0 0\nv inf 1 0\nf 1 2 3\n', 'non-finite (NaN/inf)'),
    ('zero_area.obj', 'v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\nf 1 1 2\n', 'surface area is zero'),
    ('model.fbx', b'Kaydara FBX Binary', 'unsupported mesh format'),
]

@pytest.mark.parametrize('name,content,msg', BAD_MESHES, ids=[b[0] for b in BAD_MESHES])
def test_bad_mesh_files_name_the_file(tmp_path, name, content, msg):
    p = _write(tmp_path/name, content)
    with pytest.raises(MeshError) as e: load_mesh(p)
    assert str(p) in str(e.value) and msg in str(e.value)

def test_missing_mesh_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.obj: mesh file not found'): load_mesh(tmp_path/'nope.obj')
    (tmp_path/'dir.obj').mkdir()
    with pytest.raises(MeshError, match='is a directory'): load_mesh(tmp_path/'dir.obj')

def test_point_cloud_ply_is_not_a_surface(tmp_path):
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(tmp_path/'cloud.ply')
    with pytest.raises(MeshError, match='cloud.ply: holds a point cloud without faces'): load_mesh(tmp_path/'cloud.ply')

def test_all_formats_round_trip_with_colours(tmp_path):
    shape = make_shape('chair', 1)
    for ext in ('obj', 'glb', 'ply', 'off', 'stl'):
        shape.mesh.export(tmp_path/f'chair.{ext}')
        m = load_mesh(tmp_path/f'chair.{ext}')
        np.testing.assert_allclose(m.area, shape.mesh.area, rtol=1e-5)
        pts = sample_points(m, 500)
        assert pts.shape == (500, 6) and np.isfinite(pts).all()
        if ext in ('glb', 'ply'):   # formats that keep colours: not all grey
            assert np.abs(pts[:, 3:] - MISSING_RGB).max() > 0.1, ext

def test_multi_texture_scene_keeps_each_texture(tmp_path):
    scene = trimesh.Scene()
    for k, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        box = trimesh.creation.box((1, 1, 1))
        box.visual = trimesh.visual.TextureVisuals(uv=np.full((8, 2), 0.5), image=Image.new('RGB', (4, 4), colour))
        scene.add_geometry(box, node_name=f'b{k}', transform=trimesh.transformations.translation_matrix([3 * k, 0, 0]))
    scene.export(tmp_path/'two.glb')
    pts = sample_points(load_mesh(tmp_path/'two.glb'), 400, normalize=False)
    left, right = pts[pts[:, 0] < 1.5], pts[pts[:, 0] > 1.5]
    np.testing.assert_allclose(left[:, 3:].mean(0), [1, 0, 0], atol=0.02)
    np.testing.assert_allclose(right[:, 3:].mean(0), [0, 0, 1], atol=0.02)

# ---------------------------------------------------------------- degenerate point inputs

def test_degenerate_meshes_in_memory():
    with pytest.raises(MeshError, match='no triangles'): sample_points(trimesh.Trimesh(np.zeros((3, 3)), np.zeros((0, 3), int)), 10)
    tri = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)
    with pytest.raises(ValueError, match='n must be >= 1'): sample_points(tri, 0)
    one = sample_points(tri, 1)
    assert one.shape == (1, 6) and np.isfinite(one).all()           # a single point is centred, not NaN
    bad = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]], [[0, 1, 2]], process=False)
    with pytest.raises(MeshError, match='non-finite'): sample_points(bad, 10)

def test_normalize_pc_rejects_degenerate_clouds():
    with pytest.raises(ValueError, match='need at least 2 points'): normalize_pc(np.zeros((0, 3)))
    with pytest.raises(ValueError, match='need at least 2 points'): normalize_pc(np.zeros((1, 6)))
    with pytest.raises(ValueError, match='all points coincide'): normalize_pc(np.ones((5, 3)))
    with pytest.raises(ValueError, match='NaN or inf'): normalize_pc(np.array([[0, 0, 0], [np.inf, 0, 0.]]))
    with pytest.raises(ValueError, match='NaN or inf'): normalize_pc(torch.tensor([[0, 0, 0], [float('nan'), 0, 0.]]))

finite = st.floats(-100, 100, allow_nan=False, width=32)

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(np.float32, st.tuples(st.integers(2, 50), st.just(6)), elements=finite))
def test_normalize_pc_properties(pts):
    spread = np.linalg.norm(pts[:, :3] - pts[:, :3].mean(0), axis=1).max()
    if spread < 1e-3: return                                           # near-coincident: rejected, tested above
    out = normalize_pc(pts)
    np.testing.assert_allclose(np.linalg.norm(out[:, :3], axis=1).max(), 1, rtol=1e-3)
    np.testing.assert_allclose(out[:, :3].mean(0), 0, atol=1e-3)
    np.testing.assert_array_equal(out[:, 3:], pts[:, 3:])

@settings(max_examples=30, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 30), st.just(6)), elements=finite), st.integers(0, 2**31))
def test_axis_swap_and_augment_properties(pts, seed):
    np.testing.assert_array_equal(convert_up_axis(convert_up_axis(pts, 'y', 'openshape-g14'), 'openshape-g14', 'y'), pts)
    aug = augment_points(pts, seed)
    assert aug.shape == pts.shape and aug.dtype == np.float32 and np.isfinite(aug).all()
    np.testing.assert_array_equal(aug, augment_points(pts, seed))

# ---------------------------------------------------------------- determinism across processes

def test_same_seed_same_bytes_in_a_fresh_process():
    "Meshes, points and query photos depend only on their seeds (not on PYTHONHASHSEED or process state)."
    code = ('from ibsr_nb.shapes import make_shape, mesh_hash; from ibsr_nb.pointclouds import sample_points; '
            'from ibsr_nb.render import synth_query; import hashlib; s = make_shape("sofa", 11); '
            'print(mesh_hash(s.mesh), hashlib.sha256(sample_points(s.mesh, 256, 3).tobytes()).hexdigest(), '
            'hashlib.sha256(synth_query(s, 2, 32)["rgb"].tobytes()).hexdigest())')
    there = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, check=True,
                           env={**os.environ, 'PYTHONHASHSEED': '12345'}).stdout
    import hashlib
    s = make_shape('sofa', 11)
    here = f"{mesh_hash(s.mesh)} {hashlib.sha256(sample_points(s.mesh, 256, 3).tobytes()).hexdigest()} {hashlib.sha256(synth_query(s, 2, 32)['rgb'].tobytes()).hexdigest()}\n"
    assert there == here

# ---------------------------------------------------------------- Pix3D / CMIC JSON

@pytest.fixture
def pix3d(tmp_path):
    "A two-record Pix3D folder in the exact layout."
    recs = []
    for d in ('img/chair', 'mask/chair'): (tmp_path/d).mkdir(parents=True)
    for k, inst in enumerate(['IKEA_A', 'IKEA_B']):
        Image.new('RGB', (6, 5), (k * 100, 0, 0)).save(tmp_path/f'img/chair/{k:04d}.png')
        Image.new('L', (6, 5), 255).save(tmp_path/f'mask/chair/{k:04d}.png')
        _write(tmp_path/f'model/chair/{inst}/model.obj', 'v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n')
        recs.append({'img': f'img/chair/{k:04d}.png', 'category': 'chair', 'mask': f'mask/chair/{k:04d}.png',
                     'model': f'model/chair/{inst}/model.obj', 'bbox': [0, 0, 5, 4], 'img_size': [6, 5]})
    return tmp_path, recs

BAD_RECORDS = [  # (transform of the records, message fragment)
    (lambda r: '{"img": ', 'not valid JSON'),
    (lambda r: {'records': r}, 'expected a list of records'),
    (lambda r: [r[0], 'not a record'], 'record 1: expected an object'),
    (lambda r: [{k: v for k, v in r[0].items() if k != 'img'}], "record 0: missing field 'img'"),
    (lambda r: [{**r[0], 'model': None}], "field 'model' must be a non-empty string"),
    (lambda r: [{**r[0], 'category': ''}], "field 'category' must be a non-empty string"),
    (lambda r: [{**r[0], 'img': '../outside.png'}], "path '../outside.png' escapes the dataset root"),
    (lambda r: [{**r[0], 'model': 'model/chair/../../../../etc/passwd/x.obj'}], 'escapes the dataset root'),
    (lambda r: [{**r[0], 'mask': '/etc/passwd'}], "absolute path '/etc/passwd' not allowed"),
    (lambda r: [{**r[0], 'img': 'img/chair/missing.png'}], 'img file not found'),
    (lambda r: [{**r[0], 'bbox': 'wide'}], "field 'bbox' must be"),
    (lambda r: [{**r[0], 'model': 'model.obj'}], "'model' must look like model/<category>/<instance>/<file>"),
]

@pytest.mark.parametrize('bad,msg', BAD_RECORDS, ids=range(len(BAD_RECORDS)))
def test_bad_pix3d_json(pix3d, bad, msg):
    root, recs = pix3d
    out = bad(recs)
    p = _write(root/'pix3d.json', out if isinstance(out, str) else json.dumps(out))
    with pytest.raises(DatasetError) as e: load_pix3d(p)
    assert str(p) in str(e.value) and msg in str(e.value)

def test_missing_json_and_good_splits(pix3d):
    root, recs = pix3d
    with pytest.raises(FileNotFoundError, match='pix3d_test.json: dataset file not found'): load_cmic_split(root, 'pix3d', 'test')
    _write(root/'pix3d_train.json', json.dumps(recs)); _write(root/'pix3d_test.json', json.dumps(recs[1:]))
    tab = load_cmic_split(root, 'pix3d', 'train')
    assert list(tab['instance']) == ['IKEA_A', 'IKEA_B'] and list(tab['shape_id']) == ['chair/IKEA_A', 'chair/IKEA_B']
    assert Path(tab['img_path'][1]).exists() and list(load_cmic_split(root, 'pix3d', 'test')['instance']) == ['IKEA_B']
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"): load_cmic_split(root, 'pix3d', 'val')

def test_safe_join_allows_inner_dotdot(tmp_path):
    assert safe_join(tmp_path, 'img/../img/a.png', 'x') == (tmp_path/'img/a.png').resolve()
    with pytest.raises(DatasetError, match='escapes'): safe_join(tmp_path, 'img/../../a.png', 'x')

# ---------------------------------------------------------------- CMIC rendering pickle

def _pkl(path, obj):
    with open(path, 'wb') as f: pickle.dump(obj, f)
    return path

def test_cmic_renderings_good_and_converted(tmp_path):
    p = _pkl(tmp_path/'rendering_pix3d.pkl', {'chair': {'A': np.zeros((12, 8, 8), np.uint8), 'B': np.full((12, 1, 8, 8), 0.5, np.float32)},
                                              'sofa': {'C': np.full((12, 8, 8, 1), 200.0)}})
    tab, views = load_cmic_renderings(p)
    assert views.shape == (3, 12, 8, 8) and views.dtype == np.uint8
    assert list(tab['shape_id']) == ['chair/A', 'chair/B', 'sofa/C'] and views[1].max() == 128 and views[2].max() == 200

BAD_PICKLES = [
    ({'chair': {'A': np.zeros((11, 8, 8))}}, 'expected 12 grayscale views'),
    ({'chair': {'A': np.zeros((12, 8, 8, 3))}}, 'expected 12 grayscale views'),
    ({'chair': {'A': np.zeros((12, 8, 8)), 'B': np.zeros((12, 9, 9))}}, 'differs from the first shape'),
    ({'chair': {'A': np.full((12, 8, 8), 300.0)}}, 'view values must be in [0, 1] or [0, 255]'),
    ({'chair': {'A': ['a'] * 12}}, 'views must be numeric'),
    ({'chair': [np.zeros((12, 8, 8))]}, 'should map instance ids to views'),
    ([np.zeros((12, 8, 8))], 'expected {category: {instance: views}}'),
    ({}, 'holds no shapes'),
]

@pytest.mark.parametrize('obj,msg', BAD_PICKLES, ids=range(len(BAD_PICKLES)))
def test_bad_cmic_pickles(tmp_path, obj, msg):
    p = _pkl(tmp_path/'rendering_bad.pkl', obj)
    with pytest.raises(DatasetError) as e: load_cmic_renderings(p)
    assert str(p) in str(e.value) and msg in str(e.value)

def test_unsafe_and_truncated_pickles(tmp_path):
    p = _pkl(tmp_path/'evil.pkl', {'chair': {'A': collections.Counter('ab')}})
    with pytest.raises(UnsafePickleError, match='evil.pkl: refusing to unpickle collections.Counter'): load_cmic_renderings(p)
    good = _pkl(tmp_path/'ok.pkl', {'chair': {'A': np.zeros((12, 8, 8), np.uint8)}})
    (tmp_path/'trunc.pkl').write_bytes(good.read_bytes()[:40])
    with pytest.raises(pickle.UnpicklingError, match='trunc.pkl: not a readable pickle'): load_cmic_renderings(tmp_path/'trunc.pkl')

# ---------------------------------------------------------------- images

@pytest.fixture
def pixels(): return (np.random.default_rng(0).random((5, 7, 3)) * 255).astype(np.uint8)

def test_usable_odd_images_are_converted(tmp_path, pixels):
    g = pixels[..., 0]
    cases = {
        'rgb.png': (Image.fromarray(pixels), pixels),
        'gray.png': (Image.fromarray(g), np.repeat(g[..., None], 3, -1)),
        'bilevel.png': (Image.fromarray(g > 127), np.repeat(np.where(g > 127, 255, 0).astype(np.uint8)[..., None], 3, -1)),
        'gray16.png': (Image.fromarray(g.astype(np.uint16) * 257), np.repeat(g[..., None], 3, -1)),
        'rgba_opaque.png': (Image.fromarray(np.dstack([pixels, np.full(g.shape, 255, np.uint8)])), pixels),
        'rgba_clear.png': (Image.fromarray(np.dstack([pixels, np.zeros(g.shape, np.uint8)])), np.full_like(pixels, 255)),
        'la.png': (Image.fromarray(np.dstack([g, np.full(g.shape, 255, np.uint8)]), 'LA'), np.repeat(g[..., None], 3, -1)),
        'float01.tiff': (Image.fromarray(g.astype(np.float32) / 255), np.repeat(g[..., None], 3, -1)),
        'float255.tiff': (Image.fromarray(g.astype(np.float32)), np.repeat(g[..., None], 3, -1)),
    }
    for name, (im, want) in cases.items():
        im.save(tmp_path/name)
        got = load_image(tmp_path/name)
        assert got.dtype == np.uint8 and got.shape == (5, 7, 3), name
        assert np.abs(got.astype(int) - want).max() <= 1, name
    for name in ('palette.png', 'cmyk.jpg'):
        (Image.fromarray(pixels).convert('P') if name.startswith('pal') else Image.fromarray(pixels).convert('CMYK')).save(tmp_path/name)
        assert load_image(tmp_path/name).shape == (5, 7, 3)

def test_exif_orientation_is_applied(tmp_path, pixels):
    im = Image.fromarray(pixels); exif = im.getexif(); exif[0x0112] = 6          # rotate 90° on display
    im.save(tmp_path/'rot.jpg', exif=exif, quality=100)
    assert load_image(tmp_path/'rot.jpg').shape == (7, 5, 3)

def test_unusable_images_name_the_file(tmp_path, pixels):
    Image.fromarray(pixels).save(tmp_path/'ok.png')
    (tmp_path/'trunc.png').write_bytes((tmp_path/'ok.png').read_bytes()[:60])
    (tmp_path/'text.jpg').write_text('this is not a jpeg')
    Image.fromarray(np.full((5, 7), 1e4, np.float32)).save(tmp_path/'hdr.tiff')
    for name, msg in [('trunc.png', 'truncated or corrupt image'), ('text.jpg', 'not a readable image'),
                      ('hdr.tiff', 'outside [0, 255]')]:
        with pytest.raises(DatasetError) as e: load_image(tmp_path/name)
        assert str(tmp_path/name) in str(e.value) and msg in str(e.value)
    with pytest.raises(FileNotFoundError, match='gone.png: image file not found'): load_image(tmp_path/'gone.png')

def test_masks(tmp_path):
    Image.fromarray(np.array([[0, 200], [128, 127]], np.uint8)).save(tmp_path/'m.png')
    np.testing.assert_array_equal(load_mask(tmp_path/'m.png'), [[False, True], [True, False]])

# ---------------------------------------------------------------- folders

def test_mesh_folder_keeps_good_reports_bad(tmp_path, caplog):
    (tmp_path/'mug').mkdir()
    make_shape('mug', 0).mesh.export(tmp_path/'mug/a.obj')
    make_shape('car', 0).mesh.export(tmp_path/'b.ply')
    _write(tmp_path/'mug/nan.obj', 'v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n'); _write(tmp_path/'mug/empty.stl', b'')
    _write(tmp_path/'readme.md', 'ignored')
    with caplog.at_level('WARNING', logger='ibsr_nb'):
        mf = MeshFolder(tmp_path, n_points=128)
    assert list(mf.table['shape_id']) == ['b', 'mug/a'] and list(mf.table['category']) == ['', 'mug']
    assert sorted(Path(p).name for p, _ in mf.errors) == ['empty.stl', 'nan.obj']
    assert all(str(p) in reason for p, reason in mf.errors)
    assert 'skipped 2 of 4 mesh files' in caplog.text
    assert mf[1]['points'].shape == (128, 6) and len(mf) == 2

def test_folders_that_give_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match='mesh folder not found'): MeshFolder(tmp_path/'absent')
    (tmp_path/'empty').mkdir()
    with pytest.raises(DatasetError, match='no mesh files'): MeshFolder(tmp_path/'empty')
    with pytest.raises(DatasetError, match='no image files'): ImageFolder(tmp_path/'empty')
    _write(tmp_path/'bad/x.obj', b''); _write(tmp_path/'bad/y.png', b'\x89PNG broken')
    with pytest.raises(DatasetError, match='none of the 1 mesh files could be read'): MeshFolder(tmp_path/'bad')
    with pytest.raises(DatasetError, match='none of the 1 image files could be read'): ImageFolder(tmp_path/'bad')

def test_image_folder_mixed(tmp_path, pixels):
    (tmp_path/'chair').mkdir()
    Image.fromarray(pixels).save(tmp_path/'chair/a.png'); Image.fromarray(pixels[..., 0]).save(tmp_path/'chair/gray.png')
    Image.fromarray(np.dstack([pixels, pixels[..., :1]])).save(tmp_path/'rgba.png')
    _write(tmp_path/'chair/broken.jpg', b'\xff\xd8\xff\xe0 truncated')
    f = ImageFolder(tmp_path, size=8)
    assert len(f) == 3 and [Path(p).name for p, _ in f.errors] == ['broken.jpg']
    assert f[0]['image'].shape == (3, 8, 8) and f[0]['category'] == 'chair' and 0 <= f[0]['image'].min() <= f[0]['image'].max() <= 1

# ---------------------------------------------------------------- benchmark cache

TINY = BenchmarkSpec(name='cars-like', categories=('car',), instances=2, train_queries=1, test_queries=1,
                     n_points=64, image_size=16, view_size=16, n_views=2)

def test_cache_reuse_corruption_and_atomicity(tmp_path, caplog):
    b = load_benchmark('cars-like', spec=TINY, root=tmp_path)
    assert b.views.shape == (2, 2, 16, 16, 3) and len(b.queries) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith('.')) == [b.root.name]
    assert not any('.tmp-' in p.name for p in tmp_path.iterdir())                 # nothing half-written left
    created = b.manifest['created']
    assert load_benchmark('cars-like', spec=TINY, root=tmp_path).manifest['created'] == created
    (b.root/'manifest.json').write_text('{ broken')
    with caplog.at_level('WARNING', logger='ibsr_nb'):
        again = load_benchmark('cars-like', spec=TINY, root=tmp_path)
    assert 'unreadable manifest' in caplog.text and again.manifest['files'] == b.manifest['files']
    (again.root/'images.npy').unlink()
    assert load_benchmark('cars-like', spec=TINY, root=tmp_path).images.shape == (4, 16, 16, 3)
    for f in ('points', 'views'): assert np.load(again.root/f'{f}.npy', allow_pickle=False).dtype != object

def test_cache_is_keyed_by_spec(tmp_path):
    a = load_benchmark('cars-like', spec=TINY, root=tmp_path)
    b = load_benchmark('cars-like', spec=TINY.replace(n_points=32), root=tmp_path)
    assert a.root != b.root and b.points.shape == (2, 32, 6)
    assert a.shapes['mesh_hash'].tolist() == b.shapes['mesh_hash'].tolist()       # same shapes, other sampling

def test_spec_yaml_round_trip_and_unknown_keys(tmp_path):
    TINY.save(tmp_path/'spec.yaml')
    assert BenchmarkSpec.load(tmp_path/'spec.yaml') == TINY
    (tmp_path/'typo.yaml').write_text('name: cars-like\ninstancs: 3\n')
    with pytest.raises(ValueError, match=r"typo.yaml: unknown key\(s\) \['instancs'\]"): BenchmarkSpec.load(tmp_path/'typo.yaml')
