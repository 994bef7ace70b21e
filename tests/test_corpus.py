"""The malformed-input corpus through the `ibsr` command: one table of inputs written by the tests (meshes, images,
dataset JSON, rendering pickles, checkpoints, index files, configs, CLI misuse), each with the message fragment the
user must see and what must still be produced.

Every case runs `ibsr_nb.cli.main([...])` in-process (a few as subprocesses of the console script) and checks the
error contract: exit code 2, stderr's first line `error: <file or option>: <problem>`, no `Traceback`. Meshes go
through `ibsr index` beside a good mesh: exit 0, the good one indexed, the bad one listed in the `skipped` file.
Rendering pickles have no CLI path (only `ibsr reproduce --data-root` reads them, through the CMIC baseline), so
they call the library and print the error as the CLI does."""
import io, os, re, sys, json, pickle, struct, hashlib, contextlib, subprocess
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_inputs import CASES as LIB_CASES, _config_cases, _text, _bytes, _dir, _png

ENC = 'random-ppat-tiny-s'


pytestmark = pytest.mark.usefixtures('isolated_env')   # conftest.py


def run_main(argv):
    "In-process `ibsr ARGV`: (exit code, stdout, stderr); argparse's exit is an exit code too."
    from ibsr_nb.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main([str(a) for a in argv])
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()

def run_proc(argv):
    "`ibsr ARGV` as a fresh process of the console script."
    exe = Path(sys.executable).with_name('ibsr')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-m', 'ibsr_nb.cli']
    r = subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    return r.returncode, r.stdout, r.stderr

def run_lib(call):
    "A library call with no CLI path, its error printed as `main` prints it: (exit code, '', stderr)."
    from ibsr_nb.cli import EXPECTED_ERRORS, error_message
    try: call()
    except EXPECTED_ERRORS as e: return 2, '', f'error: {error_message(e)}\n'
    return 0, '', ''


# ---------------------------------------------------------------- shared good inputs (built once)
@pytest.fixture(scope='module')
def B(tmp_path_factory):
    "A good mesh, a folder of two good meshes, its index, a query photo, and a good run-checkpoint layout."
    from PIL import Image
    from ibsr_nb.shapes import make_shape
    d = tmp_path_factory.mktemp('base')
    (d/'meshes').mkdir()
    make_shape('chair', 0).mesh.export(d/'meshes'/'chair.obj')
    make_shape('table', 0).mesh.export(d/'meshes'/'table.ply')
    old = os.environ.get('IBSR_PROGRESS'); os.environ['IBSR_PROGRESS'] = '0'
    code, out, err = run_main(['index', d/'meshes', '--encoder', ENC, '--out', d/'good.index'])
    assert code == 0, err
    Image.new('RGB', (48, 40), (120, 90, 60)).save(d/'q.png')
    raw = (d/'good.index').read_bytes()
    (hlen,) = struct.unpack('<Q', raw[8:16])
    if old is None: os.environ.pop('IBSR_PROGRESS')
    return SimpleNamespace(d=d, meshes=d/'meshes', index=d/'good.index', img=d/'q.png', raw=raw,
                           header=json.loads(raw[16:16 + hlen]), payload=raw[16 + hlen:])


# ---------------------------------------------------------------- case builders
def C(id, kind, make, frag, code=2, after=None, proc=False):
    "One corpus row: `make(d, B)` writes the input and returns (argv or a callable, what the first line must name)."
    return SimpleNamespace(id=id, kind=kind, make=make, frag=frag, code=code, after=after, proc=proc)

def _rows(path):
    "The rows of a `skipped` file: [{path, kind, reason}]."
    lines = Path(path).read_text(encoding='utf-8').splitlines()
    head = lines[0].split('\t')
    return [dict(zip(head, l.split('\t'))) for l in lines[1:]]

# meshes: a bad file beside a good mesh in the folder `ibsr index` reads; the good one must still be indexed
def _mesh_case(id, writer, frag, kind='error'):
    def make(d, B):
        (d/'m').mkdir(); (d/'m'/'good.obj').write_bytes((B.meshes/'chair.obj').read_bytes())
        bad = writer(d/'m')
        return ['index', d/'m', '--encoder', ENC, '--out', d/'o.index'], bad.name
    def after(d, B, out, err):
        from ibsr_nb.index import ShapeIndex
        assert list(ShapeIndex.load(d/'o.index').shapes['shape_id']) == ['good']
        rows = _rows(d/'o.index.skipped.tsv')
        assert len(rows) == 1 and rows[0]['kind'] == kind and frag in rows[0]['reason'], rows
        assert f'listed in {d/"o.index.skipped.tsv"}' in out, out
        assert ('skipped 1 unreadable file(s)' if kind == 'error' else 'not indexed: 1 3D file(s)') in out, out
    return C(id, 'mesh', make, frag, 0, after)

