"""Authoring aid: write a notebook from a percent-format draft.

    python tools/nb_from_py.py draft.py nbs/05_models.point.ipynb

Cells start at lines `# %%` (code) or `# %% [markdown]` (markdown; each line's leading `# ` is removed).
The notebook is the source of truth afterwards; the draft is not kept.
"""
import sys, re, nbformat

def cells_from_py(text):
    cells, kind, buf = [], None, []
    def flush():
        if kind is None: return
        src = '\n'.join(buf).strip('\n')
        if kind == 'markdown':
            src = '\n'.join(re.sub(r'^# ?', '', l) for l in src.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(src))
        elif src.strip():
            cells.append(nbformat.v4.new_code_cell(src))
    for line in text.splitlines():
        m = re.match(r'^# %%( \[markdown\])?\s*$', line)
        if m:
            flush(); kind, buf = ('markdown' if m.group(1) else 'code'), []
        else: buf.append(line)
    flush()
    return cells

def main(src, dst):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells_from_py(open(src, encoding='utf-8').read())
    nb.metadata = {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}
    nbformat.write(nb, dst)
    print(f'wrote {dst}: {len(nb.cells)} cells')

if __name__ == '__main__': main(*sys.argv[1:3])
