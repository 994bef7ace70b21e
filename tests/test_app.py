"""Interactive retrieval (ibsr_nb.app): the session and the widget's Python side, the Flask app through its test
client, and `ibsr serve` driven in headless Chromium with Playwright.

Everything searches one tiny index built here: five procedural shapes of five categories embedded with the
shipped encoder (`ibsr-l`, no download), queried with a synthetic photo of the car (`synth_query`: another camera,
textures, lighting and background than the shape's own renders). The shipped encoder ranks the car first among
the five (checked below on the scores, not assumed); the tests ask for it in the top 3.
"""
import io, os, sys, json, time, shutil, socket, subprocess, urllib.request
from datetime import datetime, timezone
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GALLERY = [('chair', 0), ('table', 0), ('sofa', 0), ('lamp', 0), ('car', 0)]
TRUTH, K = 'car/car_0', 3
SCREENSHOT = ROOT/'outputs'/'screenshots'/'serve.png'

pytestmark = pytest.mark.usefixtures('isolated_env')   # conftest.py


@pytest.fixture(scope='module')
def gallery(tmp_path_factory):
    "(index file, folder of query photos): the tiny index and a synthetic photo of each of its shapes."
    from PIL import Image
    from ibsr_nb.pretrained import DEFAULT_ENCODER
    from ibsr_nb.render import synth_query
    from ibsr_nb.search import build_index
    from ibsr_nb.shapes import make_shape
    d = tmp_path_factory.mktemp('app')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('IBSR_HOME', str(d/'home')); mp.setenv('IBSR_PROGRESS', '0')
        for c, s in GALLERY:
            (d/'meshes'/c).mkdir(parents=True, exist_ok=True)
            make_shape(c, s).mesh.export(d/'meshes'/c/f'{c}_{s}.obj')
            (d/'photos').mkdir(exist_ok=True)
            Image.fromarray(synth_query(make_shape(c, s), 0, 96)['rgb']).save(d/'photos'/f'{c}_{s}.png')
        build_index(d/'meshes', DEFAULT_ENCODER, d/'indexes'/'tiny.index', log=lambda m: None)
    return d/'indexes'/'tiny.index', d/'photos'


@pytest.fixture(scope='module')
def session(gallery):
    from ibsr_nb.app import RetrievalSession
    return RetrievalSession(gallery[0])


def upload(name, data, kind='image/png'):
    "The value a browser upload gives an ipywidgets FileUpload."
    return ({'name': name, 'type': kind, 'size': len(data), 'content': memoryview(data),
             'last_modified': datetime(2026, 1, 1, tzinfo=timezone.utc)},)


# (a) the session and the widget's Python side

def test_session_finds_the_photographed_shape(gallery, session):
    "The car's photo ranks the car first of five; every form of the photo gives the same scores; figures exist."
    from PIL import Image
    photo = gallery[1]/'car_0.png'
    res = session.query(photo, k=len(GALLERY))
    assert list(res.table.columns) == ['rank', 'score', 'shape_id', 'category', 'path']
    assert list(res.table['rank']) == [1, 2, 3, 4, 5] and res.table['score'].is_monotonic_decreasing
    assert res.table['shape_id'].iloc[0] == TRUTH, res.table
    for same in (photo.read_bytes(), Image.open(photo), np.asarray(Image.open(photo))):
        np.testing.assert_allclose(session.query(same, k=len(GALLERY)).table['score'], res.table['score'], atol=1e-6)
    assert res.figure_3d(0).data[0].type == 'mesh3d'
    assert len(res.figure_3d(0).data[0].i) == len(res.mesh(0).faces)
    fig = res.figure(64)
    assert len(fig.axes) == 1 + len(GALLERY)
    import matplotlib.pyplot as plt
    assert not plt.fignum_exists(fig.number)                                  # not held open by pyplot
    rec = res.records(thumb=32)
    assert [r['shape_id'] for r in rec] == list(res.table['shape_id'])
    assert all(r['thumbnail'].startswith('data:image/png;base64,') for r in rec)
    text = session.query(text='a car', k=2)
    assert len(text) == 2 and text.image is None


