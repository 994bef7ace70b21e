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
