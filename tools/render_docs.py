"""Render the notebooks to a static HTML site under _docs/ (offline, no Quarto).

GitHub Actions builds the real nbdev/Quarto site (.github/workflows/deploy.yaml). Quarto cannot be installed on our
machines, so this script renders the same notebooks with nbconvert's `basic` template into a small self-contained site:
one page per notebook, a navigation bar, figures embedded as PNG, and TeX converted to MathML ahead of time with
`latex2mathml` (browsers render MathML natively), so pages need no JavaScript and no network. As nbdev does, each
`#| export` cell is followed by the documentation of the public functions and classes it defines: the signature, the
docstring and a table of the parameters (type, default and the docments comment, read with fastcore's `docments`).
`python tools/render_docs.py [OUT]` (default `_docs/`); the browser test opens what it writes.
"""
import sys, re, ast, html, inspect, importlib
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter
from nbconvert.exporters import TemplateExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
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

def _cell(v) -> str:
    "A value as the text of a markdown table cell."
    if v is inspect.Parameter.empty or v is None: return ''
    t = v if isinstance(v, str) else inspect.formatannotation(v)
    return html.escape(t, quote=False).replace('|', '\\|').replace('\n', ' ')

def api_doc(obj, name: str) -> str:
    "Markdown for one exported symbol, as nbdev's show_doc: heading, signature, docstring and a table of its parameters."
    from fastcore.docments import docments
    try: sig = inspect.signature(obj, eval_str=True)
    except Exception:
        try: sig = inspect.signature(obj)
        except (TypeError, ValueError): sig = None
    params = [] if sig is None else [str(p) for p in sig.parameters.values()]
    ret = '' if sig is None or sig.return_annotation is inspect.Signature.empty else \
          f' -> {inspect.formatannotation(sig.return_annotation)}'
    one = f"{name}({', '.join(params)}){ret}"
    sig_text = one if len(one) <= 100 else f'{name}(\n' + ''.join(f'    {p},\n' for p in params) + f'){ret}'
    doc = (inspect.getdoc(obj) or '').strip()
    parts = [f'### {name}', f'```python\n{sig_text}\n```']
    if doc: parts.append('*' + doc.splitlines()[0] + '*' + ''.join('\n' + l for l in doc.splitlines()[1:]))
    try: dm = docments(obj, full=True)
    except Exception: dm = {}
    rows = [(k, v) for k, v in dm.items() if k not in ('self', 'return') and v.get('docment')]
    if sig is not None and rows:
        head = '| | **Type** | **Default** | **Details** |\n|---|---|---|---|'
        default = lambda v: '' if v.get('default') is inspect.Parameter.empty else _cell(repr(v.get('default')))
        body = [f"| {k} | {_cell(v.get('anno'))} | {default(v)} | {_cell(v.get('docment'))} |" for k, v in rows]
        parts.append('\n'.join([head, *body]))
    return '\n\n'.join(parts)

def add_api_docs(nb):
    "After each `#| export` cell, a markdown cell documenting the public functions and classes it defines."
    found = (re.search(r'^#\|\s*default_exp\s+(\S+)', c.source, re.M) for c in nb.cells)
    exp = next((m.group(1) for m in found if m), None)
    if exp is None: return nb
    mod = importlib.import_module(f'ibsr_nb.{exp}')
    cells = []
    for c in nb.cells:
        cells.append(c)
        if c.cell_type != 'code' or not re.search(r'^#\|\s*export\s*$', c.source, re.M): continue
        try: tree = ast.parse(c.source)
        except SyntaxError: continue
        names = [n.name for n in tree.body
                 if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith('_')]
        docs = [api_doc(getattr(mod, n), n) for n in names if hasattr(mod, n)]
        if docs: cells.append(nbformat.v4.new_markdown_cell('\n\n'.join(docs), metadata={'api_doc': True}))
    nb.cells = cells
    return nb

def page_name(nb_path): return 'index.html' if nb_path.stem == 'index' else nb_path.stem + '.html'

class TrustedHTMLExporter(HTMLExporter):
    """nbconvert's HTML exporter for the project's own notebooks: no bleach pass over every highlighted code cell
    (its `clean_html` filter, 0.1 s a cell: a third of the time of the whole site) and no BeautifulSoup re-parse of each
    page (a fifth), whose only edits are an `alt` on images and `tabindex` on cells; the `alt` is added here."""
    def default_filters(self):
        for name, f in super().default_filters(): yield name, (lambda x: x) if name == 'clean_html' else f

    def from_notebook_node(self, nb, resources=None, **kw):
        langinfo = nb.metadata.get('language_info', {})   # the filters HTMLExporter.from_notebook_node registers
        resources = self._init_resources(resources)
        self.register_filter('highlight_code', Highlight2HTML(pygments_lexer=langinfo.get('pygments_lexer', langinfo.get('name')), parent=self))
        self.register_filter('filter_data_type', WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata, parent=self, resources=resources))
        body, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
        return re.sub(r'<img(?![^>]*\balt=)', '<img alt="output figure"', body), resources

def render_site(out=ROOT/'_docs'):
    "Render every notebook in nbs/ to `out`; return the list of pages written."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    nbs = sorted((ROOT/'nbs').glob('*.ipynb'), key=lambda p: (p.stem != 'index', p.stem))
    exporter = TrustedHTMLExporter(template_name='basic')
    titles = {}
    for p in nbs:
        first = next((c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == 'markdown'), p.stem)
        titles[p] = first.splitlines()[0].lstrip('# ').strip() or p.stem
    nav = ''.join(f'<a href="{page_name(p)}">{html.escape(titles[p])}</a>' for p in nbs)
    pages = []
    for p in nbs:
        nb = prepare(add_api_docs(nbformat.read(p, as_version=4)), text_only=False, drop_exports=False)
        for c in nb.cells:
            if c.cell_type == 'markdown': c.source = tex_to_mathml(c.source)
        body, _ = exporter.from_notebook_node(nb)
        (out/page_name(p)).write_text(PAGE.format(title=html.escape(titles[p]), css=CSS, nav=nav, body=body), encoding='utf-8')
        pages.append(out/page_name(p))
    return pages

if __name__ == '__main__':
    pages = render_site(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT/'_docs')
    print(f'wrote {len(pages)} pages to {pages[0].parent}')
