#!/usr/bin/env python
"""StrategyLoss: the vectorised loss vs a per-sample Python loop, forward + backward, same inputs, same process.

    python bench/bench_strategy.py [--batch 256] [--days 20] [--repeats 15]

Both losses get the same random positions (leaf tensors that need a gradient) and next-day returns
(drifts that give bull, bear and sideways windows). Each timing is one forward and one backward.
After warm-up rounds of both, the two alternate for `--repeats` rounds and the medians are compared.
The values and gradients are checked equal first. Prints JSON with `speedup` (reference / vectorised);
exits with status 1 if the speedup is below `--target` (20).
"""
import argparse, json, statistics, sys, time
from pathlib import Path

import torch

from quantnb.strategy.core import StrategyLoss


# the reference: the per-sample loop, exactly as the tests check it against StrategyLoss
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests'))
from test_strategy import reference_strategy_loss


# --- timing ---------------------------------------------------------------------------------------------------

def forward_backward(loss_fn, positions, returns) -> tuple[float, torch.Tensor, torch.Tensor]:
    p = positions.clone().requires_grad_()
    start = time.perf_counter()
    loss = loss_fn(p, returns)
    loss.backward()
    return time.perf_counter() - start, loss.detach(), p.grad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--days', type=int, default=20)
    ap.add_argument('--repeats', type=int, default=15)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--target', type=float, default=20.0)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    drift = (torch.rand(args.batch, 1, generator=g) - 0.5) * 0.02
    returns = drift + 0.02 * torch.randn(args.batch, args.days, generator=g)
    positions = torch.randint(0, 11, (args.batch, args.days), generator=g).float() / 10
    vectorised = StrategyLoss()
    _, lv, gv = forward_backward(vectorised, positions, returns)
    _, lr, gr = forward_backward(reference_strategy_loss, positions, returns)
    assert abs(lv.item() - lr.item()) < 1e-5 and torch.allclose(gv, gr, atol=1e-6), 'the two losses disagree'
    for _ in range(args.warmup):
        forward_backward(vectorised, positions, returns); forward_backward(reference_strategy_loss, positions, returns)
    tv, tr = [], []
    for _ in range(args.repeats):
        tv.append(forward_backward(vectorised, positions, returns)[0])
        tr.append(forward_backward(reference_strategy_loss, positions, returns)[0])
    v, r = statistics.median(tv), statistics.median(tr)
    result = {'batch': args.batch, 'days': args.days, 'repeats': args.repeats, 'threads': torch.get_num_threads(),
              'vectorised_ms': round(v * 1e3, 3), 'per_sample_loop_ms': round(r * 1e3, 3), 'speedup': round(r / v, 1),
              'target': args.target, 'meets_target': r / v >= args.target, 'torch': torch.__version__}
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if result['meets_target'] else 1)


if __name__ == '__main__':
    main()
