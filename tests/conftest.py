import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('IBSR_QUICK', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

@pytest.fixture
def root(): return ROOT
