"""GitHub workflows: pinned actions, tests before the docs deploy and before a release, installs with the constraints.

The workflows cannot run here, so these checks read their YAML; the release's tag check is extracted and run.
"""
import re, sys, textwrap, subprocess, configparser
from pathlib import Path
import yaml
import pytest

ROOT = Path(__file__).resolve().parents[1]
WF = ROOT/'.github'/'workflows'

def load(name):
    "A workflow as a dict; PyYAML reads the key `on` as the boolean True (YAML 1.1), so it is renamed back."
    wf = yaml.safe_load((WF/name).read_text())
    if True in wf: wf['on'] = wf.pop(True)
    return wf

def steps(wf): return [s for job in wf['jobs'].values() for s in job.get('steps', [])]

def uses_refs(wf):
    "Every `uses:` of a workflow: steps' actions and jobs' reusable workflows."
    return [s['uses'] for s in steps(wf) if 'uses' in s] + [j['uses'] for j in wf['jobs'].values() if 'uses' in j]

_PINNED = re.compile(r'^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$')

def unpinned(refs):
    "The references that are neither local (./...) nor pinned to a version tag (v4, v1.12.4) or a commit."
    return [r for r in refs if not r.startswith('./') and not _PINNED.match(r)]

def test_pin_check_rejects_branches():
    assert unpinned(['fastai/workflows/quarto-ghp@master', 'actions/checkout@main', 'pypa/gh-action-pypi-publish@release/v1',
                     'actions/checkout']) == ['fastai/workflows/quarto-ghp@master', 'actions/checkout@main',
                                              'pypa/gh-action-pypi-publish@release/v1', 'actions/checkout']
    assert unpinned(['actions/checkout@v4', 'pypa/gh-action-pypi-publish@v1.12.4', './.github/workflows/test.yaml',
                     'quarto-dev/quarto-actions/setup@v2', 'actions/checkout@' + 'a' * 40]) == []

WORKFLOWS = sorted(p.name for p in WF.glob('*.y*ml'))

def test_expected_workflows():
    assert {'test.yaml', 'deploy.yaml', 'release.yaml'} <= set(WORKFLOWS), WORKFLOWS

@pytest.mark.parametrize('name', WORKFLOWS)
def test_every_action_is_pinned(name):
    wf = load(name)
    assert wf['jobs'] and 'on' in wf, f'{name}: no jobs or no trigger'
    refs = uses_refs(wf)
    assert refs, f'{name} uses no action'
    assert not unpinned(refs), f'{name}: pin these to a version tag or a commit: {unpinned(refs)}'

@pytest.mark.parametrize('name', WORKFLOWS)
def test_every_job_has_a_timeout(name):
    wf = load(name)
    missing = [j for j, job in wf['jobs'].items() if 'uses' not in job and not job.get('timeout-minutes')]
    assert not missing, f'{name}: jobs without timeout-minutes: {missing}'

@pytest.mark.parametrize('name', WORKFLOWS)
def test_installs_use_the_constraints(name):
    "A pip install of this project (`.` or `.[dev]`, editable or not) pins torch/torchvision with constraints.txt."
    for s in steps(load(name)):
        for line in s.get('run', '').splitlines():
            if re.search(r'pip install\b', line) and re.search(r'(^|\s)(-e\s+)?["\']?\.(\[[\w,]+\])?["\']?(\s|$)', line):
                assert '-c constraints.txt' in line, f'{name}: installs the project without the constraints: {line.strip()}'

def test_test_workflow_timeout_and_concurrency():
    wf = load('test.yaml')
    job = wf['jobs']['test']
    assert 0 < job['timeout-minutes'] <= 120
    conc = job.get('concurrency') or wf.get('concurrency')
    assert conc and '${{ github.ref }}' in conc['group'] and conc['cancel-in-progress'] is True, conc
    assert 'workflow_call' in wf['on'], 'release.yaml calls the tests through workflow_call'

def test_deploy_runs_only_after_the_tests_pass():
    wf = load('deploy.yaml')
    run = wf['on'].get('workflow_run') if isinstance(wf['on'], dict) else None
    if run:      # triggered by the test workflow: only on its success, on main, for a push
        assert set(wf['on']) == {'workflow_run'}, f'deploy.yaml has other triggers that skip the tests: {set(wf["on"])}'
        assert run['workflows'] == [load('test.yaml')['name']] and run['types'] == ['completed'] and run['branches'] == ['main']
        for job in wf['jobs'].values():
            assert "github.event.workflow_run.conclusion == 'success'" in job.get('if', ''), job.get('if')
        checkout = next(s for s in steps(wf) if s.get('uses', '').startswith('actions/checkout'))
        assert checkout['with']['ref'] == '${{ github.event.workflow_run.head_sha }}'   # the tested commit
    else:        # or one workflow whose deploy job needs the test job
        needs = [n for job in wf['jobs'].values() for n in ([job['needs']] if isinstance(job.get('needs'), str) else job.get('needs', []))]
        assert 'test' in needs, 'deploy.yaml deploys without waiting for the tests'
    runs = ' '.join(s.get('run', '') for s in steps(wf))
    assert 'nbdev_docs' in runs and '-c constraints.txt' in runs
    assert any(s.get('uses', '').startswith('quarto-dev/quarto-actions/setup@') for s in steps(wf))
    # no `pre:`/`version:` given to fastai's action again: it is not used at all
    assert not any('fastai/workflows' in r for r in uses_refs(wf))

def test_release_builds_checks_and_publishes():
    wf = load('release.yaml')
    assert wf['on'] == {'push': {'tags': ['v*']}}
    jobs = wf['jobs']
    assert jobs['test']['uses'] == './.github/workflows/test.yaml' and jobs['build']['needs'] == 'test'
    build_runs = ' '.join(s.get('run', '') for s in jobs['build']['steps'])
    assert 'python -m build' in build_runs and 'settings.ini' in build_runs and 'GITHUB_REF_NAME' in build_runs
    publish = next(j for j in jobs.values() if any(s.get('uses', '').startswith('pypa/gh-action-pypi-publish@') for s in j.get('steps', [])))
    assert publish['permissions'] == {'id-token': 'write'}, publish.get('permissions')   # trusted publishing, no token
    assert not any('password' in s.get('with', {}) for s in publish['steps'])
    gh = next(j for j in jobs.values() if 'gh release upload' in ' '.join(s.get('run', '') for s in j.get('steps', [])))
    assert gh['permissions'] == {'contents': 'write'} and '*.whl' in ' '.join(s.get('run', '') for s in gh['steps'])

def version_check_script():
    "The Python program of the release's tag check (the heredoc between <<'PY' and PY)."
    run = next(s['run'] for s in load('release.yaml')['jobs']['build']['steps'] if "<<'PY'" in s.get('run', ''))
    return textwrap.dedent(run.split("<<'PY'\n", 1)[1].rsplit('PY', 1)[0])

def test_release_tag_check_runs(tmp_path):
    cp = configparser.ConfigParser(delimiters=['=']); cp.read(ROOT/'settings.ini', encoding='utf-8')
    version = cp['DEFAULT']['version']
    script = tmp_path/'check.py'; script.write_text(version_check_script())
    ok = subprocess.run([sys.executable, str(script), f'v{version}'], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, str(script), 'v999.0.0'], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and f'does not match settings.ini version {version}' in bad.stderr, bad.stderr
