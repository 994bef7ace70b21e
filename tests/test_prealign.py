"""The project's own pre-aligned encoders: the shipped files and their provenance, loading through the registry,
the metrics they were shipped with, and the two-stage path that regenerates them (at a tiny size)."""
import json, dataclasses
from pathlib import Path
import pytest, torch
from ibsr_nb.pretrained import SHIPPED, DEFAULT_ENCODER, weights_dir, shipped_provenance, read_weights

def test_shipped_files_are_small_and_match_their_provenance():
    prov = shipped_provenance()
    files = {s.file for s in SHIPPED.values()} | {s.tower_file for s in SHIPPED.values()}
    assert set(prov['files']) == files
    total = 0
    for name in files:
        f = weights_dir()/name
        rec = prov['files'][name]
        from ibsr_nb.encoders import file_sha256
        assert file_sha256(f) == 'sha256:' + rec['sha256'], name
        assert rec['seed'] == 0 and rec['config'] and prov['code_version'].startswith('ibsr_nb')
        total += f.stat().st_size
    assert total <= 25 * 2 ** 20, f'{total / 2 ** 20:.1f} MB shipped'
    assert all(v.dtype == torch.float16 for v in torch.load(weights_dir()/'ibsr-l.pt', weights_only=True).values() if v.is_floating_point())

def test_every_shipped_encoder_loads_and_embeds_all_three_modalities():
    import numpy as np
    from ibsr_nb.encoders import load_encoder, list_encoders
    assert set(list_encoders('shipped')['name']) == set(SHIPPED)
    for name in SHIPPED:
        enc = load_encoder(name)
        assert enc.weights.startswith('sha256:') and enc.spec == name
        f = torch.cat([enc.encode_points(torch.rand(2, 1024, 6)), enc.encode_images(np.zeros((1, 96, 96, 3), np.uint8)),
                       enc.encode_texts(['a chair'])])
        torch.testing.assert_close(f.norm(dim=-1), torch.ones(4))

def test_shipped_metrics_are_reproduced():
    """The zero-shot numbers in provenance.json come from these files: evaluating again gives them back (to a query or
    two: thread counts change float rounding, which can swap near-tied shapes)."""
    from ibsr_nb.paper import shipped_model
    from ibsr_nb.train import evaluate
    m = shipped_provenance()['metrics'][DEFAULT_ENCODER]['pix3d-like']
    t = evaluate(shipped_model(DEFAULT_ENCODER), 'pix3d-like', quick=True).loc['Total']
    assert int(t['n_queries']) == m['n_queries'] >= 300
    n = m['n_queries']
    assert abs(float(t['acc@1']) - m['acc@1']) <= 2 / n and abs(float(t['acc@10']) - m['acc@10']) <= 2 / n
    assert m['acc@1'] > 3 * m['chance@1']        # far above chance, not a random encoder

def test_cli_default_encoder_is_the_shipped_default():
    from ibsr_nb.cli import build_parser
    a = build_parser().parse_args(['index', 'meshes', '--out', 'x.index'])
    assert a.encoder == DEFAULT_ENCODER

def test_finetune_init_from_a_shipped_name_checks_the_architecture():
    from ibsr_nb.model import TrainConfig, build_model
    from ibsr_nb.core import ConfigError
    s = SHIPPED['ibsr-s']
    m = build_model(TrainConfig(mode='finetune', init='ibsr-s', point_encoder=s.arch, tower=s.tower))
    ref = read_weights(weights_dir()/s.file)
    assert all(torch.equal(v, ref[k]) for k, v in m.point_encoder.state_dict().items())
    with pytest.raises(ConfigError, match="its point encoder is 'ppat-tiny-s'"):
        build_model(TrainConfig(mode='finetune', init='ibsr-s', point_encoder='ppat-tiny-l', tower=s.tower))
    with pytest.raises(ConfigError, match='aligned to tower'):
        build_model(TrainConfig(mode='finetune', init='ibsr-s', point_encoder=s.arch, tower='ibsr-tiny-vit-64'))

def test_two_stage_path_regenerates_weights_at_a_tiny_size(tmp_path):
    "Stage 1, the four stage-2 runs and one fine-tuning run from them, through the paper's runner (smoke sizes)."
    from ibsr_nb.paper import paper_scale, paper_jobs, prealign_recipes, recipes, run_all, shipped_runs
    from ibsr_nb.prealign import write_shipped
    sc = dataclasses.replace(paper_scale('smoke'), prealign='train')
    pre, init = prealign_recipes(sc, tmp_path)
    assert [r.kind for r in pre] == ['data', 'data', 'tower', 'train', 'train', 'train', 'train'] and set(init) == {'S', 'L'}
    tower = next(r for r in pre if r.kind == 'tower')
    ft = next(r for r in recipes(sc, tmp_path) if r.key == 'stan/shape-centric/L/pre/infonce/s0')
    assert ft.config.init == init['L'] and ft.after == ('pre/ensembled/L/s0',)
    res = {r['key']: r for r in run_all(pre + [ft], tmp_path, jobs=2)}   # two workers, as on a 2-core machine
    jobs, threads = paper_jobs(2)
    assert res['stage1/tower']['threads'] == jobs * threads      # stage 1 runs alone, with every worker's threads
    assert {r['threads'] for k, r in res.items() if k != 'stage1/tower'} == {threads}
    assert res['stage1/tower']['omp_wait_policy'] == 'ACTIVE'    # in a process of its own, whose threads may spin
    assert 'ACTIVE' not in {r['omp_wait_policy'] for k, r in res.items() if k != 'stage1/tower'}   # the shared workers sleep
    assert res['data/narrow']['summary']['shapes'] > 0
    zs = res['pre/narrow/S/s0']
    assert set(zs['evals']) == {'pix3d-like', 'cars-like', 'shape-centric'} and zs['per_query']['pix3d-like']['rank']
    assert res[ft.key]['evals']['shape-centric']
    rec = write_shipped(tower.run_dir(tmp_path), shipped_runs(pre, tmp_path), out=tmp_path/'weights')
    assert len(rec['files']) == 5 and json.loads((tmp_path/'weights'/'provenance.json').read_text())['files']
