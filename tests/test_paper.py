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

@pytest.mark.parametrize('arg, message', [
    ('openshape-g14', 'expected NAME=PATH'),
    ('no-such-model=/tmp/x.pt', "unknown published encoder 'no-such-model'"),
    ('openshape-g14=/nonexistent/model.pt', '/nonexistent/model.pt: checkpoint file not found'),
])
def test_checkpoint_argument_errors_come_first(tmp_path, arg, message):
    r = ibsr('reproduce', '--smoke', '--checkpoint', arg, '--out', tmp_path/'out', home=tmp_path/'home', timeout=120)
    assert r.returncode != 0 and message in r.stderr
    assert not (tmp_path/'home'/'paper').exists()                      # nothing was trained

def test_data_root_without_datasets_says_what_to_put_where(tmp_path):
    (tmp_path/'empty').mkdir()
    r = ibsr('reproduce', '--smoke', '--data-root', tmp_path/'empty', '--out', tmp_path/'out', home=tmp_path/'home', timeout=120)
    assert r.returncode != 0 and 'no real benchmark found' in r.stderr and 'pix3d.json' in r.stderr
