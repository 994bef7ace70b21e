"""Published checkpoint layouts: every registry entry round-trips, and malformed or unsafe files fail clearly.

The notebook `07_pretrained` shows the main cases; this file covers the long tail of bad inputs (one test per
kind of breakage, each checking that the error names the file and the problem) and a hypothesis property
test of the missing-key report. Full-size round trips run only when IBSR_QUICK is off.
"""
import argparse, functools, os, pickle, subprocess, sys, zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

from ibsr_nb.core import is_quick
from ibsr_nb.models.point import create_point_encoder, count_parameters
from ibsr_nb.pretrained import (REGISTRY, CheckpointError, get_spec, load_pretrained, read_checkpoint,
                                save_in_published_layout, fitting_layouts, PretrainedSpec)

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(int(os.environ.get('IBSR_NUM_THREADS', 0) or 1))


def tiny(name):
    spec = REGISTRY[name]
    torch.manual_seed(0)
    return create_point_encoder(spec.tiny_arch, **spec.tiny_overrides).eval()

def tiny_kw(name):
    spec = REGISTRY[name]
    return dict(arch=spec.tiny_arch, **spec.tiny_overrides)

def clouds(enc, n=2, points=1024):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, points, enc.in_channels, generator=g) * 2 - 1

@pytest.fixture(scope='module')
def g14_file(tmp_path_factory):
    "A tiny encoder written in the G14 layout, and the file."
    enc = tiny('openshape-g14')
    return enc, save_in_published_layout(enc, 'openshape-g14', tmp_path_factory.mktemp('g14')/'model.pt')

def rewrite(src, dst, edit):
    "Load a (trusted, test-written) checkpoint, apply `edit`, save it elsewhere."
    ckpt = torch.load(src, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)
    return dst


# ---------------------------------------------------------------- round trips in every published layout

@pytest.mark.parametrize('name', sorted(REGISTRY))
def test_tiny_round_trip_in_published_layout(name, tmp_path):
    enc = tiny(name)
    f = save_in_published_layout(enc, name, tmp_path/f'{name}.pt')
    back = load_pretrained(name, f, **tiny_kw(name))
    assert not back.training and type(back) is type(enc)
    x = clouds(enc)
    with torch.no_grad(): assert torch.equal(back.encode(x), enc.encode(x))
    assert back.preprocess == enc.preprocess
    assert fitting_layouts(read_checkpoint(f)).count(name) == 1


@pytest.mark.parametrize('name', sorted(REGISTRY))
def test_file_has_the_published_container_and_prefixes(name, tmp_path):
    spec, enc = REGISTRY[name], tiny(name)
    raw = read_checkpoint(save_in_published_layout(enc, name, tmp_path/'m.pt'))
    if spec.layout == 'openshape-ddp':
        assert {'state_dict', 'epoch', 'optimizer', 'logit_scale'} <= set(raw)
        assert all(k.startswith('module.ppat.') or k.startswith('module.proj.') for k in raw['state_dict'])
        assert raw['state_dict']['module.ppat.cls_token'].ndim == 1
    elif spec.layout == 'openshape-flat':
        assert all(k.startswith(('pc_encoder.ppat.', 'pc_encoder.proj.')) for k in raw)
        assert 'pc_encoder.proj.weight' in raw
    elif spec.layout == 'openshape-flat-noproj':
        assert all(k.startswith('pc_encoder.') and not k.startswith(('pc_encoder.ppat.', 'pc_encoder.proj.')) for k in raw)
        assert 'pc_encoder.cls_token' in raw and 'pc_encoder.lift.2.weight' in raw
    else:
        assert spec.layout == 'ulip-ddp'
        assert isinstance(raw['args'], argparse.Namespace)
        sd = raw['state_dict']
        assert all(k.startswith('module.point_encoder.') or k in ('module.pc_projection', 'module.logit_scale') for k in sd)
        assert sd['module.pc_projection'].shape == (enc.pc_projection.shape[0], enc.embed_dim)   # [in, out]


def test_g14_without_state_dict_level_loads(g14_file, tmp_path):
    enc, f = g14_file
    torch.save(read_checkpoint(f)['state_dict'], tmp_path/'demo.pt')
    back = load_pretrained('openshape-g14', tmp_path/'demo.pt', **tiny_kw('openshape-g14'))
    x = clouds(enc)
    with torch.no_grad(): assert torch.equal(back.encode(x), enc.encode(x))