def test_session_errors_name_the_problem(gallery, session, tmp_path):
    from ibsr_nb.app import RetrievalSession
    for bad, msg in [(tmp_path/'missing.index', 'missing.index: index file not found'),
                     (tmp_path, 'is a folder, not an index file')]:
        with pytest.raises(ValueError, match=msg): RetrievalSession(bad)
    (tmp_path/'fake.index').write_bytes(b'not an index')
    with pytest.raises(ValueError, match='fake.index: not an ibsr_nb index file'): RetrievalSession(tmp_path/'fake.index')
    with pytest.raises(ValueError, match='notes.txt: not a readable image file'): session.query(b'hello', name='notes.txt')
    with pytest.raises(ValueError, match='photo.png: empty file'): session.query(b'', name='photo.png')
    with pytest.raises(ValueError, match='nope.png: image file not found'): session.query(tmp_path/'nope.png')
    with pytest.raises(ValueError, match='the text is empty'): session.query(text=' \n ')
    with pytest.raises(ValueError, match='not both'): session.query(gallery[1]/'car_0.png', text='a car')
    with pytest.raises(ValueError, match='not neither'): session.query()
    with pytest.raises(ValueError, match='k: must be'): session.query(text='a car', k=0)


def test_widget_upload_search_and_3d_view(gallery):
    "The widget's Python side as a user drives it: upload, Search, the answer, another shape's 3D view, errors."
    from ibsr_nb.app import retrieval_widget
    index, photos = gallery
    w = retrieval_widget(index.parent, examples=photos, k=K)
    assert w.index.options == (('tiny.index', str(index)),) and w.encoder.options == ('ibsr-l',)
    assert set(w.example.options[1:]) == {(f'{c}_{s}.png', f'{c}_{s}.png') for c, s in GALLERY}
    assert w.search() is None and 'no query yet' in w.status.value
    w.upload.value = upload('car_0.png', (photos/'car_0.png').read_bytes())
    w.button.click()
    assert w.result is not None and w.result.name == 'car_0.png' and len(w.result) == K
    assert TRUTH in list(w.result.table['shape_id']), w.result.table
    assert w.answer.value.count('<img') == 1 + K and TRUTH in w.answer.value
    assert w.figure.data[0].type == 'mesh3d'
    shown = w.view3d.outputs[0]['data']['application/vnd.plotly.v1+json']
    assert shown['data'][0]['type'] == 'mesh3d' and json.dumps(shown)          # JSON-ready, as the frontend gets it
    assert [v for _, v in w.shape.options] == list(range(K))
    w.shape.value = 2
    assert w.result.table['shape_id'].iloc[2] in w.figure.layout.title.text
    w.example.value = 'lamp_0.png'; w.button.click()
    assert w.source == 'example' and w.result.name == 'lamp_0.png'
    w.text.value = 'a sofa'; w.button.click()
    assert w.source == 'text' and w.result.text == 'a sofa' and w.result.image is None
    before = w.result
    w.upload.value = upload('notes.txt', b'hello', 'text/plain')
    assert w.search() is None and 'notes.txt: not a readable image file' in w.status.value
    assert w.result is before                                                 # the last good answer stays


def test_widget_finds_indexes_and_refuses_a_folder_without_any(gallery, tmp_path):
    from ibsr_nb.app import find_indexes, retrieval_widget
    index = gallery[0]
    assert find_indexes(index) == [index] and find_indexes(index.parent) == [index]
    (tmp_path/'junk.index').write_text('not an index')
    with pytest.raises(ValueError, match='no index file found'): retrieval_widget(tmp_path)
    with pytest.raises(ValueError, match='no such index file or folder'): retrieval_widget(tmp_path/'nowhere')


# (b) the Flask app through its test client

@pytest.fixture(scope='module')
def client(session):
    from ibsr_nb.app import create_app
    return create_app(session, k=K).test_client()


def test_flask_page_and_local_plotly(client):
    page = client.get('/')
    assert page.status_code == 200 and 'src="plotly.min.js"' in page.text and 'tiny.index' in page.text
    assert 'cdn' not in page.text.lower() and 'https://' not in page.text           # works offline
    js = client.get('/plotly.min.js')
    assert js.status_code == 200 and js.mimetype == 'text/javascript' and len(js.data) > 1_000_000


