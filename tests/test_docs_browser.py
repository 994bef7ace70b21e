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

def visit(browser, url, shot, width=1200):
    "Load `url`; return (errors, page); errors are console errors, page errors and failed requests."
    page = browser.new_page(viewport={'width': width, 'height': 900})
    errors = []
    page.on('console', lambda m: errors.append(f'console: {m.text}') if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(f'pageerror: {e}'))
    page.on('requestfailed', lambda r: errors.append(f'request failed: {r.url}'))
    page.on('response', lambda r: errors.append(f'HTTP {r.status}: {r.url}') if r.status >= 400 else None)
    page.goto(url, wait_until='load'); page.wait_for_timeout(500)
    page.screenshot(path=str(shot), full_page=False)
    return errors, page

PAGES = sorted(p.stem + '.html' for p in (ROOT/'nbs').glob('*.ipynb'))
# figures a page is known to show (each once): the losses lesson's four, the paper's numbered figures
FIGURES = {'02_pointclouds.html': 2, '08_losses.html': 4, '21_paper.zero_shot.html': 0, '22_paper.standard.html': 1,
           '23_paper.hcl.html': 2, '24_paper.efficiency.html': 0, '25_paper.figures.html': 2}
MATH = {'08_losses.html': 20}      # equations rendered as MathML
# the API pages: exported symbols with their signature and, where the parameters carry docments, a parameter table
API_DOCS = {'10c_search.html': {'build_index': True, 'Searcher': False}, '10a_model.html': {'TrainConfig': True},
            '11_train.html': {'train': True, 'evaluate': True}, '08_losses.html': {'hcl_multimodal': True, 'info_nce': True},
            '10b_encoders.html': {'load_encoder': True}}
LOCAL_PATH = r'''(?<=^|[\s'"(=:`])/(root|home|tmp|work)/[^\s'"`)]*'''

def local_paths(page):
    "Absolute paths under /root, /home, /tmp or /work in the page's main text."
    return page.evaluate("re => Array.from(document.querySelector('main').innerText.matchAll(new RegExp(re, 'gm')), m => m[0])",
                         LOCAL_PATH)

DUPLICATES_JS = """() => {
  const key = o => { const img = o.querySelector('img'); return img ? img.src : o.innerText.trim(); };
  const dups = xs => xs.filter((x, j) => x && xs.indexOf(x) !== j);
  const perCell = Array.from(document.querySelectorAll('.code_cell')).flatMap((cell, i) =>
      dups(Array.from(cell.querySelectorAll('.output_subarea')).map(key)).map(d => `cell ${i}: ${d.slice(0, 60)}`));
  const images = dups(Array.from(document.images).map(i => i.src)).map(s => `image shown twice: ${s.slice(0, 60)}`);
  return perCell.concat(images);
}"""

API_JS = """() => Object.fromEntries(Array.from(document.querySelectorAll('h3')).map(h => {
  let sig = false, table = null;
  for (let e = h.nextElementSibling; e && e.tagName !== 'H3' && !e.querySelector('h3'); e = e.nextElementSibling) {
    if (e.matches('pre, div.highlight') || e.querySelector('pre')) sig = true;
    const t = e.matches('table') ? e : e.querySelector('table');
    if (t && !table) table = t;
  }
  const heads = table ? Array.from(table.querySelectorAll('th')).map(th => th.innerText.trim()) : [];
  return [h.innerText.replace('¶', '').trim(), {sig, heads, rows: table ? table.querySelectorAll('tbody tr').length : 0}];
}))"""

@pytest.fixture(scope='module')
def pages(site, browser):
    "Each rendered notebook page, loaded once: what the tests below check (and a screenshot next to the site)."
    out, base = site
    seen = {}
    for name in PAGES:
        errors, page = visit(browser, f'{base}/{name}', out/f'{name}.png')
        seen[name] = dict(errors=errors, title=page.title(), local_paths=local_paths(page), duplicates=page.evaluate(DUPLICATES_JS),
                          widths=page.evaluate('Array.from(document.images).map(i => i.naturalWidth)'),
                          math=page.evaluate("document.querySelectorAll('math').length"),
                          nav=page.evaluate("document.querySelectorAll('nav a').length"),
                          shot=(out/f'{name}.png').stat().st_size, api=page.evaluate(API_JS))
        page.close()
    return seen

