"""Malformed and unusual user input at the library level: meshes, images, configs, JSON, output files.

One table of inputs written by the tests, each with the error it must raise and a fragment of the message
(which always starts with the file's name); then unusual but valid inputs that must load, and a folder of
realistic mesh variety that must load, sample and draw."""
import os, io, sys, json, struct, zlib, subprocess
from pathlib import Path
import numpy as np
import pytest
import trimesh
from PIL import Image

from ibsr_nb.core import (IbsrError, InputError, BusyError, ConfigError, read_json, atomic_write_text, output_lock,
                          remove_stale_tmp)
from ibsr_nb.pointclouds import (MeshError, MISSING_RGB, MESH_EXTENSIONS, load_mesh, sample_points, find_mesh_files,
                                 face_colors)
from ibsr_nb.data import DatasetError, ImageError, BenchmarkSpec, load_image, load_mask, load_pix3d
from ibsr_nb.train import TrainConfig


# ---------------------------------------------------------------- writers of malformed files
def _text(name, text):
    def write(d):
        (d/name).write_text(text, encoding='utf-8'); return d/name
    return write

def _bytes(name, data):
    def write(d):
        (d/name).write_bytes(data() if callable(data) else data); return d/name
    return write

def _dir(name):
    def write(d):
        (d/name).mkdir(); return d/name
    return write

def _missing(name):
    return lambda d: d/name

def _png(size=(8, 6), mode='RGB', **kw):
    buf = io.BytesIO(); Image.new(mode, size, **kw).save(buf, format='PNG'); return buf.getvalue()

def _jpeg(size=(64, 48)):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, 'JPEG')
    return buf.getvalue()

def _png_claiming(w, h):
    "A PNG whose header claims w x h pixels (valid CRC), with a tiny body: what a decompression bomb looks like to PIL."
    b = bytearray(_png())
    b[16:24] = struct.pack('>II', w, h); b[29:33] = struct.pack('>I', zlib.crc32(bytes(b[12:29])))
    return bytes(b)

def _tiff(a):
    buf = io.BytesIO(); Image.fromarray(a).save(buf, format='TIFF'); return buf.getvalue()

def _glb(mesh=None):
    return (mesh or trimesh.creation.box()).export(file_type='glb')

_PLY_HEAD = ('ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n'
             'element face 1\nproperty list uchar int vertex_indices\nend_header\n')
_GLTF_MISSING_BIN = json.dumps({
    'asset': {'version': '2.0'}, 'scene': 0, 'scenes': [{'nodes': [0]}], 'nodes': [{'mesh': 0}],
    'meshes': [{'primitives': [{'attributes': {'POSITION': 0}}]}],
    'accessors': [{'bufferView': 0, 'componentType': 5126, 'count': 3, 'type': 'VEC3'}],
    'bufferViews': [{'buffer': 0, 'byteLength': 36}], 'buffers': [{'uri': 'missing.bin', 'byteLength': 36}]})
_DEEP = 10_000

def _config_cases():
    "(id, yaml text, fragment) for TrainConfig files."
    return [
        ('cfg-lr-word', 'lr: fast', "key 'lr': expected a number, got str 'fast'"),
        ('cfg-steps-half', 'steps: 2.5', "key 'steps': expected a whole number, got float 2.5"),
        ('cfg-steps-bool', 'steps: true', "key 'steps': expected a whole number, got bool True"),
        ('cfg-steps-word', 'steps: abc', "key 'steps': expected a whole number, got str 'abc'"),
        ('cfg-steps-list', 'steps: [1, 2]', "key 'steps': expected a whole number, got list"),
        ('cfg-steps-inf', 'steps: .inf', "key 'steps': expected a whole number, got float inf"),
        ('cfg-amp-int', 'amp: 2', "key 'amp': expected true or false, got int 2"),
        ('cfg-amp-word', 'amp: maybe', "key 'amp': expected true or false, got str 'maybe'"),
        ('cfg-seed-null', 'seed: null', "key 'seed': expected int, got NoneType None"),
        ('cfg-device-list', 'device: [cuda]', "key 'device': expected str or null, got list"),
        ('cfg-npoints-half', 'n_points: 1.5', "key 'n_points': expected int or null"),
        ('cfg-mode-float', 'mode: 1.5', "key 'mode': expected a string, got float 1.5"),
        ('cfg-unknown-key', 'learning_rate: 0.1', "unknown key(s) ['learning_rate'] for TrainConfig"),
        ('cfg-top-list', '- lr: 1', 'expected a mapping for TrainConfig, got list'),
        ('cfg-bad-yaml', 'lr: [1, 2', 'not valid YAML'),
        ('cfg-deep-yaml', 'lr: ' + '[' * _DEEP + ']' * _DEEP, 'YAML nested too deeply'),
        ('cfg-nested-scalar', 'beta: 3', 'expected a mapping for BetaSchedule, got int'),
        ('cfg-nested-typo', 'beta: {typo: 1}', "config.yaml.beta: unknown key(s) ['typo'] for BetaSchedule"),
    ]

