"""Install the package (editable) and its dev tools into the running interpreter's environment: what `make install` runs.

    python tools/install.py [--pip]

The requirement set is pip's, resolved against constraints.txt. pip unpacks the 6 GB of torch/CUDA wheels and
compiles every module to bytecode on one core; uv, when it can be had, installs the same requirements with the same
constraints and indexes (read from pip's own configuration, so a mirror or a local wheel folder set up for pip is used
as is) and unpacks and compiles on every core: 112 s against pip's 195 s for a fresh venv on two cores, the same
packages at the same versions. Bytecode is compiled at install time either way: with PYTHONDONTWRITEBYTECODE set,
nothing would be cached later and every process would compile torch's modules again. If uv cannot be installed or
fails, pip does the whole install (`--pip` forces that).
"""
import argparse, os, re, shlex, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ['-c', 'constraints.txt', '-e', '.[dev]']
PIP_TO_UV = {'index-url': 'UV_INDEX_URL', 'extra-index-url': 'UV_EXTRA_INDEX_URL', 'find-links': 'UV_FIND_LINKS'}

def run(cmd: list, env=None) -> int:
    print('+', ' '.join(shlex.quote(str(c)) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env).returncode

def pip_settings(listing: str | None = None   # the output of `pip config list` (None: run it)
                ) -> dict:
    "pip's index-url, extra-index-url and find-links as configured (files and PIP_* variables; later sources win)."
    if listing is None:
        listing = subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True, text=True).stdout
    found = {}
    for line in listing.splitlines():        # e.g. global.extra-index-url='file:///a file:///b'   :env:.find-links='/opt/w'
        m = re.match(r"^[^.]*\.(index-url|extra-index-url|find-links)='(.*)'$", line.strip())
        if m: found[m.group(1)] = ' '.join(m.group(2).split())
    return found

def uv_env(listing: str | None = None) -> dict:
    "The environment for `uv pip install`: pip's indexes, pip's choice among them (best version over all indexes)."
    env = dict(os.environ, UV_INDEX_STRATEGY='unsafe-best-match', UV_LINK_MODE='copy', UV_NO_CACHE='1')
    for key, value in pip_settings(listing).items(): env[PIP_TO_UV[key]] = value
    return env

def install_with_uv() -> bool:
    if run([sys.executable, '-m', 'pip', 'install', '-q', 'uv']) != 0: return False
    uv = Path(sys.executable).with_name('uv')
    return run([uv, 'pip', 'install', '--python', sys.executable, '--compile-bytecode', *TARGET], env=uv_env()) == 0

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--pip', action='store_true', help='install with pip only (no uv)')
    if not ap.parse_args(argv).pip:
        if install_with_uv(): return 0
        print('uv was not available or failed: installing with pip', flush=True)
    return run([sys.executable, '-m', 'pip', 'install', *TARGET])

if __name__ == '__main__': sys.exit(main())
