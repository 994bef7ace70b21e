"""Throughput of the procedural data path, measured in one run on this machine.

    python benchmarks/bench_data.py [--size 64] [--shapes 2] [--points 2048]

Prints shapes generated/s, points sampled/s, gallery views and query photos rendered/s with embree and with
trimesh's pure-python ray fallback, and the embree/fallback speed ratio (same images, same run). No timed
assertions: the numbers are for reading, and ratios are only meaningful against a reference in the same run.
"""
import argparse, time
import numpy as np
from ibsr_nb.core import configure_threads, environment_report
from ibsr_nb.shapes import CATEGORIES, make_shape
from ibsr_nb.pointclouds import sample_points
from ibsr_nb.render import render_multiview, synth_query, has_embree

def rate(fn, n):
    "Items per second of calling fn(i) for i in range(n) (after one warm-up call)."
    fn(0)
    t0 = time.perf_counter()
    for i in range(n): fn(i)
    return n / (time.perf_counter() - t0)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=64, help='image side in pixels')
    p.add_argument('--shapes', type=int, default=2, help='instances per category for the shape and point rates')
    p.add_argument('--points', type=int, default=2048, help='points per cloud')
    p.add_argument('--fallback-n', type=int, default=3, help='items rendered with the slow pure-python engine')
    a = p.parse_args(argv)
    threads = configure_threads()
    env = environment_report()
    print(f"torch {env['torch']} | trimesh {env['trimesh']} | threads {threads} | embree available: {has_embree()}")

    jobs = [(c, s) for s in range(a.shapes) for c in CATEGORIES]
    shapes_per_s = rate(lambda i: make_shape(*jobs[i]), len(jobs))
    meshes = [make_shape(*j) for j in jobs]
    faces = np.mean([len(s.mesh.faces) for s in meshes])
    clouds_per_s = rate(lambda i: sample_points(meshes[i].mesh, a.points, seed=i), len(meshes))
    print(f'shapes generated:   {shapes_per_s:8.1f} /s   ({len(jobs)} shapes over {len(CATEGORIES)} categories, mean {faces:.0f} faces)')
    print(f'points sampled:     {clouds_per_s * a.points:8.0f} /s   ({clouds_per_s:.1f} clouds of {a.points} points per s)')

    rows = {}
    for engine, n in [('embree', len(meshes)), ('triangle', a.fallback_n)]:
        if engine == 'embree' and not has_embree(): print('embree not available: skipping'); continue
        views = rate(lambda i: render_multiview(meshes[i % len(meshes)].mesh, 12, a.size, engine=engine), n) * 12
        queries = rate(lambda i: synth_query(meshes[i % len(meshes)], i, a.size, engine=engine), n)
        rows[engine] = (views, queries)
        print(f'{engine:>9} engine:   {views:8.1f} gallery views/s   {queries:8.2f} query photos/s   ({a.size} px, {n} items)')
    if len(rows) == 2:
        (ve, qe), (vt, qt) = rows['embree'], rows['triangle']
        same = np.mean([(synth_query(meshes[i], i, a.size, engine='embree')['mask'] == synth_query(meshes[i], i, a.size, engine='triangle')['mask']).mean()
                        for i in range(a.fallback_n)])
        print(f'embree / pure-python fallback: {ve / vt:.1f}x for gallery views, {qe / qt:.1f}x for query photos '
              f'(masks agree on {100 * same:.2f} % of pixels)')

if __name__ == '__main__': main()