MESH_CASES = [_mesh_case(i, w, m) if 'unsupported' not in m
              else _mesh_case(i, w, m.replace('mesh', '3D'), 'unsupported')
              for i, w, call, exc, m in LIB_CASES
              if call.__name__ == 'load_mesh' and i not in ('mesh-missing', 'mesh-directory', 'mesh-txt')]

def _f32_overflow_stl(d):
    "A binary STL whose float32 coordinates are 3e38: finite as stored, overflowing once scaled."
    tri = np.array([[0, 0, 0], [3e38, 0, 0], [0, 3e38, 0], [-3e38, -3e38, 0]], np.float32)
    body = b''.join(struct.pack('<3f', 0, 0, 1) + tri[[0, i, i + 1]].tobytes() + b'\0\0' for i in (1, 2))
    (d/'huge.stl').write_bytes(b'\0' * 80 + struct.pack('<I', 2) + body); return d/'huge.stl'

MESH_CASES += [
    _mesh_case('mesh-obj-negative-index', _text('neg.obj', 'v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 -9\n'), 'could not read'),
    _mesh_case('mesh-obj-binary-junk', _bytes('junk.obj', bytes(range(256)) * 4), 'no triangle meshes'),
    _mesh_case('mesh-stl-ascii-empty', _text('flat.stl', 'solid x\nendsolid x\n'), 'no triangle meshes'),
    _mesh_case('mesh-off-nan', _text('nan.off', 'OFF\n3 1 0\n0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n'), 'non-finite'),
]

def _index_extra_case(id, build, check):
    "`ibsr index` on a folder of unusual but valid content: exit 0 and `check(d, out, rows)`."
    def make(d, B):
        (d/'m').mkdir(); (d/'m'/'good.obj').write_bytes((B.meshes/'chair.obj').read_bytes()); build(d/'m', B)
        return ['index', d/'m', '--encoder', ENC, '--out', d/'o.index'], ''
    def after(d, B, out, err): check(d, out, _rows(d/'o.index.skipped.tsv'))
    return C(id, 'mesh', make, '', 0, after)

def _same_stem(m, B):
    for ext in ('ply', 'STL'):
        (m/f'good.{ext}').write_bytes((B.meshes/'table.ply').read_bytes() if ext == 'ply' else b'')
def _check_same_stem(d, out, rows):
    from ibsr_nb.index import ShapeIndex
    assert sorted(ShapeIndex.load(d/'o.index').shapes['shape_id']) == ['good.obj', 'good.ply']
    assert [(r['path'], r['kind']) for r in rows] == [('good.STL', 'error')], rows

def _odd_files(m, B):
    (m/'car.fbx').write_bytes(b'Kaydara FBX Binary  \x00')
    (m/'old.index.parts').mkdir(); (m/'old.index.parts'/'run.json').write_text('{}')
    (m/'.git').mkdir(); (m/'.git'/'x.obj').write_text('v 0 0 0')
def _check_odd_files(d, out, rows):
    got = {(r['path'], r['kind']) for r in rows}
    assert got == {('car.fbx', 'unsupported'), ('old.index.parts/', 'folder'), ('.git/', 'folder')}, rows
    assert 'not indexed: 1 3D file(s)' in out and 'listed in' in out

def _check_huge(d, out, rows):
    from ibsr_nb.index import ShapeIndex
    assert list(ShapeIndex.load(d/'o.index').shapes['shape_id']) == ['good', 'huge'] and rows == [], rows

def _check_ignored(d, out, rows):
    from ibsr_nb.index import ShapeIndex
    assert list(ShapeIndex.load(d/'o.index').shapes['shape_id']) == ['good'] and rows == [], rows
    assert 'listed in' not in out

MESH_CASES += [
    _index_extra_case('mesh-stl-float32-huge-loads', lambda m, B: _f32_overflow_stl(m), _check_huge),
    _index_extra_case('mesh-txt-ignored', lambda m, B: (m/'notes.txt').write_text('v 0 0 0'), _check_ignored),
    _index_extra_case('mesh-directory-named-obj', lambda m, B: (m/'folder.obj').mkdir(), _check_ignored),
    _index_extra_case('mesh-same-stem-three-formats', _same_stem, _check_same_stem),
    _index_extra_case('mesh-unsupported-and-work-folders', _odd_files, _check_odd_files),
]

