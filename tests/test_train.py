"""Training runs: exact resume on CPU, 2-process DDP equals one process, a kill during a checkpoint write leaves a
good `last.pt`, and the `ibsr train` / `ibsr evaluate` parsers.

The runs are tiny (a handful of steps of the smallest point encoder on the quick pix3d-like benchmark, with the
frozen random tower's embeddings cached), so each test stays well under a minute on one thread.
"""
import os, sys, io, json, signal, argparse, subprocess, textwrap
from pathlib import Path
import pandas as pd
import pytest
import torch

from ibsr_nb.model import TrainConfig, load_checkpoint
from ibsr_nb.train import train
from ibsr_nb.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
# Columns that must agree exactly between runs (timing columns naturally differ).
EXACT = ['step', 'epoch', 'loss', 'loss_pi', 'acc_pi', 'grad_norm', 'grad_logit_scale', 'lr', 'logit_scale',
         'val_acc@1', 'val_acc@10', 'val_cat_acc', 'val_map@10']

def tiny(**kw) -> TrainConfig:
    "A run of a few seconds: scratch mode (frozen random tower, cached embeddings), 6 steps of batch 8."
    base = dict(mode='scratch', benchmark='pix3d-like', quick=True, point_encoder='ppat-tiny-s', steps=6, batch_size=8,
                n_points=128, warmup_steps=2, eval_every=3, log_every=1, save_every=100, seed=3)
    return TrainConfig(**{**base, **kw})

def env(**extra) -> dict:
    "Environment of a child process: one thread, quick mode, no progress bars, the same IBSR_HOME."
    e = dict(os.environ, IBSR_NUM_THREADS='1', IBSR_QUICK='1', IBSR_PROGRESS='0', OMP_NUM_THREADS='1', **extra)
    e['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    return e

def metrics(run_dir) -> pd.DataFrame:
    df = pd.read_csv(Path(run_dir)/'metrics.csv')
    return df[[c for c in EXACT if c in df]]

def weights(run_dir, name='last.pt') -> dict:
    return load_checkpoint(Path(run_dir)/'checkpoints'/name)['model']

@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    "One uninterrupted reference run shared by the resume and kill tests."
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('straight')
    summary = train(tiny(), d/'run')
    return d/'run', summary

def test_resume_equals_straight_run(straight, tmp_path):
    ref, ref_summary = straight
    part = train(tiny(), tmp_path/'run', stop_at=4)            # "interrupted" after step 4 (between two evals)
    assert part['step'] == 4 and not part['completed'] and not (tmp_path/'run'/'summary.json').exists()
    assert load_checkpoint(tmp_path/'run'/'checkpoints'/'last.pt')['step'] == 4
    done = train(None, tmp_path/'run', resume=True)
    assert done['completed'] and done['step'] == 6
    pd.testing.assert_frame_equal(metrics(tmp_path/'run'), metrics(ref), check_exact=True)
    a, b = weights(tmp_path/'run'), weights(ref)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert done['final_val'] == ref_summary['final_val'] and done['best_step'] == ref_summary['best_step']

def test_resume_refuses_a_changed_config_and_a_used_directory(straight, tmp_path):
    ref, _ = straight
    with pytest.raises(ValueError, match=r'other settings \(lr\)'): train(tiny(lr=5e-3), ref, resume=True)
    with pytest.raises(ValueError, match='already holds a run'): train(tiny(), ref)
    with pytest.raises(FileNotFoundError, match='nothing to resume'): train(None, tmp_path/'empty', resume=True)

KILLER = textwrap.dedent('''
    import io, os, sys, signal, torch
    real_save, calls = torch.save, []
    def dying_save(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get('kind') == 'last':
            calls.append(obj['step'])
            if len(calls) == 2:                       # the second checkpoint: write half of it, then die
                buf = io.BytesIO(); real_save(obj, buf); data = buf.getvalue()
                with open(f, 'wb') as fh:
                    fh.write(data[:len(data) // 2]); fh.flush(); os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *a, **kw)
    torch.save = dying_save
    from ibsr_nb.model import TrainConfig
    from ibsr_nb.train import train
    train(TrainConfig.load(sys.argv[1]), sys.argv[2])
''')

def test_kill_during_checkpoint_write_keeps_last_checkpoint(straight, tmp_path):
    ref, _ = straight
    cfg = tiny(save_every=2)                                   # checkpoints after steps 2, 4, 6
    cfg.save(tmp_path/'cfg.yaml')
    run = tmp_path/'run'
    p = subprocess.run([sys.executable, '-c', KILLER, str(tmp_path/'cfg.yaml'), str(run)], env=env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    debris = list((run/'checkpoints').glob('.last.pt.*.tmp'))
    assert len(debris) == 1 and debris[0].stat().st_size > 0   # the half-written file is there...
    assert load_checkpoint(run/'checkpoints'/'last.pt')['step'] == 2   # ...and last.pt is the intact previous one
    done = train(None, run, resume=True)                      # a resumed run finishes as if nothing happened
    assert done['completed'] and not list((run/'checkpoints').glob('.*.tmp'))
    # the save schedule differs from the reference (every 2 steps) but saving does not change the run
    pd.testing.assert_frame_equal(metrics(run), metrics(ref), check_exact=True)
    a, b = weights(run), weights(ref)
    assert all(torch.equal(a[k], b[k]) for k in a)

def test_ddp_two_processes_match_one(tmp_path):
    "torchrun with 2 CPU (gloo) processes, each encoding half of every batch, logs the losses of a single process."
    cfg = tiny(steps=4, eval_every=4, freeze_bn=True)          # BN in eval mode: per-process BN statistics would differ
    cfg.save(tmp_path/'cfg.yaml')
    train(cfg, tmp_path/'one')                                 # the single-process reference, in this process
    ddp = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                          '-m', 'ibsr_nb.cli', 'train', str(tmp_path/'cfg.yaml'), '--out', str(tmp_path/'two')],
                         env=env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = pd.read_csv(tmp_path/'one'/'metrics.csv'), pd.read_csv(tmp_path/'two'/'metrics.csv')
    assert list(one['step']) == list(two['step']) == [1, 2, 3, 4]
    # same global batch, same loss; the gradients (and so the next steps) agree up to float summation order
    for c in ('loss', 'grad_norm', 'grad_logit_scale', 'logit_scale', 'lr'):
        pd.testing.assert_series_equal(one[c], two[c], rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path/'two'/'summary.json').read_text())['world_size'] == 2
    assert json.loads((tmp_path/'one'/'summary.json').read_text())['world_size'] == 1