@pytest.mark.parametrize('name,extras', [
    ('openshape-g14', dict(optimizer={'state': {}, 'param_groups': [{'lr': 5e-4}]}, epoch=7, best_lvis_acc=0.5, tau=torch.tensor(0.07))),
    ('openshape-l14', dict(tau=torch.tensor(0.07), logit_scale=torch.tensor(2.0))),
    ('openshape-b32', dict(tau=torch.tensor(0.07))),
    ('ulip2-pointbert', dict(best_acc1=55.0, scaler={'scale': 1024.0}, args=argparse.Namespace(model='ULIP2_PointBERT_Colored', npoints=10000))),
])
def test_known_extras_are_ignored_by_name(name, extras, tmp_path):
    enc = tiny(name)
    f = save_in_published_layout(enc, name, tmp_path/'m.pt', **extras)
    assert set(extras) <= set(read_checkpoint(f))
    back = load_pretrained(name, f, **tiny_kw(name))
    with torch.no_grad(): assert torch.equal(back.encode(clouds(enc)), enc.encode(clouds(enc)))


def test_ulip1_towers_are_ignored(tmp_path):
    enc = tiny('ulip1-pointbert')
    towers = {'module.visual.blocks.0.attn.qkv.weight': torch.zeros(2304, 768), 'module.image_projection': torch.zeros(768, 512),
              'module.text_projection': torch.zeros(512, 512), 'module.ln_final.weight': torch.zeros(512),
              'module.positional_embedding': torch.zeros(77, 512)}
    f = save_in_published_layout(enc, 'ulip1-pointbert', tmp_path/'m.pt', extra_state=towers)
    back = load_pretrained('ulip1-pointbert', f, **tiny_kw('ulip1-pointbert'))
    with torch.no_grad(): assert torch.equal(back.encode(clouds(enc)), enc.encode(clouds(enc)))


def test_fp16_checkpoint_loads_as_float32(g14_file, tmp_path):
    enc, f = g14_file
    half = rewrite(f, tmp_path/'half.pt', lambda c: c['state_dict'].update(
        {k: v.half() for k, v in c['state_dict'].items() if v.is_floating_point()}))
    back = load_pretrained('openshape-g14', half, **tiny_kw('openshape-g14'))
    assert all(p.dtype == torch.float32 for p in back.parameters())
    with torch.no_grad(): torch.testing.assert_close(back.encode(clouds(enc)), enc.encode(clouds(enc)), atol=0.05, rtol=0.05)


# ---------------------------------------------------------------- checkpoints that must not load

def _pop(key): return lambda c: c['state_dict'].pop(key)
def _put(key, value): return lambda c: c['state_dict'].update({key: value})
def _rename(old, new): return lambda c: c['state_dict'].update({new: c['state_dict'].pop(old)})

@pytest.mark.parametrize('edit,expected', [
    (_pop('module.ppat.lift.2.weight'), "missing keys (1) ['state_dict/module.ppat.lift.2.weight']"),
    (_pop('module.ppat.sa.mlp_bns.0.num_batches_tracked'), "missing keys (1) ['state_dict/module.ppat.sa.mlp_bns.0.num_batches_tracked']"),
    (_put('module.ppat.pe.0.weight', torch.zeros(64, 3, 1, 1)), "unexpected keys (1) ['state_dict/module.ppat.pe.0.weight']"),
    (_put('module.proj.weight', torch.zeros(1280, 128)), "wrong shapes (1) ['state_dict/module.proj.weight: file (1280, 128) vs model (128, 128)']"),
    (_put('module.ppat.cls_token', torch.zeros(1, 1, 128)), "wrong shapes (1) ['state_dict/module.ppat.cls_token: file (1, 1, 128) vs model (128,)']"),
    (_put('module.proj.bias', [0.0] * 128), "non-tensor entries (1) ['state_dict/module.proj.bias']"),
    (_rename('module.ppat.cls_token', 'moduleXppat.cls_token'), "unexpected keys (1) ['state_dict/moduleXppat.cls_token']"),
    (_rename('module.ppat.cls_token', 'module.module.ppat.cls_token'), "unexpected keys (1) ['state_dict/module.module.ppat.cls_token']"),
    (_rename('module.ppat.cls_token', 'ppat.cls_token'), "unexpected keys (1) ['state_dict/ppat.cls_token']"),
    (lambda c: c.update({'my_notes': 'hello'}), "unexpected keys (1) ['my_notes']"),
    (lambda c: c['state_dict'].clear(), "not in the openshape-ddp layout of 'openshape-g14'"),
])
def test_bad_state_dicts_name_the_file_and_the_keys(g14_file, tmp_path, edit, expected):
    _, f = g14_file
    bad = rewrite(f, tmp_path/'bad.pt', edit)
    with pytest.raises(CheckpointError) as e: load_pretrained('openshape-g14', bad, **tiny_kw('openshape-g14'))
    assert str(bad) in str(e.value) and expected in str(e.value), str(e.value)