# images: `ibsr query BAD --index good.index`
def _image_case(id, writer, frag):
    def make(d, B):
        p = writer(d); return ['query', p, '--index', B.index, '--out', d/'pic.png'], str(p)
    return C(id, 'image', make, frag, after=lambda d, B, out, err: not (d/'pic.png').exists() or pytest.fail('picture'))

IMAGE_CASES = [_image_case(i, w, m) for i, w, call, exc, m in LIB_CASES if call.__name__ == 'load_image']
IMAGE_CASES += [
    _image_case('img-gif-empty', _bytes('e.gif', b'GIF89a'), 'not a readable image file'),
    _image_case('img-svg', _text('v.svg', '<svg xmlns="http://www.w3.org/2000/svg"/>'), 'not a readable image file'),
    _image_case('img-zero-width-png', _bytes('z.png', lambda: _png()[:16] + struct.pack('>I', 0) + _png()[20:]),
                'not a readable image file'),
]

# dataset JSON: `ibsr train` on the real benchmark pix3d, its json in --data-root; no run directory may be made
_TRAIN_REAL = 'mode: pretrain\nbenchmark: pix3d\nsteps: 1\nbatch_size: 2\n'
_REC = {'img': 'img/chair/0.png', 'mask': 'mask/chair/0.png', 'model': 'model/chair/a/model.obj', 'category': 'chair'}

def _dataset_case(id, files, frag, folder_named=False):
    def make(d, B):
        root = d/'data'/'pix3d'; root.mkdir(parents=True)
        for name, content in files.items():
            (root/name).write_bytes(content if isinstance(content, bytes) else
                                    (content if isinstance(content, str) else json.dumps(content)).encode())
        (d/'run.yaml').write_text(_TRAIN_REAL)
        named = str(root/next(iter(files))) if files and not folder_named else str(root)
        return ['train', d/'run.yaml', '--out', d/'run', '--data-root', d/'data'], named
    return C(id, 'dataset', make, frag, after=lambda d, B, out, err: not (d/'run').exists() or pytest.fail('run dir'))

def _rec(**kw): return [{**_REC, **kw}]

DATASET_CASES = [
    _dataset_case('json-pix3d-not-list', {'pix3d.json': {'img': 'a.png'}}, 'expected a list of records'),
    _dataset_case('json-pix3d-deep', {'pix3d.json': '[' * 100_000 + ']' * 100_000}, 'JSON nested too deeply'),
    _dataset_case('json-pix3d-latin1', {'pix3d.json': b'[{"caf\xe9": 1}]'}, "can't decode byte 0xe9"),
    _dataset_case('json-pix3d-cut', {'pix3d.json': '[{"img": '}, 'not valid JSON'),
    _dataset_case('json-pix3d-record-int', {'pix3d.json': [3]}, 'expected an object, got int'),
    _dataset_case('json-pix3d-missing-img', {'pix3d.json': [{k: v for k, v in _REC.items() if k != 'img'}]},
                  "missing field 'img'"),
    _dataset_case('json-pix3d-img-number', {'pix3d.json': _rec(img=5)}, "field 'img' must be a non-empty string"),
    _dataset_case('json-pix3d-bbox-short', {'pix3d.json': _rec(bbox=[1, 2])}, "field 'bbox' must be [x_min"),
    _dataset_case('json-pix3d-model-shallow', {'pix3d.json': _rec(model='chair.obj')}, "'model' must look like"),
    _dataset_case('json-pix3d-path-escape', {'pix3d.json': _rec(img='../../../etc/passwd')},
                  'escapes the dataset root'),
    _dataset_case('json-pix3d-absolute-path', {'pix3d.json': _rec(mask='/etc/passwd')}, 'absolute'),
    _dataset_case('json-pix3d-img-missing', {'pix3d.json': _rec()}, 'img file not found'),
    _dataset_case('json-cmic-half-pair', {'pix3d_train.json': []}, 'found pix3d_train.json but not pix3d_test.json',
                  folder_named=True),
    _dataset_case('json-pix3d-absent', {}, 'no pix3d.json or pix3d_train.json + pix3d_test.json found'),
]

# rendering pickles: the CMIC baseline's views (no CLI path of their own)
class _Boom:
    def __reduce__(self): return (os.system, ('echo pwned',))