@pytest.mark.parametrize('name', PAGES)
def test_rendered_notebook_pages(pages, name):
    "Every page loads cleanly, decodes every figure, shows the known number of figures and the nav bar."
    p = pages[name]
    assert not p['errors'], p['errors']
    assert p['title'].endswith('ibsr_nb')
    assert all(w > 0 for w in p['widths']), p['widths']                        # every figure decoded
    if name in FIGURES: assert len(p['widths']) == FIGURES[name], f"{name}: {len(p['widths'])} figures, expected {FIGURES[name]}"
    assert p['math'] >= MATH.get(name, 0)                                      # equations rendered as MathML
    assert p['nav'] == len(PAGES)
    assert p['shot'] > 10_000                                                  # the screenshot shows something

@pytest.mark.parametrize('name', PAGES)
def test_no_local_paths(pages, name):
    "No absolute path of the machine that ran the notebook (home, temporary or work folders) in the rendered text."
    assert not pages[name]['local_paths'], f"{name} shows local paths: {sorted(set(pages[name]['local_paths']))[:10]}"

@pytest.mark.parametrize('name', PAGES)
def test_no_duplicated_outputs(pages, name):
    "No output shown twice: a figure both returned and drawn by the inline backend, or a table displayed twice."
    assert not pages[name]['duplicates'], f"{name}: {pages[name]['duplicates']}"

@pytest.mark.parametrize('name', sorted(API_DOCS))
def test_api_pages_show_signatures_and_parameter_tables(pages, name):
    "Exported functions and classes are documented below their cell: a signature, and a parameter table from their docments."
    api = pages[name]['api']
    for sym, has_table in API_DOCS[name].items():
        assert sym in api and api[sym]['sig'], f'{name}: no documentation of {sym} (headings: {sorted(api)[:20]})'
        if has_table:
            assert api[sym]['heads'][-3:] == ['Type', 'Default', 'Details'] and api[sym]['rows'] >= 2, (name, sym, api[sym])

def test_page_checks_find_defects(site, browser, tmp_path):
    "The checks above fail on a page with a duplicated figure and a local path (so their passing means something)."
    out, base = site
    img = '<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==">'
    cell = f'<div class="cell code_cell"><div class="output_subarea">{img}</div><div class="output_subarea">{img}</div></div>'
    (out/'defects.html').write_text(f'<html><head><link rel="icon" href="data:,"></head><body><main>{cell}'
                                    '<pre>wrote `/root/.cache/ibsr_nb/x` and /tmp/tmpab12/result.json</pre></main></body></html>')
    _, page = visit(browser, f'{base}/defects.html', tmp_path/'defects.png')
    assert len(page.evaluate(DUPLICATES_JS)) == 2
    found = local_paths(page)
    page.close()
    assert found == ['/root/.cache/ibsr_nb/x', '/tmp/tmpab12/result.json'], found

def test_plotly_viewer_page(site, browser):
    out, base = site
    errors, page = visit(browser, f'{base}/viewer.html', out/'viewer.png')
    assert not errors, errors
    page.wait_for_selector('.js-plotly-plot', timeout=15_000)
    n_scenes = page.evaluate("document.querySelector('.js-plotly-plot')._fullLayout ? Object.keys(document.querySelector('.js-plotly-plot')._fullLayout).filter(k => k.startsWith('scene')).length : 0")
    assert n_scenes == 4
    assert page.evaluate("document.querySelectorAll('canvas').length") >= 1   # WebGL scenes drawn

@pytest.mark.parametrize('width', [1200, 1280, 900])
def test_plotly_viewer_fits_the_window(site, browser, width):
    "Every 3-D panel of the viewer lies inside the window (no panel cut at the right edge): the figure follows its width."
    out, base = site
    _, page = visit(browser, f'{base}/viewer.html', out/f'viewer-{width}.png', width=width)
    page.wait_for_selector('.js-plotly-plot', timeout=15_000)
    right = page.evaluate("Math.max(...Array.from(document.querySelectorAll('.js-plotly-plot .gl-container, "
                          ".js-plotly-plot .main-svg')).map(e => e.getBoundingClientRect().right))")
    width = page.evaluate('window.innerWidth')
    page.close()
    assert right <= width, f'the viewer is {right:.0f} px wide in a {width} px window'