def test_missing_keys_are_reported_together_with_shapes(g14_file, tmp_path):
    _, f = g14_file
    def edit(c):
        c['state_dict'].pop('module.proj.bias'); c['state_dict']['module.ppat.lift.0.bias'] = torch.zeros(3)
    bad = rewrite(f, tmp_path/'bad.pt', edit)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\).*wrong shapes \(1\)"):
        load_pretrained('openshape-g14', bad, **tiny_kw('openshape-g14'))


@pytest.mark.parametrize('written,read_as', [
    ('openshape-g14', 'openshape-l14'), ('openshape-g14', 'ulip2-pointbert'), ('openshape-l14', 'openshape-g14'),
    ('ulip2-pointbert', 'openshape-g14'), ('ulip2-pointbert', 'openshape-b32'), ('openshape-b32', 'ulip1-pointbert'),
])
def test_wrong_layout_is_named(written, read_as, tmp_path):
    f = save_in_published_layout(tiny(written), written, tmp_path/'m.pt')
    with pytest.raises(CheckpointError) as e: load_pretrained(read_as, f, **tiny_kw(read_as))
    msg = str(e.value)
    assert str(f) in msg and f'not in the {REGISTRY[read_as].layout} layout of {read_as!r}' in msg, msg
    assert written in msg, msg                     # the hint names the layout the file does fit


def test_same_layout_other_architecture_is_a_shape_error(tmp_path):
    f = save_in_published_layout(tiny('openshape-g14'), 'openshape-g14', tmp_path/'m.pt')
    with pytest.raises(CheckpointError, match='wrong shapes'): load_pretrained('openshape-g14', f, arch='ppat-tiny-l')
    with pytest.raises(CheckpointError, match=r"does not match 'openshape-g14'.*wrong shapes"): load_pretrained('openshape-g14', f)


def test_l14_file_as_b32_is_an_error_not_a_partial_load(tmp_path):
    f = save_in_published_layout(tiny('openshape-l14'), 'openshape-l14', tmp_path/'m.pt')
    with pytest.raises(CheckpointError, match=r"none of its keys belongs to this model; its keys fit the layout of \['openshape-l14'\]"):
        load_pretrained('openshape-b32', f, **tiny_kw('openshape-b32'))


# ---------------------------------------------------------------- files that are not checkpoints, or unsafe

class _Shell:
    def __reduce__(self): return (os.system, ('echo pwned > "$IBSR_PWN_MARKER"',))

class _Custom:
    def __init__(self): self.x = 1

def _write_bytes(data): return lambda p: p.write_bytes(data)

@pytest.mark.parametrize('make,expected', [
    (lambda p: p.write_text('hello, I am a text file'), 'not a PyTorch checkpoint'),
    (lambda p: p.write_text('{"state_dict": {}}'), 'not a PyTorch checkpoint'),
    (_write_bytes(b''), 'not a PyTorch checkpoint'),
    (_write_bytes(bytes(range(256)) * 8), 'not a PyTorch checkpoint'),
    (lambda p: zipfile.ZipFile(p, 'w').writestr('a.txt', 'zip, not torch'), 'not a PyTorch checkpoint'),
    (lambda p: p.write_bytes(pickle.dumps({'state_dict': {}})), 'not a PyTorch checkpoint'),
    (lambda p: torch.save([torch.zeros(1)], p), 'expected a dict checkpoint, got list'),
    (lambda p: torch.save(torch.zeros(3), p), 'expected a dict checkpoint, got Tensor'),
    (lambda p: torch.save({'state_dict': {}, 'x': _Custom()}, p), '._Custom: the file holds an object outside the allow-list'),
    (lambda p: torch.save({'state_dict': {}, 'f': functools.partial(print, 1)}, p), 'refusing to load functools.partial'),
    (lambda p: torch.save({'args': argparse.Namespace(hook=os.getcwd)}, p), 'refusing to load posix.getcwd'),
])
def test_not_a_checkpoint(make, expected, tmp_path):
    f = tmp_path/'file.pt'
    make(f)
    with pytest.raises(CheckpointError) as e: load_pretrained('openshape-g14', f, **tiny_kw('openshape-g14'))
    assert str(f) in str(e.value) and expected in str(e.value), str(e.value)


def test_truncated_checkpoint(g14_file, tmp_path):
    _, f = g14_file
    cut = tmp_path/'cut.pt'
    cut.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f'{cut}: not a PyTorch checkpoint'): load_pretrained('openshape-g14', cut)


