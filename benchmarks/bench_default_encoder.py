"""Does the default encoder find the right shape? `ibsr index` / `ibsr query` with no encoder argument, on shapes nobody trained on.

    python benchmarks/bench_default_encoder.py [--per-category 4] [--photos 2] [--out DIR]

Generates `--per-category` new shapes of every category (seeds outside every corpus and benchmark), writes them as
coloured PLY meshes, indexes the folder with `ibsr index DIR --out IDX` (a subprocess: the CLI exactly as a user runs it,
no --encoder), renders `--photos` photo-style query images per shape with the query synthesiser (background kept, as a
user's photo), and searches them with the index's own encoder (`Searcher.open`, the code `ibsr query` runs; two queries
also go through the CLI). Text queries are the shapes' generated captions (e.g. "a swivel chair with arms"): the
category of the first result is scored. Prints the rates beside chance.
"""
import os, sys, json, argparse, tempfile, subprocess, time
from pathlib import Path
import numpy as np

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--per-category', type=int, default=4)
    p.add_argument('--photos', type=int, default=2)
    p.add_argument('--out', type=Path, default=None, help='work folder (default: a temporary one)')
    a = p.parse_args()
    from PIL import Image
    from ibsr_nb.shapes import CATEGORIES, make_shape
    from ibsr_nb.render import synth_query
    from ibsr_nb.search import Searcher
    work = a.out or Path(tempfile.mkdtemp(prefix='ibsr_bench_default_'))
    meshes, photos = work/'meshes', work/'photos'
    meshes.mkdir(parents=True, exist_ok=True); photos.mkdir(exist_ok=True)
    shapes = {}
    for c in CATEGORIES:
        for i in range(a.per_category):
            s = make_shape(c, 9_000_000 + i)
            sid = f'{c}_{i}'; shapes[sid] = s
            s.mesh.export(meshes/f'{sid}.ply')
            for q in range(a.photos):
                Image.fromarray(synth_query(s, q, 96)['rgb']).save(photos/f'{sid}__q{q}.png')
    env = dict(os.environ, IBSR_PROGRESS='0')
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-m', 'ibsr_nb.cli', 'index', str(meshes), '--out', str(work/'index'), '--json'],
                       capture_output=True, text=True, env=env)
    if r.returncode: raise SystemExit(f'ibsr index failed:\n{r.stderr[-2000:]}')
    index_s = time.perf_counter() - t
    summary = json.loads(r.stdout[r.stdout.index('{'):])
    searcher = Searcher.open(work/'index')
    top1 = top10 = 0; files = sorted(photos.glob('*.png'))
    for f in files:
        truth = f.stem.split('__')[0]
        ids = [Path(str(x)).stem for x in searcher.search(f, None, 10)['shape_id']]
        top1 += ids[0] == truth; top10 += truth in ids
    text_hits = 0
    for sid, s in shapes.items():
        first = Path(str(searcher.search(None, s.caption, 1)['shape_id'].iloc[0])).stem
        text_hits += shapes[first].category == s.category
    cli = subprocess.run([sys.executable, '-m', 'ibsr_nb.cli', 'query', str(files[0]), '--index', str(work/'index'), '--json',
                          '--no-picture'], capture_output=True, text=True, env=env)
    if cli.returncode: raise SystemExit(f'ibsr query failed:\n{cli.stderr[-2000:]}')
    cli_ids = [Path(x['shape_id']).stem for x in json.loads(cli.stdout)['results']]
    lib_ids = [Path(str(x)).stem for x in searcher.search(files[0], None, 10)['shape_id']]
    G, Q, T = len(shapes), len(files), len(shapes)
    print(f"encoder: {summary.get('encoder')} (the default); {G} new shapes indexed in {index_s:.0f} s, {Q} photos, {T} captions")
    print(f'photo -> shape  top-1: {top1 / Q:.1%} (chance {1 / G:.1%})   top-10: {top10 / Q:.1%} (chance {min(10, G) / G:.1%})')
    print(f'caption -> category of the first result: {text_hits / T:.1%} (chance {1 / len(CATEGORIES):.1%})')
    print(f"CLI and library agree on the first query's ranking: {cli_ids == lib_ids}")

if __name__ == '__main__': main()
