"""`pip install ibsr_nb` story: the wheel installs in a fresh venv and imports without Jupyter or nbdev."""
import sys, subprocess, venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_wheel_installs_and_imports_without_dev_tools(tmp_path):
    dist = tmp_path/'dist'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', str(dist), str(ROOT)], check=True)
    wheel, = dist.glob('ibsr_nb-*.whl')
    venv.create(tmp_path/'venv', with_pip=True)
    py = tmp_path/'venv'/'bin'/'python'
    subprocess.run([str(py), '-m', 'pip', 'install', '-q', '-c', str(ROOT/'constraints.txt'), str(wheel)], check=True)
    code = ("import sys, importlib.util as u, ibsr_nb, ibsr_nb.core, ibsr_nb.cli, torchvision, open_clip\n"
            "dev = [m for m in ('nbdev', 'execnb', 'fastcore', 'jupyterlab', 'ipykernel') if u.find_spec(m)]\n"
            "print(ibsr_nb.__version__, dev); sys.exit(1 if dev else 0)")
    r = subprocess.run([str(py), '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(tmp_path/'venv'/'bin'/'ibsr'), '--version'], capture_output=True, text=True)
    assert r.returncode == 0 and 'ibsr_nb' in r.stdout, r.stdout + r.stderr
