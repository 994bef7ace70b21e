"""Pages people look at, opened in a real headless browser: the rendered notebooks and the plotly 3-D viewer.

Each page is served from a loopback HTTP server, loaded in headless Chromium (Debian's package, installed by
tools/ensure_chromium.sh; Chrome also works) through Playwright, and must load without JavaScript errors or failed
requests and show its figures. A screenshot of each page is written next to the rendered site.
"""
import os, sys, shutil, threading, functools, http.server
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))

def find_browser():
    for b in ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'):
        if shutil.which(b): return shutil.which(b)

BROWSER = find_browser()
if BROWSER is None and os.environ.get('CI'): pytest.fail('no Chromium/Chrome on a CI machine: tools/ensure_chromium.sh should have installed it')
pytestmark = pytest.mark.skipif(BROWSER is None, reason='no Chromium/Chrome installed (run tools/ensure_chromium.sh)')

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Render the docs site and a 3-D viewer page into one folder served on 127.0.0.1."
    from render_docs import render_site
    out = tmp_path_factory.mktemp('site')
    render_site(out)
    write_viewer_page(out/'viewer.html')
    (out/'favicon.ico').write_bytes(b'')     # browsers ask for it; plotly's standalone page has no <link rel=icon>
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield out, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()

def write_viewer_page(path):
    "The plotly retrieval viewer for a query point cloud and its top-3, as `ibsr query` users get it."
    import numpy as np
    from ibsr_nb.viz import results_3d, write_html
    rng = np.random.default_rng(0)
    clouds = [np.concatenate([rng.normal(size=(300, 3)) * s, rng.random((300, 3))], 1).astype('float32') for s in (1, .5, .8, .3)]
    write_html(results_3d(clouds[0], clouds[1:], titles=['query shape', 'rank 1', 'rank 2', 'rank 3']), path)

@pytest.fixture(scope='module')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, args=['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                                                            '--disable-component-update', '--disable-sync', '--no-first-run'])
        yield b
        b.close()

def visit(browser, url, shot):
    "Load `url`; return (errors, page); errors are console errors, page errors and failed requests."
    page = browser.new_page(viewport={'width': 1200, 'height': 900})
    errors = []
    page.on('console', lambda m: errors.append(f'console: {m.text}') if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(f'pageerror: {e}'))
    page.on('requestfailed', lambda r: errors.append(f'request failed: {r.url}'))
    page.on('response', lambda r: errors.append(f'HTTP {r.status}: {r.url}') if r.status >= 400 else None)
    page.goto(url, wait_until='load'); page.wait_for_timeout(500)
    page.screenshot(path=str(shot), full_page=False)
    return errors, page

@pytest.mark.parametrize('name, min_figures, min_math', [('index.html', 0, 0), ('08_losses.html', 3, 20)])
def test_rendered_notebook_pages(site, browser, name, min_figures, min_math):
    out, base = site
    errors, page = visit(browser, f'{base}/{name}', out/f'{name}.png')
    assert not errors, errors
    assert page.title().endswith('ibsr_nb')
    widths = page.evaluate('Array.from(document.images).map(i => i.naturalWidth)')
    assert len(widths) >= min_figures and all(w > 0 for w in widths), widths   # every figure decoded
    assert page.evaluate("document.querySelectorAll('math').length") >= min_math  # equations rendered as MathML
    assert page.evaluate("document.querySelectorAll('nav a').length") >= 3
    assert (out/f'{name}.png').stat().st_size > 10_000

def test_plotly_viewer_page(site, browser):
    out, base = site
    errors, page = visit(browser, f'{base}/viewer.html', out/'viewer.png')
    assert not errors, errors
    page.wait_for_selector('.js-plotly-plot', timeout=15_000)
    n_scenes = page.evaluate("document.querySelector('.js-plotly-plot')._fullLayout ? Object.keys(document.querySelector('.js-plotly-plot')._fullLayout).filter(k => k.startsWith('scene')).length : 0")
    assert n_scenes == 4
    assert page.evaluate("document.querySelectorAll('canvas').length") >= 1   # WebGL scenes drawn
