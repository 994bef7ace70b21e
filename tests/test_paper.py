"""`ibsr reproduce` as a user runs it: the smoke scale with runs trained side by side (`--jobs 2`, the default on a
CPU machine), real data from `--data-root` (a tiny Pix3D-format folder written here), and the argument errors of
`--checkpoint`, which must come before any training. The quick and full scales are too long for a test; the
smoke scale runs the same recipes with a few steps each. Under `make test` the cache of the notebook tests
($IBSR_HOME) is shared, so the smoke runs trained by `nbs/20_paper.ipynb` are reused and only the real-data runs
are trained here (in two worker processes); alone, the test trains everything (≈ 3 min)."""
import os, sys, subprocess
from pathlib import Path
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

def ibsr(*args, home: Path, timeout=900):
    env = {**os.environ, 'IBSR_HOME': str(home), 'IBSR_PROGRESS': '0', 'IBSR_QUICK': '1'}
    env.pop('IN_TEST', None)
    exe = Path(sys.executable).with_name('ibsr')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from ibsr_nb.cli import main; sys.exit(main())']
    return subprocess.run(cmd + [str(a) for a in args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

@pytest.fixture(scope='module')
def smoke_real(tmp_path_factory):
    "One smoke reproduction with two parallel runs and a tiny Pix3D under --data-root (shared by the tests below)."
    from ibsr_nb.data import write_tiny_pix3d
    tmp = tmp_path_factory.mktemp('paper')
    home = Path(os.environ.get('IBSR_HOME') or tmp/'home')
    write_tiny_pix3d(tmp/'data'/'pix3d', photos=4)
    out = tmp/'out'
    r = ibsr('reproduce', '--smoke', '--jobs', '2', '--data-root', tmp/'data', '--out', out, home=home)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, home, out, r

def test_reproduce_writes_every_table_and_figure(smoke_real):
    _, _, out, r = smoke_real
    tables = {p.stem for p in (out/'tables').glob('*.csv')}
    assert {'table1_zero_shot', 'table2_standard', 'table3_hcl_vs_infonce', 'table4_beta', 'efficiency', 'findings'} <= tables
    for name in tables:
        assert (out/'tables'/f'{name}.md').stat().st_size > 0 and (out/'tables'/f'{name}.tex').read_text().startswith('\\begin{table}')
    assert len(list((out/'figures').glob('*.png'))) == 5 and len(list((out/'figures').glob('*.pdf'))) == 5
    assert 'wrote' in r.stdout and (out/'README.md').read_text().startswith('# Paper tables and figures (smoke scale)')

def test_real_data_joins_the_tables(smoke_real):
    _, _, out, _ = smoke_real
    t1 = pd.read_csv(out/'tables'/'table1_zero_shot.csv', header=[0, 1], index_col=[0, 1])
    assert 'pix3d' in t1.columns.get_level_values(0)                  # zero-shot of our pretraining runs on real Pix3D
    t2 = pd.read_csv(out/'tables'/'table2_standard.csv', index_col=[0, 1, 2])
    real = t2.loc['ours (real data)']
    assert set(real.index.get_level_values('benchmark')) == {'pix3d'}
    assert len(real) == 2 and real['acc@1'].between(0, 100).all()     # L fine-tuned with InfoNCE and with HCL
    assert 'reported (paper, via digest)' in t2.index.get_level_values(0)

def test_second_call_trains_nothing_and_gives_identical_tables(smoke_real):
    tmp, home, out, _ = smoke_real
    again = tmp/'again'
    r = ibsr('reproduce', '--smoke', '--data-root', tmp/'data', '--out', again, home=home, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for t in (out/'tables').glob('*.csv'): assert (again/'tables'/t.name).read_text() == t.read_text(), t.name

def ibsr_here(*args, home: Path, monkeypatch, capsys):
    "Run `ibsr` in this process (argument errors come before any heavy work, so no fresh interpreter is needed)."
    from ibsr_nb.cli import main
    monkeypatch.setenv('IBSR_HOME', str(home)); monkeypatch.delenv('IN_TEST', raising=False)
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err

@pytest.mark.parametrize('arg, message', [
    ('openshape-g14', 'expected NAME=PATH'),
    ('no-such-model=/tmp/x.pt', "unknown published encoder 'no-such-model'"),
    ('openshape-g14=/nonexistent/model.pt', '/nonexistent/model.pt: checkpoint file not found'),
])
def test_checkpoint_argument_errors_come_first(tmp_path, monkeypatch, capsys, arg, message):
    code, err = ibsr_here('reproduce', '--smoke', '--checkpoint', arg, '--out', tmp_path/'out', home=tmp_path/'home',
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and message in err
    assert not (tmp_path/'home'/'paper').exists()                      # nothing was trained

def test_data_root_without_datasets_says_what_to_put_where(tmp_path, monkeypatch, capsys):
    (tmp_path/'empty').mkdir()
    code, err = ibsr_here('reproduce', '--smoke', '--data-root', tmp_path/'empty', '--out', tmp_path/'out', home=tmp_path/'home',
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and 'no real benchmark found' in err and 'pix3d.json' in err

def test_published_checkpoint_recipes(tmp_path):
    "--checkpoint adds a zero-shot evaluation and fine-tunings that start from the file, with its architecture and tower."
    import torch
    from ibsr_nb.paper import real_data_recipes, paper_scale
    from ibsr_nb.pretrained import REGISTRY, save_in_published_layout
    from ibsr_nb.models.point import create_point_encoder
    spec = REGISTRY['openshape-g14']
    f = save_in_published_layout(create_point_encoder(spec.tiny_arch), 'openshape-g14', tmp_path/'model.pt')
    rs = {r.key: r for r in real_data_recipes(paper_scale('smoke'), tmp_path/'root', checkpoints=[f'openshape-g14={f}'],
                                              tower_weights={'openshape-g14': '/w/bigg.bin'})}
    assert rs['zero/published/openshape-g14'].evals == ('pix3d-like', 'cars-like', 'shape-centric')
    ft = rs['stan/cars-like/openshape-g14/published/hcl/s0']
    c = ft.config
    assert (c.point_encoder, c.tower, c.tower_pretrained, c.init) == ('ppat-g14', 'ViT-bigG-14', '/w/bigg.bin', f'openshape-g14={f.resolve()}')
    assert c.loss == 'hcl' and c.mode == 'finetune' and ft.after == () and ft.tags['init'] == 'published'
    assert len([k for k in rs if k.startswith('stan/')]) == 4                  # pix3d-like, cars-like x InfoNCE, HCL
    with pytest.raises(ValueError, match='not an open_clip model'):
        real_data_recipes(paper_scale('smoke'), tmp_path/'root', checkpoints=[f'ulip1-pointbert={f}'])

@pytest.mark.skipif(os.environ.get('IBSR_QUICK', '1') != '0', reason='full-size encoder and ViT-B-32 tower (~450 MB of files, ~1 min); run with IBSR_QUICK=0')
def test_published_model_evaluates_zero_shot(tmp_path):
    "A full-size OpenShape B32 file in its published layout + a ViT-B-32 weights file: the `eval` recipes' model."
    import torch, open_clip
    from ibsr_nb.paper import published_model
    from ibsr_nb.train import evaluate
    from ibsr_nb.models.point import create_point_encoder
    from ibsr_nb.pretrained import save_in_published_layout
    torch.manual_seed(0)
    enc = create_point_encoder('ppat-b32')
    f = save_in_published_layout(enc, 'openshape-b32', tmp_path/'model.pt')
    torch.save(open_clip.create_model('ViT-B-32', pretrained=None, force_quick_gelu=True).state_dict(), tmp_path/'vitb32.bin')
    model = published_model('openshape-b32', f, tower_weights=tmp_path/'vitb32.bin')
    for a, b in zip(model.point_encoder.state_dict().values(), enc.state_dict().values()): assert torch.equal(a, b)
    total = evaluate(model, 'pix3d-like', quick=True).loc['Total']
    assert total['n_queries'] == 70 and 0 <= total['acc@1'] <= 1

def test_results_json_holds_per_query_ranks(tmp_path):
    "Train, eval and baseline runs store each test query's id and rank; they agree with the tables; old files still load."
    import json
    import numpy as np
    from ibsr_nb.paper import (recipes, baseline_recipes, run_recipe, paper_scale, Recipe, EvalConfig, tidy_results,
                               findings, chance_levels, table_zero_shot)
    sc, root = paper_scale('smoke'), tmp_path/'root'
    by_key = {r.key: r for r in recipes(sc, root)}
    ft, pre = by_key['stan/pix3d-like/L/pre/infonce/s0'], by_key['pre/ensembled/L/s0']     # a training run; the shipped L, zero-shot
    zero = Recipe('zero/ft/L/s0', 'eval', EvalConfig(str(ft.run_dir(root)), quick=sc.quick_data),    # a run directory, evaluated
                  {**ft.tags, 'experiment': 'eval-check'}, evals=('pix3d-like',), after=(ft.key,))
    base = [r for r in baseline_recipes(sc, root) if r.key in ('base/pix3d-like/cmic/s0', 'base/pix3d-like/cmah/s0')]
    rs = (ft, zero, pre, *base)
    results = [run_recipe(r, root) for r in rs]
    assert [r['kind'] for r in results] == ['train', 'eval', 'eval', 'cmic', 'cmah']
    for r in rs:
        stored = json.loads((r.run_dir(root)/'results.json').read_text())
        assert set(stored['per_query']) == set(stored['evals']), r.key
        for bench, table in stored['evals'].items():
            pq, total = stored['per_query'][bench], next(row for row in table if row['category'] == 'Total')
            rank = np.array(pq['rank'])
            assert len(pq['query_id']) == len(rank) == total['n_queries'] and rank.min() >= 1 and rank.max() <= pq['gallery'] + 1
            assert np.mean(rank == 1) == pytest.approx(total['acc@1']) and np.mean(rank <= 10) == pytest.approx(total['acc@10'])
    ids = lambda i: sorted(results[i]['per_query']['pix3d-like']['query_id'])
    assert ids(0) == ids(1) == ids(2) == ids(3) == ids(4)  # ours, the eval runs and both baselines answer the same photos
    chance = chance_levels(sc.quick_data)
    f = findings(tidy_results(results), chance)
    assert f.loc['F1', 'test'] == 'paired' and f.loc['F1', 'seeds'] == 1 and f.loc['F6', 'shows here'] == 'no runs'
    old = [{k: v for k, v in r.items() if k != 'per_query'} for r in results]       # results.json written before per_query
    assert table_zero_shot(tidy_results(old)).equals(table_zero_shot(tidy_results(results)))
    f_old = findings(tidy_results(old), chance)
    assert f_old.loc['F1', 'test'] == 'unpaired (no per-query ranks stored)'
    assert f_old.loc['F1', 'our evidence (Acc@1, %)'] == f.loc['F1', 'our evidence (Acc@1, %)']
