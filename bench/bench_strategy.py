#!/usr/bin/env python
"""StrategyLoss: the vectorised loss vs seed 003's per-sample Python loop, forward + backward, same inputs, same process.

    python bench/bench_strategy.py [--batch 256] [--days 20] [--repeats 15]

Both losses get the same random positions (leaf tensors that need a gradient) and next-day returns
(drifts that give bull, bear and sideways windows). Each timing is one forward and one backward.
After warm-up rounds of both, the two alternate for `--repeats` rounds and the medians are compared.
The values and gradients are checked equal first. Prints JSON with `speedup` (reference / vectorised);
exits with status 1 if the speedup is below `--target` (20).
"""
import argparse, json, math, statistics, time

import torch

from quantnb.strategy.core import StrategyLoss


# --- the reference: the same code as tests/test_strategy.py ---------------------------------------------------

def reference_classify_market(returns, trend_threshold=0.001, t_threshold=1.0, short_days=5, long_days=10):
    "Seed 003's classify_market for one window `[days]`: three votes in plain Python, then the majority."
    mean_return = torch.mean(returns).item()
    ma_short = torch.mean(returns[-short_days:]).item()
    ma_long = torch.mean(returns[-long_days:]).item()
    volatility = torch.std(returns).item()
    t_stat = mean_return / max(volatility / math.sqrt(len(returns)), 1e-12)
    def by_threshold(value, threshold): return 2 if value > threshold else 0 if value < -threshold else 1
    votes = [by_threshold(mean_return, trend_threshold),
             2 if min(ma_short, ma_long) > trend_threshold else 0 if max(ma_short, ma_long) < -trend_threshold else 1,
             by_threshold(t_stat, t_threshold)]
    for market in (0, 1, 2):
        if votes.count(market) >= 2: return market
    return 1


def reference_strategy_loss(position_predictions, next_day_returns, relative_return_weight=1.0, risk_cost_weight=0.5,
                            opportunity_cost_weight=0.1, cost_bps=10.0, initial_position=0.0):
    "Seed 003's StrategyLoss.forward: a Python loop over the samples of the batch."
    batch_size = position_predictions.shape[0]
    total_loss = 0
    for b in range(batch_size):
        positions = position_predictions[b]                  # [days]
        returns = next_day_returns[b]                         # [days]
        market_type = reference_classify_market(returns)
        benchmark = (0.0, 0.5, 1.0)[market_type]
        start = initial_position[b] if torch.is_tensor(initial_position) else torch.tensor(initial_position, dtype=positions.dtype)
        previous = torch.cat([start.reshape(1), positions[:-1]])
        strategy = positions * returns - cost_bps / 1e4 * torch.abs(positions - previous)
        relative_return_loss = -(torch.sum(torch.log1p(strategy)) - torch.sum(torch.log1p(benchmark * returns)))
        risk_cost = torch.sqrt(torch.mean(torch.clamp(strategy, max=0) ** 2) + 1e-12) * math.sqrt(len(returns))
        opportunity_cost = torch.sum(torch.relu(benchmark - positions) * torch.relu(returns))
        total_loss = total_loss + (relative_return_weight * relative_return_loss + risk_cost_weight * risk_cost
                                   + opportunity_cost_weight * opportunity_cost)
    return total_loss / batch_size


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
    returns = (torch.rand(args.batch, 1, generator=g) - 0.5) * 0.02 + 0.02 * torch.randn(args.batch, args.days, generator=g)
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
