"""Render the notebooks to a static HTML site under _docs/ (offline, no Quarto).

GitHub Actions builds the real nbdev/Quarto site (.github/workflows/deploy.yaml). Quarto cannot be installed on our
machines, so this script renders the same notebooks with nbconvert's `basic` template into a small self-contained site:
one page per notebook, a navigation bar, figures embedded as PNG, and TeX converted to MathML ahead of time with
`latex2mathml` (browsers render MathML natively), so pages need no JavaScript and no network. `python tools/render_docs.py [OUT]` (default `_docs/`); the browser test opens what it writes.
"""
import sys, re, html
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter
from latex2mathml.converter import convert
sys.path.insert(0, str(Path(__file__).parent))
from make_readme import prepare

ROOT = Path(__file__).resolve().parents[1]
CSS = """body{font-family:system-ui,sans-serif;margin:0;display:flex}nav{width:15rem;padding:1rem;background:#f4f4f6;
min-height:100vh;box-sizing:border-box;font-size:.9rem}nav a{display:block;padding:.15rem 0;color:#234}main{padding:1rem 2rem;
max-width:60rem;overflow-x:auto}pre{background:#f7f7f9;padding:.5rem;overflow-x:auto}img{max-width:100%}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .4rem}.jp-InputPrompt,.jp-OutputPrompt,.prompt{display:none}"""
PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title} — ibsr_nb</title><link rel="icon" href="data:,"><style>{css}</style>
</head>
<body><nav><b>ibsr_nb</b>{nav}</nav><main>{body}</main></body></html>"""

_CODE = re.compile(r'(```.*?```|`[^`\n]*`)', re.S)
_MATH = re.compile(r'\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$', re.S)

def tex_to_mathml(md: str) -> str:
    "Replace $...$ and $$...$$ outside code by MathML; TeX that does not convert is left as code."
    def conv(m):
        tex, display = (m.group(1), 'block') if m.group(1) is not None else (m.group(2), 'inline')
        try: return convert(tex.strip(), display=display)
        except Exception: return f'<code>{html.escape(m.group(0))}</code>'
    return ''.join(part if i % 2 else _MATH.sub(conv, part) for i, part in enumerate(_CODE.split(md)))

def page_name(nb_path): return 'index.html' if nb_path.stem == 'index' else nb_path.stem + '.html'

def render_site(out=ROOT/'_docs'):
    "Render every notebook in nbs/ to `out`; return the list of pages written."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    nbs = sorted((ROOT/'nbs').glob('*.ipynb'), key=lambda p: (p.stem != 'index', p.stem))
    exporter = HTMLExporter(template_name='basic')
    titles = {}
    for p in nbs:
        first = next((c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == 'markdown'), p.stem)
        titles[p] = first.splitlines()[0].lstrip('# ').strip() or p.stem
    nav = ''.join(f'<a href="{page_name(p)}">{html.escape(titles[p])}</a>' for p in nbs)
    pages = []
    for p in nbs:
        nb = prepare(nbformat.read(p, as_version=4), text_only=False, drop_exports=False)
        for c in nb.cells:
            if c.cell_type == 'markdown': c.source = tex_to_mathml(c.source)
        body, _ = exporter.from_notebook_node(nb)
        (out/page_name(p)).write_text(PAGE.format(title=html.escape(titles[p]), css=CSS, nav=nav, body=body), encoding='utf-8')
        pages.append(out/page_name(p))
    return pages

if __name__ == '__main__':
    pages = render_site(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT/'_docs')
    print(f'wrote {len(pages)} pages to {pages[0].parent}')
