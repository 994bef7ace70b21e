"""Project-level checks: one source of metadata, requirement lists that agree, CI equivalent to .ci/run."""
import re, sys, shlex, subprocess, configparser
from pathlib import Path
import yaml
import pytest

ROOT = Path(__file__).resolve().parents[1]

def settings():
    cp = configparser.ConfigParser(delimiters=['=']); cp.read(ROOT/'settings.ini', encoding='utf-8')
    return cp['DEFAULT']

def names(reqs):
    "Normalised distribution names of requirement strings."
    return {re.split(r'[<>=!~\[; ]', r, 1)[0].lower().replace('_', '-') for r in reqs}

def test_version_lives_in_settings_only():
    import ibsr_nb
    v = settings()['version']
    assert ibsr_nb.__version__ == v
    out = subprocess.run([sys.executable, 'setup.py', '--version'], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == v, out.stderr
    for f in ['setup.py', 'environment.yml', 'Makefile', 'constraints.txt']:
        assert not re.search(rf'\b{re.escape(v)}\b', (ROOT/f).read_text()), f'{f} repeats the version {v}'

def test_environment_yml_agrees_with_settings():
    s = settings()
    want = names(shlex.split(s['requirements'])) | names(shlex.split(s['dev_requirements']))
    env = yaml.safe_load((ROOT/'environment.yml').read_text())
    pip = next(d['pip'] for d in env['dependencies'] if isinstance(d, dict) and 'pip' in d)
    listed = [p for p in pip if not p.startswith('-')]
    assert names(listed) == want, f'only in environment.yml: {names(listed) - want}; only in settings.ini: {want - names(listed)}'
    # same version specifiers, not just the same names
    assert set(listed) == set(shlex.split(s['requirements'])) | set(shlex.split(s['dev_requirements']))
    assert '-c constraints.txt' in pip and '-e .' in pip

def test_torch_pair_pinned_once():
    pins = [l for l in (ROOT/'constraints.txt').read_text().splitlines() if l and not l.startswith('#')]
    assert sorted(n.split('==')[0] for n in pins) == ['torch', 'torchvision'] and all('==' in p for p in pins)
    assert 'constraints.txt' in (ROOT/'Makefile').read_text()
    for f in ['settings.ini', 'environment.yml', 'Makefile', 'setup.py']:
        assert not re.search(r'torch(vision)?==', (ROOT/f).read_text()), f'{f} pins torch itself'

def test_dev_tools_are_not_runtime_requirements():
    runtime = names(shlex.split(settings()['requirements']))
    assert not runtime & {'nbdev', 'execnb', 'fastcore', 'jupyterlab', 'notebook', 'ipykernel', 'nbconvert', 'pytest'}
    dev = shlex.split(settings()['dev_requirements'])
    for pin in ['nbdev==2.4.14', 'execnb==0.1.18', 'fastcore==1.14.5', 'ghapi<2']: assert pin in dev

def test_tst_flags():
    assert {'slow', 'gpu', 'data'} <= set(settings()['tst_flags'].split())   # nbdev 2 splits on whitespace

def test_package_imports_without_dev_tools():
    "Every exported module imports without pulling in nbdev, fastcore, Jupyter or IPython."
    mods = sorted('ibsr_nb.' + '.'.join(p.relative_to(ROOT/'ibsr_nb').with_suffix('').parts)
                  for p in (ROOT/'ibsr_nb').rglob('*.py') if not p.name.startswith('_'))
    code = ('import importlib, sys\n'
            f'for m in {mods!r}: importlib.import_module(m)\n'
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('nbdev', 'fastcore', 'execnb', 'IPython', 'jupyterlab', 'ipykernel'))\n"
            'print(bad); sys.exit(1 if bad else 0)')
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_ci_runs_the_readme_test_command():
    readme = (ROOT/'README.md').read_text()
    assert 'make test' in readme and 'make reproduce' in readme
    ci = (ROOT/'.ci'/'run').read_text()
    assert re.search(r'^make test$', ci, re.M)

def test_github_workflow_matches_ci():
    wf = yaml.safe_load((ROOT/'.github'/'workflows'/'test.yaml').read_text())
    job = wf['jobs']['test']
    assert job['strategy']['matrix']['python-version'] == ['3.10', '3.11', '3.12']
    steps = job['steps']
    setup = next(s for s in steps if s.get('uses', '').startswith('actions/setup-python'))
    assert setup['with']['cache'] == 'pip'
    runs = [s['run'] for s in steps if 'run' in s]
    assert any(r.startswith('make test') for r in runs), runs
    yaml.safe_load((ROOT/'.github'/'workflows'/'deploy.yaml').read_text())

def test_readme_check_detects_staleness(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT/'tools'))
    import make_readme
    text = make_readme.render()
    assert text.startswith(make_readme.HEADER)
    assert not any(l.startswith('#|') for l in text.splitlines()), 'nbdev directives leaked into README'
    monkeypatch.setattr(make_readme, 'ROOT', tmp_path)
    (tmp_path/'README.md').write_text(text + 'edited by hand\n')
    assert make_readme.main(['--check']) == 1
    (tmp_path/'README.md').write_text(text)
    assert make_readme.main(['--check']) == 0

def test_installer_hands_pips_indexes_to_uv(monkeypatch):
    "`make install` (tools/install.py) gives uv the indexes pip is configured with, from any section or PIP_* variable."
    monkeypatch.syspath_prepend(str(ROOT/'tools'))
    import install
    for var in install.PIP_TO_UV.values(): monkeypatch.delenv(var, raising=False)   # a uv index of this shell's own
    listing = ("global.cert='/etc/ssl/certs/ca.crt'\n"
               "global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'\n"
               "global.find-links='/opt/wheels'\n"
               "install.index-url='https://mirror.example/simple'\n"
               ":env:.find-links='/srv/wheels'\n")
    env = install.uv_env(listing)
    assert env['UV_EXTRA_INDEX_URL'] == 'file:///opt/a/simple file:///opt/b/simple'
    assert env['UV_INDEX_URL'] == 'https://mirror.example/simple'
    assert env['UV_FIND_LINKS'] == '/srv/wheels'                     # the variable, listed last, wins as in pip
    assert env['UV_INDEX_STRATEGY'] == 'unsafe-best-match'           # pip's rule: the best version over all indexes
    assert 'UV_INDEX_URL' not in install.uv_env('')                  # nothing configured: uv's default index, as pip's
    assert install.TARGET == ['-c', 'constraints.txt', '-e', '.[dev]']
    assert 'tools/install.py' in (ROOT/'Makefile').read_text()
