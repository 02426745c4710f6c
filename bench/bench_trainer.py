#!/usr/bin/env python
"""Trainer overhead: training samples/s of `Trainer` vs a bare PyTorch loop, same model, data and process.

    python bench/bench_trainer.py [--epochs 8] [--symbols 600519,000001,600036]

For gru and transformer: the same DataLoader, the same initial weights, AdamW and MSE in both. The
bare loop is forward, loss, backward, step. The Trainer's epoch adds what it always does (warm-up
and cosine schedule, gradient clipping, the running loss); epochs alternate between the two after
one warm-up epoch each, and the median epoch times are compared. Validation, checkpoints and
logging happen between epochs and are reported separately (`fit_seconds_per_epoch`).
Prints JSON with `trainer_overhead` per model (trainer time / bare time - 1).
"""
import argparse, copy, json, statistics, tempfile, time

import torch
import torch.nn.functional as F

from quantnb.core import set_seed
from quantnb.data.datasets import load_datasets, make_dataloaders
from quantnb.models.core import create_model
from quantnb.train.runs import TrainingManager
from quantnb.train.trainer import Trainer, TrainingArgs


def bare_epoch(model, optimizer, loader) -> float:
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def trainer_epoch(trainer) -> float:
    start = time.perf_counter()
    trainer.train_epoch()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--epochs', type=int, default=8)   # 4 proved noisy on a shared 2-core machine (gru 0.05 .. 0.11)
    ap.add_argument('--symbols', default='600519,000001,600036')
    ap.add_argument('--batch-size', type=int, default=64)
    args = ap.parse_args()
    set_seed(0)
    bundle = load_datasets(args.symbols.split(','), seq_len=60, horizon=7, feature_set='basic11')
    loaders = make_dataloaders(bundle, batch_size=args.batch_size, seed=0)
    n = len(bundle.train)
    result = {'train_samples': n, 'batch_size': args.batch_size, 'threads': torch.get_num_threads(), 'models': {}}
    for name in ('gru', 'transformer'):
        set_seed(0)
        model = create_model(name, len(bundle.feature_names), horizon=7)
        bare_model = copy.deepcopy(model)
        bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-3)
        trainer = Trainer(model, loaders['train'], loaders['val'],
                          TrainingArgs(epochs=args.epochs + 1, progress=False, loss='mse'))
        bare_epoch(bare_model, bare_opt, loaders['train']); trainer_epoch(trainer)       # warm-up
        bare, tr = [], []
        for _ in range(args.epochs):
            bare.append(bare_epoch(bare_model, bare_opt, loaders['train']))
            tr.append(trainer_epoch(trainer))
        b, t = statistics.median(bare), statistics.median(tr)
        # the whole fit with validation, checkpoints and logs, for information
        set_seed(0)
        manager = TrainingManager('bench', name, tempfile.mkdtemp())
        fit = Trainer(create_model(name, len(bundle.feature_names), horizon=7), loaders['train'], loaders['val'],
                      TrainingArgs(epochs=2, progress=False, patience=None), manager)
        start = time.perf_counter(); fit.fit(); fit_seconds = (time.perf_counter() - start) / 2
        result['models'][name] = {'bare_samples_per_s': round(n / b, 1), 'trainer_samples_per_s': round(n / t, 1),
                                  'bare_epoch_seconds': round(b, 3), 'trainer_epoch_seconds': round(t, 3),
                                  'trainer_overhead': round(t / b - 1, 4),
                                  'fit_seconds_per_epoch': round(fit_seconds, 3)}
    result['trainer_overhead'] = {k: v['trainer_overhead'] for k, v in result['models'].items()}
    result['target'] = 'trainer_overhead < 0.10 per model'
    result['ok'] = all(v < 0.10 for v in result['trainer_overhead'].values())
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