# (id, writer, call, exception, message fragment); every message must also start with the file's name
CASES = [
    # meshes
    ('mesh-missing', _missing('gone.obj'), load_mesh, FileNotFoundError, 'mesh file not found'),
    ('mesh-directory', _dir('folder.obj'), load_mesh, MeshError, 'is a directory, not a mesh file'),
    ('mesh-empty-file', _bytes('empty.obj', b''), load_mesh, MeshError, 'empty file (0 bytes)'),
    ('mesh-fbx', _bytes('car.fbx', b'Kaydara FBX Binary  \x00'), load_mesh, MeshError, "unsupported mesh format '.fbx'"),
    ('mesh-usdz', _bytes('car.usdz', b'PK\x03\x04'), load_mesh, MeshError, "unsupported mesh format '.usdz'"),
    ('mesh-txt', _text('notes.txt', 'v 0 0 0'), load_mesh, MeshError, "unsupported mesh format '.txt'"),
    ('mesh-obj-text', _text('words.obj', 'hello world\n'), load_mesh, MeshError, 'the scene holds no triangle meshes'),
    ('mesh-obj-vertices-only', _text('pts.obj', 'v 0 0 0\nv 1 0 0\nv 0 1 0\n'), load_mesh, MeshError,
     'holds a point cloud without faces (3 points)'),
    ('mesh-obj-index-range', _text('oob.obj', 'v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n'), load_mesh, MeshError,
     'could not read the file as a mesh (IndexError'),
    ('mesh-obj-nan', _text('nan.obj', 'v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n'), load_mesh, MeshError,
     '1 of 3 vertices have non-finite (NaN/inf) coordinates'),
    ('mesh-obj-inf', _text('inf.obj', 'v 0 0 0\nv inf 0 0\nv 0 1 0\nf 1 2 3\n'), load_mesh, MeshError, 'non-finite'),
    ('mesh-obj-1e300', _text('far.obj', 'v 0 0 0\nv 1e300 0 0\nv 0 1e300 0\nf 1 2 3\n'), load_mesh, MeshError,
     'coordinates too large (up to 1e+300): the surface area overflows'),
    ('mesh-obj-collinear', _text('line.obj', 'v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n'), load_mesh, MeshError,
     'surface area is zero'),
    ('mesh-obj-one-point', _text('dot.obj', 'v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n'), load_mesh, MeshError,
     'surface area is zero'),
    ('mesh-glb-garbage', _bytes('garbage.glb', b'glTF\x02\x00\x00\x00 not a binary gltf'), load_mesh, MeshError,
     'could not read the file as a mesh'),
    ('mesh-glb-truncated', _bytes('cut.glb', lambda: _glb()[:200]), load_mesh, MeshError, 'could not read the file as a mesh'),
    ('mesh-gltf-not-json', _text('half.gltf', '{"asset": '), load_mesh, MeshError, 'could not read the file as a mesh'),
    ('mesh-gltf-missing-bin', _text('nobin.gltf', _GLTF_MISSING_BIN), load_mesh, MeshError, 'missing.bin'),
    ('mesh-gltf-empty-scene', _text('empty.gltf', '{"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": []}]}'),
     load_mesh, MeshError, 'the scene holds no triangle meshes (empty scene)'),
    ('mesh-ply-points-only', _text('scan.ply', _PLY_HEAD.replace('element face 1\nproperty list uchar int vertex_indices\n', '')
                                   + '0 0 0\n1 0 0\n0 1 0\n'), load_mesh, MeshError, 'holds a point cloud without faces'),
    ('mesh-ply-nan', _text('nan.ply', _PLY_HEAD + '0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n'), load_mesh, MeshError, 'non-finite'),
    ('mesh-ply-truncated', _bytes('cut.ply', _PLY_HEAD.replace('ascii', 'binary_little_endian').encode() + b'\x00' * 7),
     load_mesh, MeshError, 'could not read the file as a mesh'),
    ('mesh-ply-not-ply', _bytes('fake.ply', b'\x89PNG not a ply'), load_mesh, MeshError, 'could not read the file as a mesh'),
    ('mesh-stl-random', _bytes('noise.stl', bytes(range(256)) * 3), load_mesh, MeshError, 'the scene holds no triangle meshes'),
    ('mesh-off-short', _text('short.off', 'OFF\n3 1 0\n0 0 0\n1 0 0\n'), load_mesh, MeshError, 'could not read the file as a mesh'),
    ('mesh-3mf-not-zip', _bytes('bad.3mf', b'PK\x03\x04 not a zip'), load_mesh, MeshError, 'could not read the file as a mesh'),
    ('mesh-dae-broken-xml', _text('bad.dae', '<?xml version="1.0"?><COLLADA><broken>'), load_mesh, MeshError,
     'could not read the file as a mesh'),
    # images
    ('img-missing', _missing('gone.png'), load_image, FileNotFoundError, 'image file not found'),
    ('img-directory', _dir('photos.png'), load_image, ImageError, 'is a directory, not an image file'),
    ('img-empty-file', _bytes('empty.png', b''), load_image, ImageError, 'not a readable image file'),
    ('img-text-as-jpg', _text('text.jpg', 'not a jpeg'), load_image, ImageError, 'not a readable image file'),
    ('img-png-truncated', _bytes('cut.png', lambda: _png((64, 64))[:60]), load_image, ImageError, 'truncated or corrupt image'),
    ('img-jpeg-truncated', _bytes('cut.jpg', lambda: _jpeg()[:400]), load_image, ImageError, 'truncated or corrupt image'),
    ('img-png-bomb-header', _bytes('bomb.png', lambda: _png_claiming(20_000, 20_000)), load_image, ImageError,
     'too many pixels to decode safely'),
    ('img-png-over-limit', _bytes('wide.png', lambda: _png_claiming(12_000, 12_000)), load_image, ImageError,
     '12000x12000 image: decoding 144,000,000 pixels is over the limit'),
    ('img-float-range', _bytes('hot.tif', lambda: _tiff(np.full((4, 4), 300.0, np.float32))), load_image, ImageError,
     'float image values 300..300 outside [0, 255]'),
    ('img-float-nan', _bytes('nan.tif', lambda: _tiff(np.full((4, 4), np.nan, np.float32))), load_image, ImageError,
     'image has non-finite values'),
    ('mask-truncated', _bytes('mask.png', lambda: _png((64, 64), 'L')[:50]), load_mask, ImageError, 'truncated or corrupt'),
    # JSON files
    ('json-deep', _text('deep.json', '[' * 100_000 + ']' * 100_000), read_json, InputError, 'JSON nested too deeply'),
    ('json-latin1', _bytes('latin.json', b'{"caf\xe9": 1}'), read_json, InputError, 'not UTF-8 text'),
    ('json-cut', _text('cut.json', '{"a": [1, '), read_json, InputError, 'not valid JSON'),
    ('pix3d-deep', _text('pix3d.json', '[' * 100_000 + ']' * 100_000), load_pix3d, DatasetError, 'JSON nested too deeply'),
    ('pix3d-not-list', _text('pix3d.json', '{"img": "a.png"}'), load_pix3d, DatasetError, 'expected a list of records'),
    # configs
    *[(i, _text('config.yaml', y), TrainConfig.load, ConfigError, m) for i, y, m in _config_cases()],
    ('cfg-not-utf8', _bytes('config.yaml', b'mode: caf\xe9\n'), TrainConfig.load, ConfigError, 'not UTF-8 text'),
    ('spec-categories-scalar', _text('spec.yaml', 'categories: chair'), BenchmarkSpec.load, ConfigError,
     "key 'categories': expected a list, got str 'chair'"),
    ('spec-categories-nested', _text('spec.yaml', 'categories: [chair, [sofa]]'), BenchmarkSpec.load, ConfigError,
     "key 'categories[1]': expected a string, got list"),
]


