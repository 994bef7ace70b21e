"""Hardening beyond the input corpus: the `skipped` file of `ibsr index`, stale `.parts` folders of failed or killed
builds cleaned without touching a live writer's, an interrupted `ibsr reproduce` run that finishes on the next call
(evaluated, not retrained; or resumed), devices refused at config validation, and one `CheckpointError` type."""
import io, os, sys, json, contextlib, subprocess
from pathlib import Path
import pytest

ENC = 'random-ppat-tiny-s'


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv('IBSR_PROGRESS', '0')
    monkeypatch.setenv('IBSR_NUM_THREADS', '1')


def run_main(*argv):
    from ibsr_nb.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()

def _folder(d: Path) -> Path:
    from ibsr_nb.shapes import make_shape
    (d/'chair').mkdir(parents=True)
    make_shape('chair', 0).mesh.export(d/'chair'/'a.obj')
    make_shape('table', 0).mesh.export(d/'table.ply')
    (d/'chair'/'broken.obj').write_text('')
    (d/'car.3ds').write_bytes(b'MM\0\0')
    (d/'.cache').mkdir(); (d/'.cache'/'x.obj').write_text('v 0 0 0')
    return d


def test_skipped_file_lists_failures_unsupported_files_and_folders(tmp_path):
    meshes = _folder(tmp_path/'meshes')
    code, out, err = run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'out'/'g.index', '--json')
    assert code == 0, err
    res = json.loads(out)
    tsv = tmp_path/'out'/'g.index.skipped.tsv'
    assert res['skipped_file'] == str(tsv) and res['indexed'] == 2
    lines = tsv.read_text().splitlines()
    assert lines[0] == 'path\tkind\treason'
    rows = [l.split('\t') for l in lines[1:]]
    assert [r[:2] for r in rows] == [['chair/broken.obj', 'error'], ['car.3ds', 'unsupported'], ['.cache/', 'folder']]
    assert 'empty file' in rows[0][2] and all(len(r) == 3 for r in rows)
    code, out, err = run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'out'/'g.index')
    assert code == 0 and f'3 file(s) and folder(s) not indexed, listed in {tsv}' in out, out

    (meshes/'chair'/'broken.obj').unlink(); (meshes/'car.3ds').unlink(); (meshes/'.cache'/'x.obj').unlink()
    (meshes/'.cache').rmdir()
    code, out, err = run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'out'/'g.index')
    assert code == 0 and 'listed in' not in out
    assert tsv.read_text() == 'path\tkind\treason\n'                     # rewritten: it describes the index beside it


def test_every_file_bad_still_writes_the_skipped_file(tmp_path):
    (tmp_path/'m').mkdir()
    (tmp_path/'m'/'a.obj').write_text('')
    (tmp_path/'m'/'b.stl').write_text('solid\nendsolid\n')
    code, out, err = run_main('index', tmp_path/'m', '--encoder', ENC, '--out', tmp_path/'g.index')
    assert code == 2 and 'none of the 2 mesh files could be read' in err and 'all listed in' in err
    assert not (tmp_path/'g.index').exists()
    rows = (tmp_path/'g.index.skipped.tsv').read_text().splitlines()[1:]
    assert [l.split('\t')[0] for l in rows] == ['a.obj', 'b.stl']


def test_stale_parts_cleaned_but_not_a_live_writers(tmp_path):
    "Work folders of builds that failed or were killed go on the next build into the folder; a locked one stays."
    meshes = _folder(tmp_path/'meshes')
    out = tmp_path/'out'; out.mkdir()
    # a killed build: its chunks and log, no index; an old one; a finished build's parts (kept for re-indexing)
    for name in ('killed.index', 'live.index', 'done.index', 'recent.index'):
        (out/f'{name}.parts').mkdir(); (out/f'{name}.parts'/'progress-000.jsonl').write_text('{"file": "x"}\n')
    (out/'done.index').write_bytes(b'x')
    (out/'.other.index.k3j9.tmp').write_bytes(b'debris')
    for p in out.rglob('*'):
        if 'recent' not in p.as_posix(): os.utime(p, (1e9, 1e9))        # untouched since 2001; recent.index.parts: now
    holder = ('import sys, time, filelock\nwith filelock.FileLock(sys.argv[1]):\n'
              ' print("held", flush=True); time.sleep(120)')
    p = subprocess.Popen([sys.executable, '-c', holder, str(out/'.live.index.lock')], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'held'                     # a concurrent writer of live.index
        code, o, err = run_main('index', meshes, '--encoder', ENC, '--out', out/'new.index')
    finally: p.kill(); p.wait()
    assert code == 0, err
    assert f'removed {out/"killed.index.parts"} (left by a failed or killed run)' in err
    assert f'removed {out/".other.index.k3j9.tmp"}' in err
    left = sorted(q.name for q in out.iterdir() if q.name.endswith('.parts'))
    assert left == ['done.index.parts', 'live.index.parts', 'new.index.parts', 'recent.index.parts'], left


def test_orphan_chunks_of_a_killed_write_are_removed(tmp_path):
    "A chunk written but never logged (killed between the two) is dropped after the next build; used ones stay."
    import numpy as np
    meshes = _folder(tmp_path/'meshes')
    assert run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'g.index')[0] == 0
    parts = tmp_path/'g.index.parts'
    used = sorted(p.name for p in parts.glob('emb_*.npy'))
    np.save(parts/'emb_000_deadbeef0000.npy', np.zeros((2, 128), np.float32))
    assert run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'g.index')[0] == 0
    assert sorted(p.name for p in parts.glob('emb_*.npy')) == used


