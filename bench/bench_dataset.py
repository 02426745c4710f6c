#!/usr/bin/env python
"""Feature throughput, dataset build time and the memory of windowed datasets.

    python bench/bench_dataset.py [--symbols 500] [--days 2500] [--seq-len 180]

A synthetic universe (500 symbols x 2,500 days by default), every registered feature, 180-day
windows, 7-day horizon. Memory is measured with tracemalloc (NumPy and pandas buffers included)
while `datasets_from_features` builds train/val/test from the computed features; it is compared
with the raw feature array (float32 [rows, features]) and with the naive materialised tensor
[n_samples, seq_len, features] (computed from the shapes, never allocated). Prints JSON with
`memory_ratio_vs_raw` = peak build memory / raw feature array bytes.
"""
import argparse, gc, json, sys, time, tracemalloc
from pathlib import Path

from quantnb.data.datasets import SEGMENTS, datasets_from_features, make_dataloaders
from quantnb.data.features import compute_features, feature_names

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic import as_panel, synthetic_universe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--symbols', type=int, default=500)
    ap.add_argument('--days', type=int, default=2500)
    ap.add_argument('--seq-len', type=int, default=180)
    ap.add_argument('--horizon', type=int, default=7)
    args = ap.parse_args()

    panel = as_panel(synthetic_universe(args.symbols, args.days))
    names = feature_names('all')
    t = time.perf_counter()
    features = compute_features(panel, names, dropna=False)
    feature_seconds = time.perf_counter() - t

    gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    bundle = datasets_from_features(features, panel, seq_len=args.seq_len, horizon=args.horizon)
    build_seconds = time.perf_counter() - t
    held_now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    rows, n_features = features.shape
    raw_bytes = rows * n_features * 4
    n_samples = sum(len(bundle.segment(s)) for s in SEGMENTS)
    naive_bytes = n_samples * args.seq_len * n_features * 4
    held_bytes = (bundle.train.values.numel() * 4 + bundle.train.targets.numel() * 4
                  + sum(bundle.segment(s).ends.numel() * 8 for s in SEGMENTS))

    loader = make_dataloaders(bundle, batch_size=256)['train']
    it = iter(loader); next(it)
    t = time.perf_counter(); n = 0
    for _, (x, y) in zip(range(100), it): n += len(x)
    loader_rate = n / (time.perf_counter() - t)

    print(json.dumps({
        'symbols': args.symbols, 'days': args.days, 'rows': rows, 'features': n_features, 'seq_len': args.seq_len,
        'samples': {s: len(bundle.segment(s)) for s in SEGMENTS},
        'feature_rows_per_s': round(rows / feature_seconds), 'feature_seconds': round(feature_seconds, 2),
        'dataset_build_seconds': round(build_seconds, 2),
        'raw_feature_array_mb': round(raw_bytes / 2**20, 1),
        'dataset_held_mb': round(held_bytes / 2**20, 1),
        'dataset_build_peak_mb': round(peak / 2**20, 1),
        'naive_tensor_mb': round(naive_bytes / 2**20, 1),
        'memory_ratio_vs_raw': round(peak / raw_bytes, 3),
        'held_ratio_vs_raw': round(held_bytes / raw_bytes, 3),
        'naive_ratio_vs_raw': round(naive_bytes / raw_bytes, 1),
        'dataloader_samples_per_s': round(loader_rate),
        'target': 'memory_ratio_vs_raw <= 1.5',
        'ok': peak / raw_bytes <= 1.5,
    }, indent=2))


if __name__ == '__main__':
    main()
