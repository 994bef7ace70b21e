"""Every `ibsr` / `torchrun` command in the README runs as written, in order, in a fresh folder: MESH_DIR and
photo.png stand for a generated folder of meshes and a generated photo; `ibsr reproduce` (minutes) is run with
`--help` (the smoke reproduce is tested in test_paper.py); `ibsr serve` is started, its page fetched, then stopped.
The torchrun line must write the same index as the one-process `ibsr index` line before it."""
import os, re, sys, shlex, shutil, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def readme_commands() -> list[str]:
    "The command lines of the README's sh blocks that call ibsr or torchrun (comments stripped)."
    text = (ROOT/'README.md').read_text()
    out = []
    for block in re.findall(r'```sh\n(.*?)```', text, flags=re.S):
        for line in block.splitlines():
            line = re.split(r'\s{2,}#', line)[0].strip()
            if line.startswith(('ibsr ', 'torchrun ')): out.append(line)
    return out

def test_readme_lists_the_commands():
    cmds = readme_commands()
    verbs = {c.split()[1] for c in cmds if c.startswith('ibsr ')}
    assert {'encoders', 'config', 'train', 'evaluate', 'index', 'query', 'reproduce', 'serve'} <= verbs, cmds
    assert any(c.startswith('torchrun ') for c in cmds)

def test_readme_commands_run_as_written(tmp_path):
    from PIL import Image
    from ibsr_nb.data import load_benchmark
    from ibsr_nb.train import query_photos
    shutil.copytree(ROOT/'examples', tmp_path/'examples')
    bench = load_benchmark('pix3d-like', quick=True)
    for i in bench.gallery('test')[:12]:
        row = bench.shapes.iloc[int(i)]
        (tmp_path/'meshes'/row['category']).mkdir(parents=True, exist_ok=True)
        bench.shape(int(i)).mesh.export(tmp_path/'meshes'/f"{row['shape_id']}.obj")
    Image.fromarray(query_photos(bench, bench.query_rows('test')[:1])[0]).save(tmp_path/'photo.png')
    env = dict(os.environ, IBSR_NUM_THREADS='1', OMP_NUM_THREADS='1', IBSR_PROGRESS='0')
    bin_dir = Path(sys.executable).parent
    for line in readme_commands():
        argv = [a.replace('MESH_DIR', str(tmp_path/'meshes')) for a in shlex.split(line)]
        if argv[:2] == ['ibsr', 'reproduce']: argv.append('--help')
        exe = bin_dir/argv[0]
        cmd = [str(exe)] + argv[1:] if exe.exists() else argv
        if argv[:2] == ['ibsr', 'serve']: _serve_once(cmd, tmp_path, env); continue
        if argv[0] == 'torchrun': one = _keep_index(tmp_path/'shapes.index')   # the one-process index, to compare
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f'{line}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}'
        if argv[0] == 'torchrun': _same_index(one, tmp_path/'shapes.index')
        if argv[:2] == ['ibsr', 'index'] or argv[0] == 'torchrun':
            assert 'indexed 12 of 12 mesh files' in r.stdout, r.stdout
        if argv[:2] == ['ibsr', 'query']:
            assert r.stdout.splitlines()[0].split() == ['rank', 'score', 'shape_id', 'category', 'path'], r.stdout
    assert (tmp_path/'query_results.png').stat().st_size > 2000       # the default picture, where the README says
    from ibsr_nb.model import TrainConfig
    written = [Path(a) for c in readme_commands() if c.startswith('ibsr config ') for a in shlex.split(c)[-1:]]
    assert written and all(TrainConfig.load(tmp_path/p).validate(str(p)) for p in written)   # `ibsr train` accepts it

def _keep_index(path: Path) -> Path:
    "A copy of the index at `path` (a file or a folder) beside it."
    copy = path.with_name('one-process-' + path.name)
    (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy)
    return copy

def _same_index(one: Path, two: Path):
    """The index torchrun wrote (rank 0 merged the ranks' shards) equals the one-process index. (Twelve files make one
    chunk, so one rank embeds them all here; test_cli.py shards smaller chunks over both ranks.)"""
    import numpy as np
    from ibsr_nb.index import ShapeIndex
    a, b = ShapeIndex.load(one), ShapeIndex.load(two)
    assert list(a.shapes['shape_id']) == list(b.shapes['shape_id'])
    xa, xb = (np.stack([ix.faiss.reconstruct(i) for i in range(len(ix))]) for ix in (a, b))
    np.testing.assert_allclose(xa, xb, atol=1e-6)

def _serve_once(cmd, cwd, env, timeout=180):
    "Start `ibsr serve` as written, wait for the address it prints, fetch the page, stop it."
    import time, urllib.request
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0, lines = time.time(), []
        while time.time() - t0 < timeout:
            line = proc.stdout.readline()
            if not line: break
            lines.append(line)
            url = re.search(r'http://[^\s]+/', line)
            if url:
                page = urllib.request.urlopen(url.group(0), timeout=60).read().decode()
                assert '<html' in page.lower() and 'plotly' in page, page[:500]
                return
        raise AssertionError(f"{' '.join(cmd)}: no address printed\n{''.join(lines)[-2000:]}")
    finally:
        proc.terminate(); proc.wait(timeout=30)

def test_readme_install_recipes():
    "Install from a clone until a release exists; the CPU-only recipe pins the pair constraints.txt pins."
    text = (ROOT/'README.md').read_text()
    pins = dict(l.split('==') for l in (ROOT/'constraints.txt').read_text().splitlines() if '==' in l and not l.startswith('#'))
    assert 'git clone ' in text and 'pip install -c constraints.txt -e .' in text and 'make install' in text
    assert f"pip install torch=={pins['torch']} torchvision=={pins['torchvision']} --index-url https://download.pytorch.org/whl/cpu" in text
    assert 'Once released, `pip install ibsr_nb`' in text and 'IBSR_NUM_THREADS' in text and 'OMP_NUM_THREADS' in text
