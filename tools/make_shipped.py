"""Regenerate the shipped pre-aligned weights (`ibsr_nb/weights`) from nothing and record what they reach.

    python tools/make_shipped.py [--jobs 2] [--no-write]

Runs the pre-alignment recipes of the `standard` scale (stage 1: the image/text tower; stage 2: S and L point encoders on
the ensembled and the narrow corpus) in that scale's run cache ($IBSR_HOME/paper/standard), so `ibsr reproduce --standard`
reuses them; then writes them as fp16 package weights with `provenance.json`, loads them back through the registry and
records their zero-shot Acc@1/Acc@10 on the quick benchmarks' test photos.
"""
import argparse, json, time
from ibsr_nb.core import ibsr_home, configure_threads
from ibsr_nb.paper import paper_scale, prealign_recipes, run_all, shipped_model, shipped_runs, BENCHES
from ibsr_nb.pretrained import SHIPPED
from ibsr_nb.prealign import write_shipped, record_shipped_metrics
from ibsr_nb.train import evaluate, chance_levels
from ibsr_nb.data import load_benchmark

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--jobs', type=int, default=None, help='stage-2 runs side by side (default: see ibsr_nb.paper.paper_jobs)')
    ap.add_argument('--no-write', action='store_true', help='train and report only; leave ibsr_nb/weights as it is')
    a = ap.parse_args()
    sc = paper_scale('standard'); root = ibsr_home('paper', sc.name)
    rs, _ = prealign_recipes(sc, root)
    t0 = time.perf_counter()
    results = run_all(rs, root, desc='pre-alignment (standard scale)', jobs=a.jobs)
    print(f'pre-alignment runs: {time.perf_counter() - t0:.0f} s')
    for r in results: print(r['key'], f"{r['seconds']:.0f} s", json.dumps(r['summary'].get('held_out', ''))[:200])
    if a.no_write: return
    write_shipped(next(r.run_dir(root) for r in rs if r.kind == 'tower'), shipped_runs(rs, root))
    configure_threads()
    metrics = {}
    for name in SHIPPED:
        model = shipped_model(name); metrics[name] = {}
        for b in BENCHES:
            t = evaluate(model, b, quick=True).loc['Total']
            g = len(load_benchmark(b, quick=True).gallery('test'))
            metrics[name][b] = {'acc@1': round(float(t['acc@1']), 4), 'acc@10': round(float(t['acc@10']), 4),
                                'n_queries': int(t['n_queries']), 'chance@1': round(chance_levels(g)['acc@1'], 4)}
        print(name, json.dumps(metrics[name]))
    record_shipped_metrics(metrics)

if __name__ == '__main__': main()