def _pickle_case(id, obj, frag, raw=None):
    def make(d, B):
        from ibsr_nb.data import load_cmic_renderings
        p = d/'renderings.pkl'
        p.write_bytes(raw if raw is not None else pickle.dumps(obj))
        return (lambda: load_cmic_renderings(p)), str(p)
    return C(id, 'pickle', make, frag)

_views = lambda **kw: np.zeros((12, 8, 8), np.uint8)
PICKLE_CASES = [
    _pickle_case('pkl-list', [1, 2], 'expected {category: {instance: views}}, got a list'),
    _pickle_case('pkl-malicious', _Boom(), 'refusing to unpickle posix.system'),
    _pickle_case('pkl-truncated', None, 'truncated', raw=pickle.dumps({'chair': {'a': _views()}})[:100]),
    _pickle_case('pkl-not-pickle', None, 'not a readable pickle', raw=b'hello world, not a pickle'),
    _pickle_case('pkl-empty', {}, 'holds no shapes'),
    _pickle_case('pkl-category-list', {'chair': [1]}, 'should map instance ids to views'),
    _pickle_case('pkl-views-strings', {'chair': {'a': ['x'] * 12}}, 'views must be numeric'),
    _pickle_case('pkl-views-wrong-count', {'chair': {'a': np.zeros((5, 8, 8), np.uint8)}},
                 'expected 12 grayscale views'),
    _pickle_case('pkl-views-nan', {'chair': {'a': np.full((12, 8, 8), np.nan)}}, 'view values must be in [0, 1]'),
    _pickle_case('pkl-views-sizes-differ', {'chair': {'a': _views(), 'b': np.zeros((12, 4, 4), np.uint8)}},
                 'differs from the first'),
]

# checkpoints: as a run checkpoint (`--encoder FILE`) and as published weights (`--encoder NAME=FILE`)
def _torch_bytes(obj):
    import torch
    buf = io.BytesIO(); torch.save(obj, buf); return buf.getvalue()

def _train_ck(**kw):
    import torch
    from ibsr_nb.model import CKPT_FORMAT, TrainConfig
    return {'format': CKPT_FORMAT, 'kind': 'best', 'config': TrainConfig().to_dict(), 'model': {'w': torch.zeros(2)},
            **kw}

_CK_FILES = {
    'empty': lambda: b'',
    'text': lambda: b'these are not weights\n',
    'random': lambda: bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    'truncated': lambda: _torch_bytes({'a': __import__('torch').zeros(100)})[:300],
    'malicious': lambda: pickle.dumps(_Boom(), protocol=2),        # GLOBAL opcodes: what torch names
    'malicious-protocol-5': lambda: pickle.dumps(_Boom()),
    'list': lambda: _torch_bytes([1, 2, 3]),
}

def _ck_case(id, how, content, frag):
    def make(d, B):
        p = d/'weights.pt'; p.write_bytes(content())
        spec = str(p) if how == 'run' else f'openshape-g14={p}'
        return ['query', B.img, '--index', B.index, '--encoder', spec, '--no-picture'], str(p)
    return C(id, 'checkpoint', make, frag)

CHECKPOINT_CASES = [
    *[_ck_case(f'ck-run-{k}', 'run', f, frag) for k, f, frag in (
        ('empty', _CK_FILES['empty'], 'not a checkpoint of `ibsr train`'),
        ('text', _CK_FILES['text'], 'not a checkpoint of `ibsr train`'),
        ('random', _CK_FILES['random'], 'not a checkpoint of `ibsr train`'),
        ('truncated', _CK_FILES['truncated'], 'not a checkpoint of `ibsr train`'),
        ('malicious', _CK_FILES['malicious'], 'not a checkpoint of `ibsr train`'),
        ('list', _CK_FILES['list'], 'not an ibsr_nb training checkpoint'),
        ('no-format', lambda: _torch_bytes({'model': {}}), 'not an ibsr_nb training checkpoint'),
        ('no-model', lambda: _torch_bytes({k: v for k, v in _train_ck().items() if k != 'model'}), "('model')"),
        ('config-typo', lambda: _torch_bytes(_train_ck(config={'stepz': 3})), "unknown key(s) ['stepz']"),
        ('config-list', lambda: _torch_bytes(_train_ck(config=[1])), 'expected a mapping for TrainConfig'),
        ('weights-mismatch', lambda: _torch_bytes(_train_ck()), 'model weights do not fit its config'))],
    *[_ck_case(f'ck-published-{k}', 'published', f, frag) for k, f, frag in (
        ('empty', _CK_FILES['empty'], 'not a PyTorch checkpoint'),
        ('text', _CK_FILES['text'], 'not a PyTorch checkpoint'),
        ('random', _CK_FILES['random'], 'not a PyTorch checkpoint'),
        ('truncated', _CK_FILES['truncated'], 'not a PyTorch checkpoint'),
        ('malicious', _CK_FILES['malicious'], 'refusing to load'),
        ('malicious-protocol-5', _CK_FILES['malicious-protocol-5'], 'not a PyTorch checkpoint (unreadable pickle'),
        ('list', _CK_FILES['list'], 'expected a dict checkpoint, got list'),
        ('foreign-keys', lambda: _torch_bytes({'foo.weight': __import__('torch').zeros(3)}), 'not in the'))],
    C('ck-run-dir-without-checkpoints', 'checkpoint',
      lambda d, B: (['query', B.img, '--index', B.index, '--encoder', (d/'run').mkdir() or d/'run', '--no-picture'],
                    str(d/'run')), 'run directory without checkpoints/best.pt'),
    C('ck-published-missing', 'checkpoint',
      lambda d, B: (['query', B.img, '--index', B.index, '--encoder', f'openshape-g14={d/"gone.pt"}', '--no-picture'],
                    str(d/'gone.pt')), "weights file of 'openshape-g14' not found"),
]