# ---------------------------------------------------------------- an interrupted reproduce finishes on the next call
def _recipe():
    from ibsr_nb.model import TrainConfig
    from ibsr_nb.paper import Recipe
    cfg = TrainConfig(mode='scratch', benchmark='pix3d-like', quick=True, point_encoder='ppat-tiny-s', steps=4,
                      batch_size=8, n_points=128, warmup_steps=1, eval_every=2, log_every=1, save_every=2, seed=1)
    return Recipe('interrupted', 'train', cfg, {}, evals=('pix3d-like',))

def test_reproduce_killed_between_training_and_evaluation_evaluates(tmp_path, monkeypatch):
    import ibsr_nb.paper as paper
    r, root = _recipe(), tmp_path/'paper'
    real_train, real_eval, trained = paper.train, paper.evaluate, []
    monkeypatch.setattr(paper, 'train', lambda *a, **kw: (trained.append(kw), real_train(*a, **kw))[1])
    def killed(*a, **kw): raise KeyboardInterrupt('killed before the evaluation')
    monkeypatch.setattr(paper, 'evaluate', killed)
    with pytest.raises(KeyboardInterrupt): paper.run_recipe(r, root)
    run = r.run_dir(root)
    assert (run/'checkpoints'/'last.pt').exists() and (run/'summary.json').exists()
    assert not (run/'results.json').exists()
    monkeypatch.setattr(paper, 'evaluate', real_eval)
    res = paper.run_recipe(r, root)                                       # used to fail: "already holds a run"
    assert len(trained) == 1                                             # evaluated, not retrained
    assert res['summary']['step'] == 4 and 'pix3d-like' in res['evals'] and (run/'results.json').exists()

def test_reproduce_killed_during_training_resumes(tmp_path, monkeypatch):
    import ibsr_nb.paper as paper
    r, root = _recipe(), tmp_path/'paper'
    real_train, calls = paper.train, []
    def killed_at_2(cfg, run_dir, resume=False):
        real_train(cfg, run_dir, resume=resume, stop_at=2); raise KeyboardInterrupt('killed at step 2')
    monkeypatch.setattr(paper, 'train', killed_at_2)
    with pytest.raises(KeyboardInterrupt): paper.run_recipe(r, root)
    run = r.run_dir(root)
    assert (run/'checkpoints'/'last.pt').exists() and not (run/'summary.json').exists()
    monkeypatch.setattr(paper, 'train', lambda *a, **kw: (calls.append(kw), real_train(*a, **kw))[1])
    res = paper.run_recipe(r, root)
    assert calls == [{'resume': True}] and res['summary']['step'] == 4 and res['summary']['completed']


# ---------------------------------------------------------------- devices and checkpoint errors
@pytest.mark.parametrize('device, fragment', [('tpu9', "key 'device': unknown device 'tpu9'"),
                                              ('cuda:banana', "key 'device': unknown device"),
                                              ('meta', "key 'device': unknown device 'meta'")])
def test_unknown_devices_refused_at_validation(device, fragment):
    from ibsr_nb.core import ConfigError
    from ibsr_nb.model import TrainConfig
    with pytest.raises(ConfigError, match=fragment) as e:
        TrainConfig(mode='scratch', device=device).validate('run.yaml')
    assert str(e.value).startswith('run.yaml: ')

def test_cuda_refused_without_cuda_and_accepted_with_it():
    import torch
    from ibsr_nb.core import ConfigError
    from ibsr_nb.model import TrainConfig
    cfg = TrainConfig(mode='scratch', device='cuda')
    if torch.cuda.is_available():
        cfg.validate()
        with pytest.raises(ConfigError, match='CUDA device'):
            cfg.replace(device=f'cuda:{torch.cuda.device_count()}').validate()
    else:
        with pytest.raises(ConfigError, match="key 'device': 'cuda' but CUDA is not available here"): cfg.validate()
    TrainConfig(mode='scratch', device='cpu').validate()

def test_one_checkpoint_error_type(tmp_path):
    from ibsr_nb import core, pretrained
    assert issubclass(pretrained.CheckpointError, core.CheckpointError)
    assert issubclass(core.CheckpointError, core.IbsrError)
    bad = tmp_path/'w.pt'; bad.write_bytes(b'not weights')
    with pytest.raises(core.CheckpointError, match=r'w\.pt: not a PyTorch checkpoint'): pretrained.read_checkpoint(bad)
    code, out, err = run_main('index', tmp_path, '--encoder', f'openshape-g14={bad}', '--out', tmp_path/'g.index')
    assert code == 2 and err.startswith(f'error: {bad}: not a PyTorch checkpoint') and 'Traceback' not in err