@pytest.mark.parametrize('writer, call, exc, fragment', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_named(tmp_path, writer, call, exc, fragment):
    path = writer(tmp_path)
    with pytest.raises(exc) as e: call(path)
    msg = str(e.value)
    assert msg.startswith(str(path)), f'the message does not start with the file: {msg}'
    assert fragment in msg, msg
    assert isinstance(e.value, (IbsrError, FileNotFoundError)) and 'Traceback' not in msg


def test_corpus_size():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40, len(ids)


# ---------------------------------------------------------------- unusual images that must load as RGB uint8
def _save(d, name, im, **kw):
    im.save(d/name, **kw); return d/name

def _exif_rotated(d):
    im = Image.new('RGB', (6, 4), (10, 200, 10)); ex = im.getexif(); ex[0x0112] = 6
    return _save(d, 'rot.jpg', im, exif=ex.tobytes())

def _palette_transparent(d):
    im = Image.new('P', (5, 5)); im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762); im.info['transparency'] = 0
    return _save(d, 'pt.png', im, transparency=0)

VALID_IMAGES = [
    ('gray', lambda d: _save(d, 'g.png', Image.new('L', (7, 5), 90)), (5, 7), [90, 90, 90]),
    ('bilevel', lambda d: _save(d, 'b.png', Image.new('1', (7, 5), 1)), (5, 7), [255, 255, 255]),
    ('rgba-half', lambda d: _save(d, 'a.png', Image.new('RGBA', (7, 5), (0, 0, 0, 0))), (5, 7), [255, 255, 255]),
    ('la', lambda d: _save(d, 'la.png', Image.new('LA', (7, 5), (0, 255))), (5, 7), [0, 0, 0]),
    ('gray16', lambda d: _save(d, 'g16.png', Image.fromarray(np.full((5, 7), 257 * 40, np.uint16))), (5, 7), [40, 40, 40]),
    ('int32', lambda d: _save(d, 'i32.tif', Image.fromarray(np.full((5, 7), 65535, np.int32))), (5, 7), [255, 255, 255]),
    ('float01', lambda d: _save(d, 'f.tif', Image.fromarray(np.full((5, 7), 0.5, np.float32))), (5, 7), [128, 128, 128]),
    ('palette', lambda d: _save(d, 'p.gif', Image.new('RGB', (7, 5), (255, 0, 0)).convert('P')), (5, 7), [255, 0, 0]),
    ('palette-transparent', _palette_transparent, (5, 5), [255, 255, 255]),
    ('cmyk-jpeg', lambda d: _save(d, 'c.jpg', Image.new('CMYK', (7, 5), (0, 255, 255, 0))), (5, 7), [255, 0, 0]),
    ('webp', lambda d: _save(d, 'w.webp', Image.new('RGB', (7, 5), (0, 0, 255)), lossless=True), (5, 7), [0, 0, 255]),
    ('exif-rotated', _exif_rotated, (6, 4), [10, 200, 10]),
    ('large-jpeg-reduced', lambda d: _save(d, 'big.jpg', Image.new('RGB', (8200, 100), (0, 128, 0))), (25, 2050), [0, 128, 0]),
    ('large-png-reduced', lambda d: _save(d, 'big.png', Image.new('RGB', (8200, 100), (0, 0, 128))), (34, 2734), [0, 0, 128]),
]