# index files: `ibsr query IMAGE --index BAD`
def _index_bytes(B, header=None, payload=None, **changes):
    "An index file from the good one's parts: `changes` replace header keys (checksums redone for a new payload)."
    h = dict(B.header if header is None else header, **changes)
    p = B.payload if payload is None else payload
    if payload is not None: h.update(payload_bytes=len(p), payload_sha256=hashlib.sha256(p).hexdigest())
    hb = json.dumps(h).encode() if not isinstance(h.get('_raw'), bytes) else h['_raw']
    return b'IBSRIDX1' + struct.pack('<Q', len(hb)) + hb + p

def _index_case(id, content, frag):
    def make(d, B):
        p = d/'bad.index'; p.write_bytes(content(B))
        return ['query', B.img, '--index', p, '--no-picture'], str(p)
    return C(id, 'index', make, frag)

def _raw_header(B, hb): return b'IBSRIDX1' + struct.pack('<Q', len(hb)) + hb + B.payload

INDEX_CASES = [
    _index_case('index-empty', lambda B: b'', 'not an ibsr_nb index file'),
    _index_case('index-npz', lambda B: b'PK\x03\x04' + b'\0' * 64, 'not an ibsr_nb index file'),
    _index_case('index-magic-only', lambda B: b'IBSRIDX1', 'truncated index file (header length missing)'),
    _index_case('index-header-huge', lambda B: b'IBSRIDX1' + struct.pack('<Q', 2 ** 62) + b'{}',
                'truncated index file'),
    _index_case('index-truncated', lambda B: B.raw[:-40], 'truncated or padded index file'),
    _index_case('index-padded', lambda B: B.raw + b'\0' * 8, 'truncated or padded index file'),
    _index_case('index-bitflip', lambda B: B.raw[:-10] + bytes([B.raw[-10] ^ 1]) + B.raw[-9:], 'checksum'),
    _index_case('index-header-not-json', lambda B: _raw_header(B, b'{not json'), 'corrupt index header'),
    _index_case('index-header-latin1', lambda B: _raw_header(B, b'{"caf\xe9": 1}'), 'corrupt index header'),
    _index_case('index-header-list', lambda B: _raw_header(B, b'[1, 2]'), 'corrupt index header'),
    _index_case('index-header-deep', lambda B: _raw_header(B, b'[' * 100_000 + b']' * 100_000), 'corrupt index header'),
    _index_case('index-header-missing-keys', lambda B: _raw_header(B, b'{"format": 1}'),
                'corrupt index header (missing'),
    _index_case('index-format-2', lambda B: _index_bytes(B, format=2), 'index format 2 is not supported'),
    _index_case('index-meta-list', lambda B: _index_bytes(B, meta=[1]), 'corrupt index header'),
    _index_case('index-meta-no-kind', lambda B: _index_bytes(B, meta={k: v for k, v in B.header['meta'].items()
                                                                      if k != 'kind'}), 'corrupt index header'),
    _index_case('index-shapes-list', lambda B: _index_bytes(B, shapes=['a', 'b']), 'corrupt index header'),
    _index_case('index-shapes-short', lambda B: _index_bytes(B, shapes={**B.header['shapes'], 'shape_id': ['a']}),
                'corrupt index'),
    _index_case('index-count-string', lambda B: _index_bytes(B, count='2'), 'corrupt index'),
    _index_case('index-count-wrong', lambda B: _index_bytes(B, count=5), 'shapes columns of lengths'),
    _index_case('index-payload-garbage', lambda B: _index_bytes(B, payload=b'\0' * 64), 'corrupt FAISS data'),
    _index_case('index-payload-empty', lambda B: _index_bytes(B, payload=b''), 'corrupt FAISS data'),
    _index_case('index-unknown-encoder', lambda B: _index_bytes(B, meta={**B.header['meta'], 'encoder': 'mystery'}),
                'name it with --encoder (an index never chooses a file to load)'),
    _index_case('index-checkpoint-path-in-meta', lambda B: _index_bytes(
        B, meta={**B.header['meta'], 'encoder': 'run', 'checkpoint': '/etc/passwd'}), 'an index never chooses a file'),
    C('index-missing', 'index', lambda d, B: (['query', B.img, '--index', d/'gone.index', '--no-picture'],
                                              str(d/'gone.index')), 'index file not found'),
    C('index-directory', 'index', lambda d, B: (['query', B.img, '--index', d, '--no-picture'], str(d)),
      'is a directory'),
]