def test_code_in_a_pickle_is_never_run(tmp_path, monkeypatch):
    marker = tmp_path/'pwned'
    monkeypatch.setenv('IBSR_PWN_MARKER', str(marker))
    f = tmp_path/'evil.pt'
    torch.save({'state_dict': {}, 'payload': _Shell()}, f)
    with pytest.raises(CheckpointError, match=r'evil\.pt: refusing to load posix\.system'): load_pretrained('openshape-g14', f)
    with pytest.raises(CheckpointError, match='refusing to load'): read_checkpoint(f)
    assert not marker.exists()


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pt: checkpoint file not found'): load_pretrained('openshape-g14', tmp_path/'nope.pt')
    with pytest.raises(CheckpointError, match='not a file'): load_pretrained('openshape-g14', tmp_path)


def test_unknown_registry_name():
    with pytest.raises(KeyError, match="unknown pretrained encoder 'openshape-g15'"): get_spec('openshape-g15')


# ---------------------------------------------------------------- writer errors

def test_writer_refuses_what_the_layout_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"no place for \(2\) \['proj.bias', 'proj.weight'\]"):
        save_in_published_layout(tiny('openshape-g14'), 'openshape-b32', tmp_path/'m.pt')
    with pytest.raises(ValueError, match='holds a ULIPPointBERTEncoder, got PPATEncoder'):
        save_in_published_layout(tiny('openshape-g14'), 'ulip2-pointbert', tmp_path/'m.pt')
    with pytest.raises(ValueError, match=r"unknown top-level entries \['notes'\]"):
        save_in_published_layout(tiny('openshape-g14'), 'openshape-g14', tmp_path/'m.pt', notes='x')
    with pytest.raises(ValueError, match="extra_state key 'module.foo' is not an ignorable entry"):
        save_in_published_layout(tiny('ulip2-pointbert'), 'ulip2-pointbert', tmp_path/'m.pt', extra_state={'module.foo': torch.zeros(1)})
    assert not (tmp_path/'m.pt').exists()


def test_write_is_atomic(g14_file, tmp_path):
    enc, _ = g14_file
    f = save_in_published_layout(enc, 'openshape-g14', tmp_path/'m.pt')
    before = f.read_bytes()
    class Boom:
        def __reduce__(self): raise RuntimeError('disk full')
    with pytest.raises(Exception, match='disk full'):
        save_in_published_layout(enc, 'openshape-g14', f, config={'x': Boom()})
    assert f.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ['m.pt']


# ---------------------------------------------------------------- property: every dropped key is reported

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_dropped_keys_are_all_reported(g14_file, tmp_path, data):
    _, f = g14_file
    keys = sorted(read_checkpoint(f)['state_dict'])
    drop = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=6, unique=True))
    bad = rewrite(f, tmp_path/'drop.pt', lambda c: [c['state_dict'].pop(k) for k in drop])
    with pytest.raises(CheckpointError) as e: load_pretrained('openshape-g14', bad, **tiny_kw('openshape-g14'))
    msg = str(e.value)
    assert f'missing keys ({len(drop)})' in msg and 'unexpected' not in msg
    assert all(f"'state_dict/{k}'" in msg for k in drop), msg


# ---------------------------------------------------------------- registry facts

def test_registry_entries_build_with_published_counts():
    for spec in REGISTRY.values():
        with torch.device('meta'): enc = create_point_encoder(spec.arch)
        assert count_parameters(enc) == spec.params and enc.embed_dim == spec.embed_dim, spec.name
        assert enc.preprocess == spec.preprocess and enc.in_channels == spec.in_channels, spec.name
        assert PretrainedSpec.from_yaml(spec.to_yaml()) == spec


def test_import_pulls_in_no_compiled_point_ops():
    code = ("import sys, ibsr_nb.models.point, ibsr_nb.pretrained\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pointnet2_ops', 'knn_cuda', 'dgl', 'MinkowskiEngine', 'torch_redstone', 'open_clip')]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(is_quick(), reason='full-size checkpoints (90-130 MB each); run with IBSR_QUICK=0')
@pytest.mark.parametrize('name', sorted(REGISTRY))
def test_full_size_round_trip(name, tmp_path):
    spec = REGISTRY[name]
    torch.manual_seed(0)
    enc = create_point_encoder(spec.arch).eval()
    f = save_in_published_layout(enc, name, tmp_path/'full.pt')
    back = load_pretrained(name, f)
    assert count_parameters(back) == spec.params
    x = torch.rand(1, spec.n_points, spec.in_channels) * 2 - 1
    with torch.no_grad(): assert torch.equal(back.encode(x), enc.encode(x))
