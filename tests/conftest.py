import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('IBSR_QUICK', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

@pytest.fixture
def root(): return ROOT

@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    "A private IBSR_HOME, no progress bars, one thread, no real-data root: what CLI tests run under."
    monkeypatch.setenv('IBSR_HOME', str(tmp_path/'home'))
    monkeypatch.setenv('IBSR_PROGRESS', '0')
    monkeypatch.setenv('IBSR_NUM_THREADS', '1')
    monkeypatch.delenv('IBSR_DATA_ROOT', raising=False)

# The slowest files first (seconds each under `make test`, two workers): pytest-xdist hands whole files to the two
# workers in collection order (`--dist loadfile --no-loadscope-reorder` in tools/test.sh), so the long ones start at
# once instead of leaving one worker alone with a three-minute file at the end. The rest keep their order.
SLOWEST_FIRST = ('test_docs_browser.py', 'test_corpus.py', 'test_readme.py', 'test_paper.py', 'test_cli.py',
                 'test_train.py', 'test_prealign.py', 'test_app.py', 'test_speed.py', 'test_wheel.py', 'test_project.py')

def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: tests keep their order inside a file