# configs: `ibsr train BAD.yaml --out RUN`: refused before any work, no run directory made
def _config_case(id, text, frag, named="config.yaml"):
    def make(d, B):
        p = d/'config.yaml'
        p.write_bytes(text) if isinstance(text, bytes) else p.write_text(text)
        return ['train', p, '--out', d/'run'], str(p)
    return C(id, 'config', make, frag, after=lambda d, B, out, err: not (d/'run').exists() or pytest.fail('run dir'))

def _has_cuda():
    import torch
    return torch.cuda.is_available()

CONFIG_CASES = [_config_case(i, y, m) for i, y, m in _config_cases()]
CONFIG_CASES += [
    _config_case('cfg-not-utf8', b'mode: caf\xe9\n', 'not UTF-8 text'),
    _config_case('cfg-device-tpu9', 'mode: scratch\ndevice: tpu9', "key 'device': unknown device 'tpu9'"),
    _config_case('cfg-device-number', 'mode: scratch\ndevice: 3', "key 'device': unknown device '3'"),
    _config_case('cfg-steps-zero', 'mode: scratch\nsteps: 0', 'steps must be >= 1, got 0'),
    _config_case('cfg-batch-one', 'mode: scratch\nbatch_size: 1', 'batch_size must be >= 2'),
    _config_case('cfg-lr-negative', 'mode: scratch\nlr: -1e-3', 'lr must be > 0'),
    _config_case('cfg-mode-unknown', 'mode: distill', "mode must be one of"),
    _config_case('cfg-loss-unknown', 'mode: scratch\nloss: triplet', "loss must be one of"),
    _config_case('cfg-data-root-missing', 'mode: scratch\ndata_root: /no/such/folder',
                 "data_root '/no/such/folder' is not a"),
    _config_case('cfg-benchmark-unknown', 'mode: scratch\nbenchmark: imagenet',
                 "key 'benchmark': unknown benchmark 'imagenet'"),
    _config_case('cfg-empty-file', '', "mode 'finetune' needs `init`"),
    C('cfg-missing', 'config', lambda d, B: (['train', d/'gone.yaml', '--out', d/'run'], str(d/'gone.yaml')),
      'config file not found'),
    C('cfg-directory', 'config', lambda d, B: (['train', (d/'c.yaml').mkdir() or d/'c.yaml', '--out', d/'run'],
                                               str(d/'c.yaml')), 'is a directory'),
]
if not _has_cuda():
    CONFIG_CASES.append(_config_case('cfg-device-cuda-absent', 'mode: scratch\ndevice: cuda',
                                     "key 'device': 'cuda' but CUDA is not"))

# CLI misuse: options and arguments
def _argv(id, argv, frag, named=None, proc=False, after=None):
    "`argv(d, B)` -> the arguments; the first line must name `named` (default: the fragment)."
    return C(id, 'cli', lambda d, B: (argv(d, B), named or frag), frag, after=after, proc=proc)

_ix = lambda d, B, *extra: ['index', B.meshes, '--encoder', ENC, '--out', d/'o.index', *extra]
_q = lambda d, B, *extra: ['query', B.img, '--index', B.index, *extra]
_nothing_written = lambda d, B, out, err: not (d/'o.index').exists() or pytest.fail('an index was written')