def test_cli_train_and_evaluate(straight, tmp_path, capsys):
    ref, _ = straight
    assert cli_main(['evaluate', str(ref), '--benchmark', 'pix3d-like', '--quick', '--csv', str(tmp_path/'t.csv')]) == 0
    out = capsys.readouterr().out
    assert 'Total' in out and 'acc@1' in out
    table = pd.read_csv(tmp_path/'t.csv', index_col=0)
    assert table.loc['Total', 'n_queries'] == 315 and 0 <= table.loc['Total', 'acc@1'] <= 1
    assert cli_main(['train']) == 2
    assert 'give a CONFIG.yaml' in capsys.readouterr().err
    (tmp_path/'bad.yaml').write_text('mode: scratch\nlearning_rate: 1\n')
    assert cli_main(['train', str(tmp_path/'bad.yaml'), '--out', str(tmp_path/'x')]) == 2
    assert "unknown key(s) ['learning_rate']" in capsys.readouterr().err
    assert cli_main(['train', '--resume', str(tmp_path/'nothing')]) == 2
    assert 'nothing to resume' in capsys.readouterr().err

def test_finetune_from_a_published_checkpoint(tmp_path, caplog):
    "`init: NAME=PATH` starts the point encoder from a file in a published layout (here G14's, at the tiny size)."
    from ibsr_nb.models.point import create_point_encoder
    from ibsr_nb.pretrained import save_in_published_layout, CheckpointError
    from ibsr_nb.model import build_model
    from ibsr_nb.core import ConfigError
    torch.manual_seed(7)
    enc = create_point_encoder('ppat-tiny-s', embed_dim=128)
    f = save_in_published_layout(enc, 'openshape-g14', tmp_path/'model.pt')
    cfg = tiny(mode='finetune', init=f'openshape-g14={f}', steps=2, eval_every=2)
    import logging
    ours = logging.getLogger('ibsr_nb'); ours.addHandler(caplog.handler)   # our loggers do not propagate to the root
    try: model = build_model(cfg)
    finally: ours.removeHandler(caplog.handler)
    for (k, a), b in zip(model.point_encoder.state_dict().items(), enc.state_dict().values()): assert torch.equal(a, b), k
    assert 'aligned to the open_clip tower ViT-bigG-14' in caplog.text       # the tiny tower is not G14's: said, not hidden
    assert train(cfg, tmp_path/'run')['completed']
    with pytest.raises(CheckpointError, match='model.pt: does not match'): build_model(cfg.replace(point_encoder='ppat-tiny-l'))
    with pytest.raises(ConfigError, match="mode 'scratch' does not take"): build_model(cfg.replace(mode='scratch'))
    with pytest.raises(FileNotFoundError, match='missing.pt'): build_model(cfg.replace(init=f'openshape-g14={tmp_path}/missing.pt'))
