"""Generate README.md from nbs/index.ipynb, reproducibly and without Quarto.

`nbdev_readme` needs Quarto, which cannot be installed on our machines, so this script does the same job with
nbconvert's Markdown exporter: nbdev directives (`#| ...`) are removed, `#| hide` cells are dropped, and only
text outputs are kept. `--check` fails (exit 1) when README.md differs from what would be generated.
"""
import sys, re, copy
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]
HEADER = '<!-- generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook, not this file -->\n\n'
TEXT_MIMES = ('text/markdown', 'text/plain')

def prepare(nb, text_only=True, drop_exports=True):
    "Drop `#| hide` (and, with `drop_exports`, exported) cells and directive lines; with `text_only`, keep only text outputs."
    nb = copy.deepcopy(nb)
    cells = []
    for c in nb.cells:
        lines = c.source.splitlines()
        directives = [l for l in lines if re.match(r'^#\|', l)]
        skip = r'^#\|\s*(hide|exporti?|default_exp)\b' if drop_exports else r'^#\|\s*(hide|exporti|default_exp)\b'
        if any(re.match(skip, d) for d in directives): continue
        if c.cell_type == 'code':
            c.source = '\n'.join(l for l in lines if not re.match(r'^#\|', l)).strip('\n')
            if not text_only: cells.append(c); continue
            outs = []
            for o in c.get('outputs', []):
                if o.output_type == 'stream': outs.append(o)
                elif o.output_type in ('execute_result', 'display_data'):
                    data = {k: v for k, v in o.get('data', {}).items() if k in TEXT_MIMES}
                    if data: o = copy.deepcopy(o); o['data'] = data; outs.append(o)
            c.outputs = outs
        cells.append(c)
    nb.cells = cells
    return nb

def render(path=ROOT/'nbs'/'index.ipynb'):
    nb = prepare(nbformat.read(path, as_version=4))
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    return HEADER + body

def main(argv):
    text, readme = render(), ROOT/'README.md'
    if '--check' in argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            print('FAIL: README.md is stale; regenerate it with `make readme` (python tools/make_readme.py) and commit.')
            return 1
        print('README.md is up to date'); return 0
    readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}'); return 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
