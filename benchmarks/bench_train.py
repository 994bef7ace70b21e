"""Training throughput: fine-tuning with cached vs recomputed frozen-tower image embeddings.

For each image tower, and for both ways of getting the image side of a step, prints steps/s, samples/s, the
time of one epoch (every training shape once) and the share of step time spent waiting for data (drawing,
augmenting, preprocessing and moving the batch), then the ratios measured in this run:

- cached vs recomputed time per epoch (target: cached >= 5x faster);
- data-wait share of a cached step (target: <= 10%).

Two towers by default: the tiny CPU tower the notebooks train (as small as the tiny point encoder, so caching
can only save its share of the step), and open_clip's ViT-B-32 with random weights at its real size (224 px), the
regime of the paper, where the frozen tower costs far more than the point encoder. The one-off cost of filling
the cache (or reading it back from `encode_images_cached`'s disk cache) is printed separately.

    IBSR_NUM_THREADS=1 python benchmarks/bench_train.py [--steps 20] [--towers ibsr-tiny-vit-64,ViT-B-32]

Mode 'scratch' is used so the benchmark needs no pretraining run: it is exactly the fine-tuning code path
(frozen tower, point encoder trained) with a randomly initialised tower.
"""
import argparse, time
from ibsr_nb.core import configure_threads
from ibsr_nb.model import TrainConfig
from ibsr_nb.train import build_run, train_step

def measure(cfg: TrainConfig, steps: int, warmup: int = 2) -> dict:
    "Build a run and time `steps` optimiser steps after `warmup` ones."
    t0 = time.perf_counter()
    run = build_run(cfg)
    build_s = time.perf_counter() - t0
    for s in range(warmup): train_step(run, s + 1)
    step_s = data_s = 0.0
    for s in range(steps):
        m = train_step(run, warmup + s + 1)
        step_s += m['step_s']; data_s += m['data_s']
    per_step = step_s / steps
    return {'build_s': build_s, 'steps_per_s': 1 / per_step, 'samples_per_s': run.sampler.batch_size / per_step,
            'epoch_s': run.sampler.steps_per_epoch * per_step, 'data_frac': data_s / step_s,
            'steps_per_epoch': run.sampler.steps_per_epoch, 'batch': run.sampler.batch_size, 'partners': len(run.data.pool_images)}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--benchmark', default='pix3d-like')
    p.add_argument('--quick', action=argparse.BooleanOptionalAction, default=True, help='quick benchmark sizes')
    p.add_argument('--point-encoder', default='ppat-tiny-s')
    p.add_argument('--towers', default='ibsr-tiny-vit-64,ViT-B-32', help='comma-separated open_clip tower names')
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--n-points', type=int, default=256)
    p.add_argument('--steps', type=int, default=20, help='timed steps per variant')
    a = p.parse_args(argv)
    print(f'threads: {configure_threads()}')
    summary = []
    for tower in a.towers.split(','):
        cfg = TrainConfig(mode='scratch', benchmark=a.benchmark, quick=a.quick, point_encoder=a.point_encoder, tower=tower,
                          batch_size=a.batch_size, n_points=a.n_points, steps=a.steps + 2)
        c, r = (measure(cfg.replace(cache_image_embeddings=cached), a.steps) for cached in (True, False))
        print(f"\nfine-tuning {a.point_encoder} against frozen {tower} on {a.benchmark} ({'quick' if a.quick else 'full'}): "
              f"batch {c['batch']}, {a.n_points} points, {c['steps_per_epoch']} steps per epoch, "
              f"{c['partners']} partner images, {a.steps} timed steps")
        print(f"{'image side':<22}{'steps/s':>9}{'samples/s':>11}{'s/epoch':>9}{'data wait':>11}{'build s':>9}")
        for name, m in (('cached embeddings', c), ('recomputed by tower', r)):
            print(f"{name:<22}{m['steps_per_s']:>9.2f}{m['samples_per_s']:>11.1f}{m['epoch_s']:>9.2f}"
                  f"{100 * m['data_frac']:>10.1f}%{m['build_s']:>9.1f}")
        speedup = r['epoch_s'] / c['epoch_s']
        print(f"cached vs recomputed, time per epoch: {speedup:.2f}x faster (target >= 5x: {'met' if speedup >= 5 else 'NOT met'})")
        print(f"data wait, cached: {100 * c['data_frac']:.1f}% of step time (target <= 10%: {'met' if c['data_frac'] <= 0.10 else 'NOT met'})")
        print(f"one-off: embedding the {c['partners']} partner images (or reading them from the disk cache) adds "
              f"{c['build_s'] - r['build_s']:+.1f} s to building the cached run")
        summary.append((tower, speedup, c['data_frac']))
    print('\nsummary: ' + '; '.join(f'{t}: cached {s:.1f}x faster per epoch, {100 * d:.1f}% data wait' for t, s, d in summary))

if __name__ == '__main__': main()
