"""The reader's runner (`tools/read_notebooks.py`): what it runs, with which environment, and how it reports a failure.

The run of every notebook itself is step 4 of `tools/test.sh` (it prints each notebook's time)."""
import json, sys
from pathlib import Path
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import read_notebooks as rn

def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(nb, path)
    return path

def test_reader_env_drops_the_scale_variables(monkeypatch):
    for k in ('IN_TEST', 'IBSR_QUICK', 'IBSR_SCALE'): monkeypatch.setenv(k, '1')
    monkeypatch.setenv('IBSR_HOME', '/some/cache'); monkeypatch.setenv('MPLBACKEND', 'Agg')
    env = rn.reader_env()
    assert not {'IN_TEST', 'IBSR_QUICK', 'IBSR_SCALE'} & set(env)
    assert env['IBSR_HOME'] == '/some/cache'                        # caches may be pointed elsewhere
    assert env['MPLBACKEND'].endswith('backend_inline')             # figures as a reader sees them, not Agg

def test_runs_top_to_bottom_without_the_test_variables(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('IN_TEST', '1'); monkeypatch.setenv('IBSR_QUICK', '1')
    ok = _notebook(tmp_path/'ok.ipynb', 'import os', "assert 'IN_TEST' not in os.environ and 'IBSR_QUICK' not in os.environ",
                   "from ibsr_nb.core import laptop_scale\nprint(laptop_scale())")
    bad = _notebook(tmp_path/'bad.ipynb', 'x = 1', 'y = x / 0', 'print("never")')
    rc = rn.main([str(ok), str(bad), '--jobs', '2', '--json', str(tmp_path/'times.json')])
    out, err = capsys.readouterr()
    assert rc == 1
    assert 'ok.ipynb' in out and 'FAILED: cell 1: ZeroDivisionError' in out and '1 of 2 notebooks ran' in out
    assert 'error: nbs/bad.ipynb: cell 1: ZeroDivisionError' in err
    times = {r['notebook']: r for r in json.loads((tmp_path/'times.json').read_text())['notebooks']}
    assert times['ok.ipynb']['error'] is None and times['ok.ipynb']['seconds'] > 0 and times['ok.ipynb']['cells'] == 3

def test_a_kernel_that_does_not_start_is_started_again(tmp_path, monkeypatch, capsys):
    "Two kernels starting at once can race for a port; no cell ran, so the notebook gets a new kernel, not a failure."
    nb = _notebook(tmp_path/'nb.ipynb', 'x = 6 * 7', 'assert x == 42')
    real, calls = rn.NotebookClient.execute, []
    def flaky(self, **kw):
        calls.append(1)
        if len(calls) == 1: raise RuntimeError("Kernel didn't respond in 60 seconds")
        return real(self, **kw)
    monkeypatch.setattr(rn.NotebookClient, 'execute', flaky)
    r = rn.run_notebook(nb)
    assert r['error'] is None and len(calls) == 2
    assert "note: nb.ipynb: the kernel did not start (RuntimeError: Kernel didn't respond in 60 seconds)" in capsys.readouterr().err
    def dead(self, **kw):                                            # never starts: the notebook fails, naming why
        calls.append(1); raise RuntimeError("Kernel didn't respond in 60 seconds")
    monkeypatch.setattr(rn.NotebookClient, 'execute', dead)
    calls.clear()
    assert rn.run_notebook(nb)['error'] == "RuntimeError: Kernel didn't respond in 60 seconds" and len(calls) == 3

def test_missing_notebook_is_named(tmp_path, capsys):
    assert rn.main([str(tmp_path/'nope.ipynb')]) == 1
    assert 'nope.ipynb: file not found' in capsys.readouterr().err

def test_every_notebook_starts_at_laptop_scale():
    "Each notebook that loads data or trains says, in its first code cells, which scale is on and how to change it."
    heavy = ('load_benchmark', 'TrainConfig(', 'train(', 'quick_or(', 'is_quick(')
    for p in sorted((ROOT/'nbs').glob('*.ipynb')):
        if p.stem.startswith(('00_', '2')) or p.stem == 'index': continue   # core defines it; paper notebooks: paper_scale
        code = [c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == 'code']
        lessons = '\n'.join(s for s in code if not s.startswith('#| export'))
        if any(h in lessons for h in heavy):
            assert any('laptop_scale()' in s for s in code[:4]), f'{p.name}: no laptop_scale() line in its first cells'