CLI_CASES = [
    _argv('cli-no-command', lambda d, B: [], 'the following arguments are required: command'),
    _argv('cli-unknown-command', lambda d, B: ['serch'], "invalid choice: 'serch'", proc=True),
    _argv('cli-unknown-option', lambda d, B: _ix(d, B, '--fast'), 'unrecognized arguments: --fast'),
    _argv('cli-index-no-args', lambda d, B: ['index'], 'the following arguments are required'),
    _argv('cli-index-no-out', lambda d, B: ['index', B.meshes, '--encoder', ENC], '--out'),
    _argv('cli-chunk-zero', lambda d, B: _ix(d, B, '--chunk', '0'), '--chunk: must be at least 1', proc=True,
          after=_nothing_written),
    _argv('cli-chunk-negative', lambda d, B: _ix(d, B, '--chunk', '-4'), '--chunk: must be at least 1'),
    _argv('cli-chunk-word', lambda d, B: _ix(d, B, '--chunk', 'many'), "argument --chunk: invalid int value: 'many'"),
    _argv('cli-batch-zero', lambda d, B: _ix(d, B, '--batch', '0'), '--batch: must be at least 1'),
    _argv('cli-kind-unknown', lambda d, B: _ix(d, B, '--kind', 'annoy'), "argument --kind: invalid choice: 'annoy'"),
    _argv('cli-up-axis-x', lambda d, B: _ix(d, B, '--up-axis', 'x'), "argument --up-axis: invalid choice: 'x'"),
    _argv('cli-index-out-is-dir', lambda d, B: ['index', B.meshes, '--encoder', ENC, '--out', d],
          f'is a directory', named='--out'),
    _argv('cli-index-out-under-file', lambda d, B: ['index', B.meshes, '--encoder', ENC, '--out',
                                                    B.meshes/'chair.obj'/'x.index'], 'not a folder', named='--out'),
    _argv('cli-index-dir-is-file', lambda d, B: ['index', B.meshes/'chair.obj', '--encoder', ENC, '--out', d/'o.index'],
          'mesh folder not found', named='chair.obj'),
    _argv('cli-index-dir-missing', lambda d, B: ['index', d/'nope', '--encoder', ENC, '--out', d/'o.index'],
          'mesh folder not found', named='nope'),
    _argv('cli-index-empty-dir', lambda d, B: ['index', (d/'e').mkdir() or d/'e', '--encoder', ENC, '--out',
                                               d/'o.index'], 'no mesh files found', named=None),
    _argv('cli-encoder-unknown', lambda d, B: _ix(d, B)[:2] + ['--encoder', 'gpt-5'] + _ix(d, B)[4:],
          'gpt-5: unknown encoder'),
    _argv('cli-encoder-baseline', lambda d, B: _ix(d, B)[:2] + ['--encoder', 'cmic-tiny'] + _ix(d, B)[4:],
          'cannot build or query an index', named='cmic-tiny'),
    _argv('cli-encoder-needs-weights', lambda d, B: _ix(d, B)[:2] + ['--encoder', 'openshape-g14'] + _ix(d, B)[4:],
          'openshape-g14: needs its published weights file'),
    _argv('cli-weights-twice', lambda d, B: _ix(d, B)[:2] + ['--encoder', 'openshape-g14=a.pt', '--checkpoint', 'b.pt']
          + _ix(d, B)[4:], 'names its weights already', named='--checkpoint'),
    _argv('cli-k-zero', lambda d, B: _q(d, B, '-k', '0', '--no-picture'), '-k: must be at least 1'),
    _argv('cli-k-negative', lambda d, B: _q(d, B, '-k', '-3', '--no-picture'), '-k: must be at least 1'),
    _argv('cli-k-word', lambda d, B: _q(d, B, '-k', 'ten'), "argument -k: invalid int value: 'ten'"),
    _argv('cli-query-both', lambda d, B: _q(d, B, '--text', 'a chair'), 'not both and not neither', named='query'),
    _argv('cli-query-neither', lambda d, B: ['query', '--index', B.index], 'not both and not neither', named='query'),
    _argv('cli-query-empty-text', lambda d, B: ['query', '--text', ' ', '--index', B.index], 'the text is empty',
          named='--text'),
    _argv('cli-query-no-index', lambda d, B: ['query', B.img], 'the following arguments are required: --index'),
    _argv('cli-query-checkpoint-alone', lambda d, B: _q(d, B, '--checkpoint', d/'w.pt'), '--checkpoint: goes with'),
    _argv('cli-query-out-is-dir', lambda d, B: _q(d, B, '--out', d), 'is a directory', named='--out'),
    _argv('cli-query-out-under-file', lambda d, B: _q(d, B, '--out', B.img/'p.png'), 'not a folder', named='--out'),
    _argv('cli-query-html-is-dir', lambda d, B: _q(d, B, '--html', d, '--no-picture'), 'is a directory',
          named='--html'),
    _argv('cli-query-other-encoder', lambda d, B: _q(d, B, '--encoder', 'random-ppat-tiny-l', '--no-picture'),
          "built with encoder 'random-ppat-tiny-s'", named=None),
    _argv('cli-train-nothing', lambda d, B: ['train'], 'give a CONFIG.yaml, or --resume RUN_DIR', named='train'),
    _argv('cli-train-resume-missing', lambda d, B: ['train', '--resume', d/'nope'], 'nothing to resume', named='nope'),
    _argv('cli-train-out-vs-resume', lambda d, B: ['train', '--resume', d/'a', '--out', d/'b'],
          '--out and --resume name different run directories'),
    _argv('cli-evaluate-missing', lambda d, B: ['evaluate', d/'nope', '--benchmark', 'pix3d-like'],
          'no such checkpoint or run directory', named='nope'),
    _argv('cli-evaluate-no-benchmark', lambda d, B: ['evaluate', d],
          'the following arguments are required: --benchmark'),
    _argv('cli-evaluate-split', lambda d, B: ['evaluate', d, '--benchmark', 'pix3d-like', '--split', 'val'],
          "argument --split: invalid choice: 'val'"),
    _argv('cli-evaluate-benchmark', lambda d, B: ['evaluate', d, '--benchmark', 'x'],
          "argument --benchmark: invalid choice: 'x'"),
    _argv('cli-reproduce-jobs-zero', lambda d, B: ['reproduce', '--smoke', '--jobs', '0', '--out', d/'p'],
          '--jobs: must be at least 1'),
    _argv('cli-reproduce-out-is-file', lambda d, B: ['reproduce', '--smoke', '--out', B.img],
          'not a folder', named='--out'),
    _argv('cli-reproduce-bad-checkpoint', lambda d, B: ['reproduce', '--smoke', '--checkpoint', 'bad', '--out', d/'p'],
          "--checkpoint 'bad': expected NAME=PATH"),
    _argv('cli-reproduce-towers', lambda d, B: ['reproduce', '--smoke', '--tower-weights', 'x', '--out', d/'p'],
          '--tower-weights: expects NAME=FILE'),
    _argv('cli-reproduce-quick-and-full', lambda d, B: ['reproduce', '--quick', '--full'],
          'argument --full: not allowed with argument --quick'),
]