@pytest.mark.parametrize('writer, shape, rgb', [c[1:] for c in VALID_IMAGES], ids=[c[0] for c in VALID_IMAGES])
def test_unusual_images_load_as_rgb(tmp_path, writer, shape, rgb):
    a = load_image(writer(tmp_path))
    assert a.dtype == np.uint8 and a.shape == (*shape, 3), a.shape
    np.testing.assert_allclose(a[a.shape[0] // 2, a.shape[1] // 2], rgb, atol=6)


# ---------------------------------------------------------------- a folder of realistic mesh variety
def _uv_obj(d):
    "A UV-textured OBJ with its MTL and PNG texture: left half of the texture red, right half blue."
    tex = Image.fromarray(np.repeat(np.repeat(np.array([[[230, 20, 20], [20, 20, 230]]], np.uint8), 16, 0), 16, 1))
    box = trimesh.creation.box((1, 1, 1))
    box.visual = trimesh.visual.TextureVisuals(uv=np.c_[(box.vertices[:, 0] > 0) * 0.5 + 0.25, np.full(8, 0.5)], image=tex)
    box.export(d/'textured'/'crate.obj')
    return box

def _multi_glb(d):
    "Three primitives in one GLB, placed by node transforms: a textured one, a vertex-coloured one, a plain one."
    s = trimesh.Scene()
    t = trimesh.creation.box((1, 1, 1))
    t.visual = trimesh.visual.TextureVisuals(uv=np.full((8, 2), 0.5), image=Image.new('RGB', (4, 4), (0, 0, 255)))
    g = trimesh.creation.icosphere(1, 0.5); g.visual.vertex_colors = [0, 255, 0, 255]
    s.add_geometry(t, node_name='tex')
    s.add_geometry(g, node_name='green', transform=trimesh.transformations.translation_matrix([3, 0, 0]))
    s.add_geometry(trimesh.creation.box((1, 1, 1)), node_name='plain', transform=trimesh.transformations.translation_matrix([6, 0, 0]))
    s.export(d/'scenes'/'mixed.glb')

def _graph_glb(d):
    "A scene graph: a parent node rotated 90 degrees about y, a child translated 2 along its parent's x."
    s = trimesh.Scene()
    s.graph.update(frame_to='parent', frame_from=s.graph.base_frame,
                   matrix=trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    child = trimesh.creation.box((1, 1, 1)); child.visual.face_colors = [200, 100, 0, 255]
    s.add_geometry(child, node_name='child', parent_node_name='parent',
                   transform=trimesh.transformations.translation_matrix([2, 0, 0]))
    s.export(d/'scenes'/'graph.glb')

@pytest.fixture(scope='module')
def variety(tmp_path_factory):
    d = tmp_path_factory.mktemp('variety')
    for sub in ('textured', 'scenes', 'formats', 'scales'): (d/sub).mkdir()
    _uv_obj(d); _multi_glb(d); _graph_glb(d)
    box = trimesh.creation.box((1, 2, 3))
    for ext in ('obj', 'STL', 'ply', 'off', 'glb', '3mf', 'dae'):
        if f'.{ext.lower()}' in MESH_EXTENSIONS: box.export(d/'formats'/f'box.{ext}', file_type=ext.lower())
    for name, s in (('huge', 3e38 / 3), ('tiny', 1e-20), ('kilometres', 1e6)):
        m = trimesh.creation.icosphere(2); m.apply_scale(s); m.export(d/'scales'/f'{name}.stl')
    (d/'formats'/'scan.ply').write_text(_PLY_HEAD.replace('element face 1\nproperty list uchar int vertex_indices\n', '')
                                         + '0 0 0\n1 0 0\n0 1 0\n')
    (d/'formats'/'box.fbx').write_bytes(b'Kaydara FBX Binary  \x00')
    (d/'.hidden').mkdir(); (d/'.hidden'/'junk.obj').write_text('v 0 0 0')
    return d

def test_variety_folder_lists_loadable_and_other_files(variety):
    ok, other = find_mesh_files(variety)
    names = sorted(p.relative_to(variety).as_posix() for p in ok)
    assert {'formats/box.obj', 'formats/box.STL', 'formats/box.ply', 'formats/box.3mf', 'formats/box.dae',
            'textured/crate.obj', 'scenes/mixed.glb', 'scenes/graph.glb', 'scales/huge.stl'} <= set(names), names
    assert [p.name for p in other] == ['box.fbx'] and not any('.hidden' in n for n in names)

def test_variety_folder_loads_samples_and_draws(variety):
    from ibsr_nb.viz import shape_thumbnail
    ok, _ = find_mesh_files(variety)
    loaded, refused = {}, {}
    for p in ok:
        try: m = load_mesh(p)
        except MeshError as e: refused[p.name] = str(e); continue
        pts = sample_points(m, 256, seed=0)
        assert pts.shape == (256, 6) and np.isfinite(pts).all(), p
        assert np.abs(np.linalg.norm(pts[:, :3], axis=1).max() - 1) < 1e-4 and (0 <= pts[:, 3:]).all() and (pts[:, 3:] <= 1).all()
        thumb = shape_thumbnail(m, 24)
        assert thumb.shape == (24, 24, 3) and (thumb < 250).any(), p
        loaded[p.relative_to(variety).as_posix()] = pts
    assert list(refused) == ['scan.ply'] and 'holds a point cloud without faces' in refused['scan.ply']
    stems = [k for k in loaded if k.startswith('formats/box.')]
    assert len(stems) >= 5                                                   # the same stem in several formats, each its own
    for k in stems: np.testing.assert_allclose(np.ptp(loaded[k][:, :3], 0) / np.ptp(loaded[k][:, 1]), [1 / 2, 1, 3 / 2], atol=0.06)

def test_uv_textured_obj_sampled_and_drawn_with_its_texture(variety):
    from ibsr_nb.render import render, Camera
    m = load_mesh(variety/'textured'/'crate.obj')
    assert m.visual.kind == 'texture'
    p = sample_points(m, 4000, seed=1, normalize=False)
    front = np.abs(p[:, 2] - 0.5) < 1e-6                                     # the +z face: u runs 0.25 -> 0.75 with x
    left, right = p[front & (p[:, 0] < -0.3), 3:].mean(0), p[front & (p[:, 0] > 0.3), 3:].mean(0)
    assert left[0] > 0.7 and left[2] < 0.3 and right[2] > 0.7 and right[0] < 0.3, (left, right)
    img = render(m, Camera(0, 0, 3), 32)['rgb'].astype(int)
    assert img[16, 6, 0] > img[16, 6, 2] + 60 and img[16, 25, 2] > img[16, 25, 0] + 60
    assert face_colors(m).shape == (12, 3)

def test_multi_primitive_glb_keeps_each_primitives_colour(variety):
    p = sample_points(load_mesh(variety/'scenes'/'mixed.glb'), 3000, seed=0, normalize=False)
    for x, rgb in ((0, [0, 0, 1]), (3, [0, 1, 0]), (6, [MISSING_RGB] * 3)):
        np.testing.assert_allclose(p[np.abs(p[:, 0] - x) < 0.7, 3:].mean(0), rgb, atol=1e-3)

def test_scene_graph_transforms_are_applied(variety):
    m = load_mesh(variety/'scenes'/'graph.glb')
    np.testing.assert_allclose(m.bounds, [[-0.5, -0.5, -2.5], [0.5, 0.5, -1.5]], atol=1e-6)   # x=2 turned to z=-2
    np.testing.assert_allclose(sample_points(m, 100)[:, 3:].mean(0), [200 / 255, 100 / 255, 0], atol=1e-6)

def test_huge_and_tiny_scales_sample_the_same_shape(variety):
    a, b, c = (sample_points(load_mesh(variety/'scales'/f'{n}.stl'), 500, seed=3) for n in ('huge', 'tiny', 'kilometres'))
    np.testing.assert_allclose(a, c, atol=1e-5); np.testing.assert_allclose(b, c, atol=1e-5)


# ---------------------------------------------------------------- output files: mode, debris, one writer at a time
def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert atomic_write_text(tmp_path/'index.json', '{}').stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert atomic_write_text(tmp_path/'private.json', '{}').stat().st_mode & 0o777 == 0o600
    finally: os.umask(old)

def test_stale_tmp_debris_removed(tmp_path):
    for n in ('.index.npz.ab12.tmp', '.meta.json.x.tmp', 'index.npz', 'keep.tmp'): (tmp_path/n).write_text('x')
    old = 1_000_000_000
    os.utime(tmp_path/'.meta.json.x.tmp', (old, old))
    assert [p.name for p in remove_stale_tmp(tmp_path)] == ['.meta.json.x.tmp']          # only old debris by default
    assert [p.name for p in remove_stale_tmp(tmp_path, older_than=0)] == ['.index.npz.ab12.tmp']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['index.npz', 'keep.tmp']
    assert remove_stale_tmp(tmp_path/'absent') == []

def test_second_writer_is_busy(tmp_path):
    out = tmp_path/'gallery.index'
    # another writer holds the lock output_lock takes (filelock on .NAME.lock beside the output; no torch import: fast)
    holder = 'import sys, time, filelock\nwith filelock.FileLock(sys.argv[1]):\n print("held", flush=True); time.sleep(60)'
    p = subprocess.Popen([sys.executable, '-c', holder, str(tmp_path/'.gallery.index.lock')], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'held'
        with pytest.raises(BusyError, match=r'gallery.index: busy: another process is writing it') as e:
            with output_lock(out): pass
        assert e.value.path == out and isinstance(e.value, ValueError)
    finally: p.kill(); p.wait()
    with output_lock(out, timeout=5): pass                                   # the killed writer's lock is gone
