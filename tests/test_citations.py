"""Sources are cited so that a reader of the repository can follow them.

The project was written from private research notes (a `reference/` folder outside the repository:
`checkpoint-compat.md`, `paper-facts.md`, CSV extracts). A reader does not have them, so notebooks, tests, tools
and the package cite the public sources instead: papers (title, venue, arXiv id) and upstream repositories with
the path of the file (e.g. OpenShape's `src/data.py`, CMIC's `code/RetrievalNet_test.py`).
"""
import re, json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a path into the notes folder, or one of the notes by name (with or without its extension)
PRIVATE = re.compile(r'(?<![\w/.-])(shared/)?reference/[\w.-]+\.(md|csv)\b'
                     r'|\b(checkpoint-compat|paper-facts|hcl_stl10_reported)\b'
                     r'|/work/shared\b')

def files():
    "Notebooks, tests, tools, the package and the top-level docs."
    yield from sorted((ROOT/'nbs').glob('*.ipynb'))
    for folder in ('tests', 'tools', 'ibsr_nb', 'benchmarks'):
        yield from sorted(p for p in (ROOT/folder).rglob('*') if p.suffix in ('.py', '.md', '.csv', '.json', '.yaml', '.yml', '.sh'))
    yield from sorted(ROOT.glob('*.md'))

def mentions(text):
    return [m.group(0) for m in PRIVATE.finditer(text)]

def test_pattern_finds_the_notes():
    assert mentions('as summarised in `reference/paper-facts.md` §2') == ['reference/paper-facts.md']
    assert mentions('(`checkpoint-compat.md` §1.3)') == ['checkpoint-compat']
    assert mentions('see /work/shared/reference/x.csv')
    # the package's own asset and public sources are fine
    assert mentions('`ibsr_nb/assets/reported_results.csv`, OpenShape `src/models/ppat.py`, '
                    'https://docs.python.org/3/reference/datamodel.html') == []

def test_no_file_cites_the_private_notes():
    found = {}
    for p in files():
        if p == Path(__file__).resolve(): continue
        text = p.read_text(encoding='utf-8', errors='replace')
        if p.suffix == '.ipynb':   # sources and stored outputs alike
            text = json.dumps(json.loads(text), ensure_ascii=False)
        if hits := mentions(text): found[str(p.relative_to(ROOT))] = sorted(set(hits))
    assert not found, f'cite the public source (paper, repository and file path) instead of the private notes: {found}'