def test_flask_upload_returns_ranked_json(client, gallery):
    photo = (gallery[1]/'car_0.png').read_bytes()
    r = client.post('/api/search', data={'photo': (io.BytesIO(photo), 'car_0.png'), 'text': '', 'k': str(K)})
    assert r.status_code == 200, r.get_json()
    ans = r.get_json()
    assert ans['query']['name'] == 'car_0.png' and ans['query']['image'].startswith('data:image/png;base64,')
    assert [x['rank'] for x in ans['results']] == [1, 2, 3]
    assert TRUTH in [x['shape_id'] for x in ans['results']], ans['results']
    assert all(set(x) == {'rank', 'shape_id', 'category', 'score', 'thumbnail'} for x in ans['results'])  # no paths
    fig = client.get('/api/shape', query_string={'id': TRUTH})
    assert fig.status_code == 200 and fig.get_json()['data'][0]['type'] == 'mesh3d'
    text = client.post('/api/search', data={'text': 'a lamp', 'k': '2'}).get_json()
    assert text['query']['image'] is None and len(text['results']) == 2


@pytest.mark.parametrize('data, message', [
    (lambda: {'photo': (io.BytesIO(b'hello'), 'notes.txt')}, 'notes.txt: not a readable image file'),
    (lambda: {'photo': (io.BytesIO(b''), 'empty.png')}, 'empty.png: empty file (0 bytes)'),
    (lambda: {'photo': (io.BytesIO(b'\x89PNG\r\n\x1a\n' + bytes(40)), 'cut.png')}, 'cut.png: '),
    (lambda: {}, 'no query: choose a photo or type a text'),
    (lambda: {'text': '   '}, 'no query: choose a photo or type a text'),
    (lambda: {'photo': (io.BytesIO(b'x'), 'a.png'), 'text': 'a car'}, 'give a photo or a text, not both'),
    (lambda: {'text': 'a car', 'k': 'many'}, "k: must be a whole number, got 'many'"),
    (lambda: {'text': 'a car', 'k': '0'}, 'k: must be from 1 to 100, got 0'),
])
def test_flask_bad_requests_are_400_with_the_problem(client, data, message):
    r = client.post('/api/search', data=data())
    assert r.status_code == 400 and message in r.get_json()['error'], r.get_json()
    assert 'Traceback' not in r.text


def test_flask_other_errors_are_json_never_a_traceback(client, session):
    r = client.get('/api/shape', query_string={'id': '../../etc/passwd'})
    assert (r.status_code, r.get_json()) == (400, {'error': "shape '../../etc/passwd': not in the index"})
    assert client.get('/nowhere').status_code == 404 and 'error' in client.get('/nowhere').get_json()
    assert client.get('/api/search').status_code == 405
    from ibsr_nb.app import create_app
    small = create_app(session, max_upload_mb=1).test_client()
    r = small.post('/api/search', data={'photo': (io.BytesIO(bytes(2 << 20)), 'big.png')})
    assert r.status_code == 413 and r.get_json() == {'error': 'upload too large: over 1 MB'}


def test_serve_command_errors(gallery, tmp_path):
    "`ibsr serve` refuses what it cannot serve before listening, in the CLI's one-line error format."
    from ibsr_nb.cli import main
    import contextlib
    for argv, msg in [(['--index', tmp_path/'none.index'], 'none.index: index file not found'),
                      (['--index', gallery[0], '--port', '70000'], '--port: must be from 0 to 65535'),
                      (['--index', gallery[0], '-k', '0'], '-k: must be from 1 to 100')]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err): code = main(['serve', *map(str, argv)])
        assert code == 2 and err.getvalue().startswith('error: ') and msg in err.getvalue(), err.getvalue()


# (c) `ibsr serve` in headless Chromium

def find_browser():
    for b in ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'):
        if shutil.which(b): return shutil.which(b)

