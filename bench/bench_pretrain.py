#!/usr/bin/env python
"""Does masked pretraining on all sample stocks help a model on one stock? Pretrained vs from scratch.

    python bench/bench_pretrain.py [--pretrain-epochs 8] [--epochs 15] [--seeds 0,1,2] [--target 600519]

For a transformer and a GRU (default sizes): one masked-pretraining run on all ten sample stocks
(an ordinary run in --out), then fine-tuning on the target stock with 100%, 30% and 10% of its
training windows (the most recent part of the training period), against the same architecture
trained from scratch, for each seed. Reported per cell: best validation loss and validation
next-day direction accuracy, mean +- std over seeds. Prints JSON and saves a plot. Whether
pretraining helps is the finding, whatever it is.
"""
import argparse, json, statistics, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from quantnb.core import set_seed
from quantnb.data.datasets import WindowDataset, load_datasets
from quantnb.models.core import create_model
from quantnb.train.pipeline import run_training
from quantnb.train.trainer import Trainer, TrainingArgs
from quantnb.transfer import load_pretrained


def subset(ds: WindowDataset, fraction: float) -> WindowDataset:
    "The most recent `fraction` of a segment's samples (windows keep sharing the same array)."
    ends = ds.ends.numpy()
    keep = ends[len(ends) - max(1, int(round(len(ends) * fraction))):]
    return WindowDataset(ds.values.numpy(), ds.targets.numpy(), keep, ds.seq_len)


def fine_tune(name, bundle, fraction, seed, pretrained_run, out, epochs):
    set_seed(seed)
    model = create_model(name, len(bundle.feature_names), horizon=bundle.horizon, seq_len=bundle.seq_len)
    if pretrained_run:
        load_pretrained(model, pretrained_run, output_dir=out, feature_names=bundle.feature_names,
                        seq_len=bundle.seq_len, verbose=False)
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(subset(bundle.train, fraction), batch_size=64, shuffle=True, generator=g)
    val = DataLoader(bundle.val, batch_size=256)
    trainer = Trainer(model, train, val, TrainingArgs(epochs=epochs, lr=1e-3, patience=5, progress=False, seed=seed))
    summary = trainer.fit()                       # ends with the best epoch's weights
    pred, true = trainer.predict(val)
    return {'val_loss': summary['best_val_loss'],
            'direction_accuracy': float((np.sign(pred[:, 0]) == np.sign(true[:, 0])).mean()),
            'train_samples': len(train.dataset), 'epochs': summary['total_epochs_trained']}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--pretrain-epochs', type=int, default=8)
    ap.add_argument('--epochs', type=int, default=15)
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--target', default='600519')
    ap.add_argument('--models', default='transformer,gru')
    ap.add_argument('--out', default=None)
    ap.add_argument('--plot', default='bench/results/pretrain_vs_scratch.png')
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp()
    seeds = [int(s) for s in args.seeds.split(',')]
    seq_len, fractions = 60, (1.0, 0.3, 0.1)
    bundle = load_datasets(args.target, feature_set='basic11', seq_len=seq_len, horizon=7)
    result = {'target': args.target, 'seq_len': seq_len, 'seeds': seeds, 'fractions': fractions, 'models': {}}
    for name in args.models.split(','):
        t = time.perf_counter()
        pre = run_training(model=name, task='pretrain', pretext='masked', symbols='all', seq_len=seq_len,
                           epochs=args.pretrain_epochs, batch_size=128, lr=1e-3, out_dir=out, progress=False, seed=0)
        cell = {'pretrain_run': pre.manager.run_name, 'pretrain_seconds': round(time.perf_counter() - t, 1),
                'pretrain_masked_mse': pre.results['metrics']['masked_mse'],
                'pretrain_baseline_zero_mse': pre.results['baselines']['zero']['masked_mse']}
        for fraction in fractions:
            for init in ('pretrained', 'scratch'):
                source = pre.manager.run_name if init == 'pretrained' else None
                runs = [fine_tune(name, bundle, fraction, s, source, out, args.epochs) for s in seeds]
                cell[f'{int(fraction * 100)}%/{init}'] = {
                    'val_loss_mean': statistics.mean(r['val_loss'] for r in runs),
                    'val_loss_std': statistics.pstdev(r['val_loss'] for r in runs),
                    'direction_accuracy_mean': statistics.mean(r['direction_accuracy'] for r in runs),
                    'direction_accuracy_std': statistics.pstdev(r['direction_accuracy'] for r in runs),
                    'train_samples': runs[0]['train_samples'], 'epochs': [r['epochs'] for r in runs]}
        result['models'][name] = cell
        print(f'{name} done', file=sys.stderr, flush=True)
    plot(result, args.plot)
    result['plot'] = args.plot
    print(json.dumps(result, indent=2))


def plot(result, path):
    import matplotlib; matplotlib.use('agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2 * len(result['models']), figsize=(5 * len(result['models']) * 2, 3.4))
    for i, (name, cell) in enumerate(result['models'].items()):
        for j, metric in enumerate(('val_loss', 'direction_accuracy')):
            ax = axes[2 * i + j]
            for k, init in enumerate(('pretrained', 'scratch')):
                keys = [f'{int(f * 100)}%/{init}' for f in result['fractions']]
                ax.errorbar(np.arange(3) + (k - 0.5) * 0.1, [cell[x][f'{metric}_mean'] for x in keys],
                            [cell[x][f'{metric}_std'] for x in keys], marker='o', capsize=3, label=init)
            ax.set_xticks(range(3), [f'{int(f * 100)}%' for f in result['fractions']])
            ax.set_xlabel('share of training data')
            ax.set_title(f'{name}: validation {"loss" if metric == "val_loss" else "next-day direction accuracy"}')
            ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == '__main__':
    main()
