"""Accuracy and cost of ours, CMIC and CMAH on one benchmark, measured in one run on this machine.

    python benchmarks/bench_baselines.py [--benchmark pix3d-like] [--full] [--ours RUN_DIR] [--scan 1000,10000,30000]

1. Trains the three systems on the benchmark's training photos (ours: pre-alignment on the ensembled corpus, then
   fine-tuning, through ibsr_nb.train; or pass a trained run with --ours), evaluates them on its test queries and prints
   `baseline_comparison`'s table: Acc@1/Acc@10/mAP@10 next to parameters, values and bytes stored per shape, time to
   embed a query, time to rank the gallery per query, and training time.
2. Scans the search cost alone over synthetic galleries of growing size, with each system's descriptor layout
   (one 128-d float vector per shape; 12 x 128-d view embeddings + attention; 64-bit codes), and prints the ratios
   CMIC / ours and ours / CMAH measured in the same run. No timed assertions: the numbers are for reading.
Quick sizes take a few minutes on one CPU thread, most of it pre-aligning ours.
"""
import argparse, time
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from ibsr_nb.core import configure_threads, environment_report
from ibsr_nb.index import ShapeIndex
from ibsr_nb.baselines.cmic import ViewAttention
from ibsr_nb.baselines.cmah import baseline_comparison, time_per_item

def search_scan(sizes, n_queries=16, dim=128, views=12, bits=64, k=10) -> pd.DataFrame:
    "µs per query to rank galleries of each size: flat inner product (one vector per shape), CMIC's view attention, Hamming."
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(n_queries, dim, generator=g), dim=-1)
    att = ViewAttention(dim).eval()
    qc = np.random.default_rng(1).standard_normal((n_queries, bits))
    rows = []
    for n in sizes:
        emb = F.normalize(torch.randn(n, dim, generator=g), dim=-1).numpy()
        flat = ShapeIndex(dim, 'flat'); flat.add(emb, [str(i) for i in range(n)]); del emb
        h = F.normalize(torch.randn(n, views, dim, generator=g), dim=-1)
        binary = ShapeIndex(bits, 'binary'); binary.add(np.random.default_rng(2).standard_normal((n, bits)), [str(i) for i in range(n)])
        with torch.no_grad():
            t_ours = time_per_item(lambda: flat.search(q.numpy(), k), n_queries, repeats=3)
            t_cmic = time_per_item(lambda: torch.topk(att(q, h, query_tile=4), k, dim=1), n_queries, repeats=2)
        t_cmah = time_per_item(lambda: binary.search(qc, k), n_queries, repeats=3)
        rows.append({'gallery': n, 'ours µs': 1000 * t_ours, 'CMIC µs': 1000 * t_cmic, 'CMAH µs': 1000 * t_cmah,
                     'CMIC / ours': t_cmic / t_ours, 'ours / CMAH': t_ours / t_cmah,
                     'MB ours': n * dim * 4 / 2**20, 'MB CMIC': n * views * dim * 4 / 2**20, 'MB CMAH': n * bits / 8 / 2**20})
        del h, flat, binary
    return pd.DataFrame(rows).set_index('gallery')

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--benchmark', default='pix3d-like', help='benchmark of ibsr_nb.data')
    p.add_argument('--full', action='store_true', help='full benchmark sizes (default: quick)')
    p.add_argument('--ours', default=None, help='a trained run directory of ibsr_nb.train for ours (default: train one)')
    p.add_argument('--workdir', default=None, help='where to keep the runs of ours (reused when present)')
    p.add_argument('--pretrain-steps', type=int, default=400)
    p.add_argument('--finetune-steps', type=int, default=200)
    p.add_argument('--bits', type=int, default=64, help='CMAH code length')
    p.add_argument('--scan', default='1000,10000,30000', help='gallery sizes of the search-cost scan ("" to skip)')
    p.add_argument('--skip-training', action='store_true', help='only the search-cost scan')
    a = p.parse_args(argv)
    threads = configure_threads()
    env = environment_report()
    print(f"torch {env['torch']} | threads {threads} | benchmark {a.benchmark} ({'full' if a.full else 'quick'})")
    if not a.skip_training:
        t0 = time.perf_counter()
        table, reports = baseline_comparison(a.benchmark, quick=not a.full, ours=a.ours, bits=a.bits, workdir=a.workdir,
                                             pretrain_steps=a.pretrain_steps, finetune_steps=a.finetune_steps)
        with pd.option_context('display.width', 200, 'display.max_columns', 20, 'display.float_format', '{:.4g}'.format):
            print(f'\naccuracy (test queries, image -> shape) and cost, {time.perf_counter() - t0:.0f} s in all:')
            print(table.T.to_string())
            print('\nCMAH, points -> image (Hamming):')
            print(reports['cmah_points_to_image'].loc[['Total']].round(3).to_string())
        r = {k: reports[k] for k in ('ours', 'cmic', 'cmah')}
        print(f"\nper shape: CMIC stores {r['cmic'].bytes_per_shape / r['ours'].bytes_per_shape:.0f}x the bytes of ours, "
              f"ours {r['ours'].bytes_per_shape / r['cmah'].bytes_per_shape:.0f}x those of CMAH; ranking 10,000 shapes costs CMIC "
              f"{r['cmic'].search_ms_large / r['ours'].search_ms_large:.1f}x ours per query, ours "
              f"{r['ours'].search_ms_large / r['cmah'].search_ms_large:.1f}x CMAH")
    sizes = [int(s) for s in a.scan.split(',') if s.strip()]
    if sizes:
        with pd.option_context('display.width', 200, 'display.float_format', '{:.3g}'.format):
            print('\nsearch cost per query against synthetic galleries (descriptor layouts of the three systems):')
            print(search_scan(sizes).to_string())

if __name__ == '__main__': main()
