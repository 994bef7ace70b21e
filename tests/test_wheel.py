"""`pip install ibsr_nb` story: the wheel installs in a fresh venv and imports without Jupyter or nbdev.

The venv borrows the project venv's third-party packages (a path line, so their own .pth files, the editable
ibsr_nb among them, stay inactive) instead of downloading 6 GB of torch again; `make install` already resolves
the same requirement list from settings.ini. The dev tools are blocked at import, so a stray import of one fails."""
import sys, sysconfig, subprocess, venv, zipfile, configparser, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = ('nbdev', 'execnb', 'fastcore', 'jupyterlab', 'ipykernel', 'nbconvert', 'pytest')
BLOCK = f"""import sys, importlib.abc
class _NoDevTools(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {DEV!r}: raise ImportError(f'{{name}} is a development tool, not a requirement of ibsr_nb')
sys.meta_path.insert(0, _NoDevTools())
"""

def _requirement_names(spec: str) -> set:
    return {re.split(r'[<>=!~\[; ]', r, maxsplit=1)[0].lower().replace('_', '-') for r in spec.split() if r}

def test_wheel_installs_and_imports_without_dev_tools(tmp_path):
    dist = tmp_path/'dist'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', str(dist), str(ROOT)], check=True)
    wheel, = dist.glob('ibsr_nb-*.whl')
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    assert any(n.startswith('ibsr_nb/weights/') and n.endswith('.pt') for n in names), 'the shipped weights are missing'
    cp = configparser.ConfigParser(delimiters=['=']); cp.read(ROOT/'settings.ini')
    required = {l.split(':', 1)[1].strip() for l in meta.splitlines() if l.startswith('Requires-Dist:') and 'extra ==' not in l}
    assert _requirement_names(' '.join(r.replace(' ', '') for r in required)) == _requirement_names(cp['DEFAULT']['requirements'])
    env_dir = tmp_path/'venv'
    venv.create(env_dir, with_pip=True)
    py = env_dir/'bin'/'python'
    site = Path(subprocess.run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site/'zz_project_packages.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')   # torch & co, after our own
    (site/'sitecustomize.py').write_text(BLOCK)
    subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--no-deps', str(wheel)], check=True)
    code = ("import sys, ibsr_nb, ibsr_nb.core, ibsr_nb.cli, ibsr_nb.search, ibsr_nb.pretrained, torchvision, open_clip\n"
            "assert ibsr_nb.__file__.startswith(sys.prefix), ibsr_nb.__file__\n"
            "print(ibsr_nb.__version__, len(ibsr_nb.pretrained.read_weights(ibsr_nb.pretrained.weights_dir()/'ibsr-l.pt')))")
    r = subprocess.run([str(py), '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(py), '-c', 'import nbdev'], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and 'development tool' in r.stderr                       # the block works
    r = subprocess.run([str(env_dir/'bin'/'ibsr'), '--version'], capture_output=True, text=True)
    assert r.returncode == 0 and 'ibsr_nb' in r.stdout, r.stdout + r.stderr
