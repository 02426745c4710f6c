#!/usr/bin/env python
"""What structured pruning buys on a CPU: a transformer and a GRU at 0%, 50% and 70% structured sparsity.

    python bench/bench_prune.py [--symbol 600519] [--seq-len 60] [--batch 256] [--epochs 4] [--finetune-epochs 3]
                                [--finetune-lr 1e-3] [--trials 3] [--repeat 15] [--threads 1]

For each model (default sizes, the 11 `basic11` features of `--symbol`, 7-day regression):

1. train the dense model for `--epochs` epochs (seeded, early stopping off) and score the test split;
2. for 50% and 70%: remove that share of the units of every prunable group (attention heads, FFN channels, GRU hidden
   units, head units; least L2 magnitude first, at least one unit per group), physically, through `remove_units`
   (a smaller model rebuilt by `build_model`), fine-tune `--finetune-epochs` epochs at `--finetune-lr` and score the
   test split (before and after the fine-tune);
3. parameters, FLOPs per window (`count_flops`: linear and recurrent layers, attention) and CPU inference latency
   on a batch of `--batch` real test windows: the three models in one process, eval + inference mode, warm-up
   passes, then timed in turn, round after round (`--repeat` rounds per trial); the ratio of medians against the
   dense model, per trial, and the median over `--trials` trials.

The batch is 256 windows by default: one forward pass scoring a universe the size of the CSI 300 once a day, the
inference a pruned model is for. One thread by default: repeatable on a shared machine, and what one worker of a
serving process gets. Prints one JSON object; `latency_ratio_70` per model is the headline (target <= 0.6).
"""
import argparse, json, platform, statistics, time

import torch

from quantnb.core import set_seed
from quantnb.data.datasets import load_datasets, make_dataloaders
from quantnb.models.core import count_parameters, create_model
from quantnb.prune.structured import (count_flops, cpu_latency, remove_units, top_units, uniform_counts, unit_groups,
                                      unit_scores)
from quantnb.train.evaluate import evaluate_predictions
from quantnb.train.trainer import Trainer, TrainingArgs

SPARSITIES = (0.0, 0.5, 0.7)
HEADLINE = ('mae', 'rmse', 'direction_accuracy', 'ic')


def test_metrics(trainer, bundle, loader) -> dict:
    outputs, _ = trainer.predict(loader)
    metrics = evaluate_predictions(bundle, outputs, 'test')['metrics']
    return {k: round(metrics[k], 6) for k in HEADLINE}


def bench_model(name, bundle, loaders, args) -> dict:
    set_seed(args.seed)
    dense = create_model(name, len(bundle.feature_names), seq_len=args.seq_len)
    train = lambda model, epochs, lr: Trainer(
        model, loaders['train'], loaders['val'],
        TrainingArgs(epochs=epochs, lr=lr, patience=None, progress=False, seed=args.seed))
    t0 = time.perf_counter()
    trainer = train(dense, args.epochs, args.lr)
    trainer.fit()
    models = {0.0: dense}
    rows = {0.0: {'test': test_metrics(trainer, bundle, loaders['test']),
                  'train_seconds': round(time.perf_counter() - t0, 1)}}
    groups = unit_groups(dense)
    scores = unit_scores(dense, groups, 'magnitude')
    for s in SPARSITIES[1:]:
        pruned = remove_units(dense, top_units(scores, uniform_counts(groups, s)), groups)
        t0 = time.perf_counter()
        evaluator = Trainer(pruned, loaders['train'], loaders['val'], TrainingArgs(progress=False))
        before = test_metrics(evaluator, bundle, loaders['test'])
        ft = train(pruned, args.finetune_epochs, args.finetune_lr)
        ft.fit()
        models[s] = pruned
        rows[s] = {'test_before_finetune': before, 'test': test_metrics(ft, bundle, loaders['test']),
                   'finetune_seconds': round(time.perf_counter() - t0, 1),
                   'widths': {g.name: g.n_units for g in unit_groups(pruned)}}
    x = torch.stack([bundle.test[i % len(bundle.test)][0] for i in range(args.batch)])   # [batch, seq_len, n_features]
    trials = []
    for _ in range(args.trials):
        lat = cpu_latency({s: m for s, m in models.items()}, x, repeat=args.repeat, warmup=3, threads=args.threads)
        trials.append(lat)
    out = {}
    for s, m in models.items():
        key = f'{round(s * 100)}'
        ratios = [t[s] / t[0.0] for t in trials]
        out[key] = {'unit_sparsity': s, 'parameters': count_parameters(m),
                    'parameter_ratio': round(count_parameters(m) / count_parameters(dense), 4),
                    'flops_per_window': count_flops(m, x[:1]),
                    'flops_ratio': round(count_flops(m, x[:1]) / count_flops(dense, x[:1]), 4),
                    'latency_ms': round(statistics.median(t[s] for t in trials) * 1e3, 3),
                    'latency_ratio': round(statistics.median(ratios), 4),
                    'latency_ratio_trials': [round(r, 4) for r in ratios],
                    **rows[s]}
    out['latency_ratio_50'], out['latency_ratio_70'] = out['50']['latency_ratio'], out['70']['latency_ratio']
    out['meets_target_70'] = out['latency_ratio_70'] <= 0.6
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--symbol', default='600519')
    p.add_argument('--seq-len', type=int, default=60)
    p.add_argument('--batch', type=int, default=256, help='windows per timed forward pass')
    p.add_argument('--epochs', type=int, default=4, help='dense training epochs')
    p.add_argument('--finetune-epochs', type=int, default=3)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--finetune-lr', type=float, default=1e-3)
    p.add_argument('--trials', type=int, default=3)
    p.add_argument('--repeat', type=int, default=15, help='timed rounds per trial')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads for training and timing')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--models', default='transformer,gru')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_datasets(args.symbol, seq_len=args.seq_len, horizon=7)
    loaders = make_dataloaders(bundle, batch_size=64, seed=args.seed)
    results = {name: bench_model(name, bundle, loaders, args) for name in args.models.split(',')}
    print(json.dumps({
        'symbol': args.symbol, 'input_shape': [args.batch, args.seq_len, len(bundle.feature_names)],
        'samples': {k: len(bundle.segment(k)) for k in ('train', 'val', 'test')},
        'epochs': args.epochs, 'finetune_epochs': args.finetune_epochs, 'finetune_lr': args.finetune_lr,
        'trials': args.trials, 'repeat': args.repeat,
        'torch': torch.__version__, 'threads': torch.get_num_threads(), 'machine': platform.machine(),
        'criterion': 'L2 magnitude, every group loses the same share of units', 'target_latency_ratio_70': 0.6,
        'models': results,
        'latency_ratio_70': {name: r['latency_ratio_70'] for name, r in results.items()},
    }, indent=2))


if __name__ == '__main__':
    main()