BROWSER = find_browser()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture
def served(gallery):
    "`ibsr serve` of the tiny index in a subprocess on a free port: its base URL (stopped afterwards)."
    port = free_port()
    exe = Path(sys.executable).with_name('ibsr')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from ibsr_nb.cli import main; sys.exit(main())']
    log = gallery[0].parent/'serve.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen(cmd + ['serve', '--index', str(gallery[0]), '--port', str(port), '-k', str(K)],
                                stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    url, deadline = f'http://127.0.0.1:{port}/', time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None: pytest.fail(f'ibsr serve exited with {proc.returncode}:\n{log.read_text()}')
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.monotonic() > deadline: pytest.fail(f'ibsr serve did not answer in 120 s:\n{log.read_text()}')
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
    assert 'serving tiny.index (5 shapes, encoder ibsr-l) on ' + url in log.read_text()


@pytest.mark.skipif(BROWSER is None, reason='no Chromium/Chrome installed (run tools/ensure_chromium.sh)')
def test_serve_in_headless_chromium(served, gallery):
    "Upload the car's photo on the page: the car is listed, the 3D view is drawn, no console errors; a screenshot."
    from playwright.sync_api import sync_playwright
    errors = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, args=['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                                                            '--disable-component-update', '--disable-sync', '--no-first-run'])
        try:
            page = b.new_page(viewport={'width': 1280, 'height': 800})
            page.on('console', lambda m: errors.append(f'console: {m.text}') if m.type == 'error' else None)
            page.on('pageerror', lambda e: errors.append(f'pageerror: {e}'))
            page.on('requestfailed', lambda r: errors.append(f'request failed: {r.url}'))
            page.on('response', lambda r: errors.append(f'HTTP {r.status}: {r.url}') if r.status >= 400 else None)
            page.goto(served, wait_until='load')
            assert page.evaluate('typeof Plotly') == 'object'                  # plotly.js from the server, no CDN
            page.set_input_files('#photo', str(gallery[1]/'car_0.png'))
            page.click('#search')
            page.wait_for_selector('#view3d[data-shape-id]', timeout=60_000)   # results listed, rank 1 drawn in 3D
            ids = page.eval_on_selector_all('#results li', 'els => els.map(e => e.dataset.shapeId)')
            assert len(ids) == K and TRUTH in ids, ids
            assert page.eval_on_selector('#query-body img', 'i => i.naturalWidth') > 0
            assert page.eval_on_selector_all('#results img', 'is => is.filter(i => i.naturalWidth > 0).length') == K
            scores = page.eval_on_selector_all('#results .meta', 'els => els.map(e => e.textContent)')
            assert all('score' in s for s in scores), scores
            view = page.evaluate("() => { const v = document.getElementById('view3d');"
                                 " return {type: v._fullData && v._fullData[0].type, gl: v.querySelectorAll('canvas').length,"
                                 " shape: v.dataset.shapeId}; }")
            assert view['type'] == 'mesh3d' and view['gl'] > 0 and view['shape'] == ids[0], view
            page.locator('#results li').nth(1).click()                         # another shape's 3D view
            page.wait_for_function(f"document.getElementById('view3d').dataset.shapeId === {json.dumps(ids[1])}")
            page.locator('#results li').nth(0).click()
            page.wait_for_function(f"document.getElementById('view3d').dataset.shapeId === {json.dumps(ids[0])}")
            page.wait_for_timeout(300)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert not errors, errors
            page.fill('#text', 'a lamp')                                       # a text query clears the photo
            assert page.eval_on_selector('#photo', 'i => i.files.length') == 0
            page.click('#search')
            page.wait_for_selector('#query-body p')
            assert page.text_content('#query-body p') == '\u201ca lamp\u201d'
            assert not errors, errors
            notes = gallery[0].parent/'notes.txt'
            notes.write_text('not a photo')
            page.set_input_files('#photo', str(notes))                         # a bad upload: the message on the page
            page.click('#search')
            page.wait_for_selector('#error:not([hidden])')
            assert page.text_content('#error') == 'notes.txt: not a readable image file'
            assert all('400' in e for e in errors) and any(e.startswith('HTTP 400') for e in errors), errors
        finally:
            b.close()
    assert SCREENSHOT.stat().st_size > 20_000