CASES = (MESH_CASES + IMAGE_CASES + DATASET_CASES + PICKLE_CASES + CHECKPOINT_CASES + INDEX_CASES + CONFIG_CASES
         + CLI_CASES)
for _c in CASES:                                    # one of each kind through the installed console script as well
    _c.proc = _c.proc or _c.id in ('mesh-obj-nan', 'img-png-bomb-header', 'json-pix3d-path-escape', 'ck-run-malicious',
                                   'index-shapes-list', 'cfg-device-tpu9')


def test_corpus_size_and_ids():
    ids = [c.id for c in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids), (len(ids), len(set(ids)))
    kinds = {c.kind for c in CASES}
    assert kinds == {'mesh', 'image', 'dataset', 'pickle', 'checkpoint', 'index', 'config', 'cli'}, kinds


_WARNING = re.compile(r'\d\d:\d\d:\d\d \S+ WARNING: |\S+\.py:\d+: \w*Warning: |  ')

@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_malformed_input_through_the_cli(case, B, tmp_path):
    d = tmp_path/'case'; d.mkdir()
    argv, named = case.make(d, B)
    code, out, err = (run_lib(argv) if callable(argv) else run_proc(argv) if case.proc else run_main(argv))
    assert 'Traceback' not in out + err, err
    assert code == case.code, (code, out, err)
    if case.code != 0:                    # a logged warning may come before the error (logging writes to the real stderr)
        lines = [l for l in err.splitlines() if not _WARNING.match(l)]
        first = lines[0] if lines else ''
        assert first.startswith('error: '), err
        assert (named or case.frag) in first, (named, first)
        assert case.frag in err, (case.frag, err)
    if case.after is not None: case.after(d, B, out, err)
