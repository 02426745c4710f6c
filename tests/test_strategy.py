"""Strategy network, Gumbel head, StrategyLoss against a per-sample loop, MarketClassifier, stage-1 features and
run_two_stage."""
import json, math

import numpy as np
import pandas as pd
import pytest
import torch

from quantnb.strategy import two_stage
from quantnb.strategy.core import (BEAR, BULL, SIDEWAYS, GRUStrategyNetwork, GumbelSoftmaxPositionHead,
                                   MarketClassifier, StrategyLoss, strategy_returns, temperature_schedule)
from quantnb.strategy.two_stage import (StrategyFeatureHead, TwoStageParams, extract_features, feature_cache_path,
                                        load_stage1, load_strategy_network, run_two_stage, strategy_positions)
from quantnb.train.pipeline import run_training
from quantnb.train.runs import TrainingManager



pytestmark = pytest.mark.usefixtures('one_torch_thread')

# --- the loss, one sample at a time (the reference; bench/bench_strategy.py times it) ---------------------

def reference_classify_market(returns, trend_threshold=0.001, t_threshold=1.0, short_days=5, long_days=10):
    "The market classification of one window `[days]`: three votes in plain Python, then the majority."
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
    "StrategyLoss.forward written as a Python loop over the samples of the batch."
    batch_size = position_predictions.shape[0]
    total_loss = 0
    for b in range(batch_size):
        positions = position_predictions[b]                  # [days]
        returns = next_day_returns[b]                         # [days]
        market_type = reference_classify_market(returns)
        benchmark = (0.0, 0.5, 1.0)[market_type]
        start = initial_position[b] if torch.is_tensor(initial_position) else torch.tensor(initial_position,
                                                                                           dtype=positions.dtype)
        previous = torch.cat([start.reshape(1), positions[:-1]])
        strategy = positions * returns - cost_bps / 1e4 * torch.abs(positions - previous)
        relative_return_loss = -(torch.sum(torch.log1p(strategy)) - torch.sum(torch.log1p(benchmark * returns)))
        risk_cost = torch.sqrt(torch.mean(torch.clamp(strategy, max=0) ** 2) + 1e-12) * math.sqrt(len(returns))
        opportunity_cost = torch.sum(torch.relu(benchmark - positions) * torch.relu(returns))
        total_loss = total_loss + (relative_return_weight * relative_return_loss + risk_cost_weight * risk_cost
                                   + opportunity_cost_weight * opportunity_cost)
    return total_loss / batch_size


def random_batch(seed, batch=64, days=20, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    drift = (torch.rand(batch, 1, generator=g, dtype=dtype) - 0.5) * 0.02          # bull, bear and sideways windows
    returns = drift + 0.02 * torch.randn(batch, days, generator=g, dtype=dtype)
    positions = torch.rand(batch, days, generator=g, dtype=dtype)
    return positions, returns


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('initial', ['cash', 'per_sample'])
def test_vectorised_loss_equals_the_per_sample_loop_in_value_and_gradient(seed, initial):
    positions, returns = random_batch(seed)
    init = 0.0 if initial == 'cash' else torch.rand(len(positions), generator=torch.Generator().manual_seed(seed + 10),
                                                    dtype=torch.float64)
    weights = dict(relative_return_weight=0.7, risk_cost_weight=0.9, opportunity_cost_weight=0.3)
    p1 = positions.clone().requires_grad_()
    p2 = positions.clone().requires_grad_()
    vectorised = StrategyLoss(**weights, cost_bps=15)(p1, returns, init)
    reference = reference_strategy_loss(p2, returns, **weights, cost_bps=15, initial_position=init)
    assert abs(vectorised.item() - reference.item()) < 1e-6
    vectorised.backward(); reference.backward()
    assert p1.grad.abs().sum() > 0
    assert torch.allclose(p1.grad, p2.grad, atol=1e-6, rtol=0)
    markets = MarketClassifier().classify_market(returns)
    assert markets.tolist() == [reference_classify_market(r) for r in returns]
    assert len(set(markets.tolist())) == 3                       # the batch exercises every benchmark


def test_loss_parts_and_the_seed_shape():
    positions, returns = random_batch(5, batch=8)
    loss = StrategyLoss(cost_bps=0)
    parts = loss.components(positions, returns)
    beta = parts['benchmark_position']
    assert set(beta.tolist()) <= {0.0, 0.5, 1.0}
    bench = loss.components(beta[:, None].expand_as(returns), returns)          # copying the benchmark, free of costs
    assert torch.allclose(bench['relative_return'], torch.zeros(8, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(bench['opportunity_cost'], torch.zeros(8, dtype=torch.float64))
    assert torch.allclose(loss(positions[..., None], returns), loss(positions, returns))   # [batch, days, 1] accepted
    cash = loss.components(torch.zeros_like(returns), returns)
    assert torch.allclose(cash['opportunity_cost'], (beta[:, None] * returns.clamp(min=0)).sum(-1))


def test_strategy_returns_charge_costs_on_every_change():
    p = torch.tensor([[0.0, 1.0, 1.0, 0.5], [1.0, 1.0, 0.0, 0.0]])
    r = torch.tensor([[0.01, 0.02, -0.01, 0.03], [0.01, -0.02, 0.05, 0.0]])
    out = strategy_returns(p, r, cost_bps=20, initial_position=torch.tensor([0.0, 1.0]))
    assert torch.allclose(out, torch.tensor([[0.0, 0.018, -0.01, 0.014], [0.01, -0.02, -0.002, 0.0]]))


# --- the market classifier ------------------------------------------------------------------------------------

def test_market_classifier_on_synthetic_bull_bear_and_sideways_windows():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, (500, 20))
    noise -= noise.mean(1, keepdims=True)                                  # mean exactly zero
    c = MarketClassifier()
    sideways = c.classify_market(torch.tensor(noise))
    bull = c.classify_market(torch.tensor(noise + 0.008))
    bear = c.classify_market(torch.tensor(noise - 0.008))
    assert (sideways == SIDEWAYS).all()
    assert (bull == BULL).float().mean() > 0.95 and (bull != BEAR).all()
    assert (bear == BEAR).float().mean() > 0.95 and (bear != BULL).all()
    steady = torch.full((1, 20), 0.004)                                    # a clean trend: every voter agrees
    assert c.classify_market(steady).item() == BULL and c.classify_market(-steady).item() == BEAR
    assert c.classify_market(torch.full((20,), 0.004)).shape == ()        # one window in, one label out


def test_adaptive_classifier_scales_with_volatility_and_the_vote_needs_two():
    c = MarketClassifier()
    # small drift, tiny noise: a trend by t-statistic only
    quiet = torch.tensor([[0.0005, 0.0006, 0.0004, 0.0005] * 5])
    assert c._simple_classifier(quiet.mean(-1)).item() == SIDEWAYS
    assert c._adaptive_classifier(quiet).item() == BULL
    wild = torch.tensor([[0.06, -0.05] * 10])                              # mean 0.5% a day, but noise dwarfs it
    assert c._simple_classifier(wild.mean(-1)).item() == BULL and c._adaptive_classifier(wild).item() == SIDEWAYS
    votes = torch.tensor([[a, b, d] for a in range(3) for b in range(3) for d in range(3)])
    expected = [next((m for m in range(3) if list(v).count(m) >= 2), SIDEWAYS) for v in votes.tolist()]
    assert c._majority_vote(votes).tolist() == expected


# --- the head and the network -----------------------------------------------------------------------------------

def test_straight_through_sample_is_one_hot_forward_with_a_gradient():
    torch.manual_seed(0)
    head = GumbelSoftmaxPositionHead(6).train()
    x = torch.randn(32, 6)
    out = head(x, temperature=0.5, hard=True)
    y = out['sample'].detach()
    assert torch.equal(y.sum(-1), torch.ones(32)) and ((y == 0) | (y == 1)).all()
    assert torch.equal(out['positions'].detach(), y.argmax(-1).float())
    (out['positions'] * torch.linspace(-1, 1, 32)).sum().backward()
    assert head.linear.weight.grad.abs().sum() > 0
    soft = head(x, temperature=0.5, hard=False)['sample'].detach()
    assert ((soft > 0) & (soft < 1)).all()                                 # without hard: a point inside the simplex
    head.eval()
    a, b = head(x), head(x)
    assert torch.equal(a['positions'], b['positions']) and torch.equal(a['positions'], a['logits'].argmax(-1).float())


def _day_logits(network, features, **kw):
    "Run `network` and capture the head's logits of every day."
    captured = []
    hook = network.head.register_forward_hook(lambda module, args, out: captured.append(out['logits']))
    try: out = network(features, **kw)
    finally: hook.remove()
    return out, captured


class DetachedFeedback(GRUStrategyNetwork):
    "The bug to avoid: yesterday's position enters the GRU without its gradient."
    def step(self, features, previous_position, state, *args, **kw):
        return super().step(features, previous_position.detach(), state, *args, **kw)


@pytest.mark.parametrize('hard', [True, False])
def test_the_last_days_loss_reaches_the_first_days_decision(hard):
    torch.manual_seed(1)
    features, returns = torch.randn(8, 20, 12), 0.02 * torch.randn(8, 20)
    net = GRUStrategyNetwork(12, hidden_size=16, dropout=0.0).train()
    out, logits = _day_logits(net, features, temperature=1.0, hard=hard)
    last_day_loss = -(out['positions'][:, -1] * returns[:, -1]).sum()
    # day 1's logits reach day 20 only through the fed-back positions
    grad = torch.autograd.grad(last_day_loss, logits[0])[0]
    assert grad.abs().sum() > 0
    broken = DetachedFeedback(12, hidden_size=16, dropout=0.0).train()
    broken.load_state_dict(net.state_dict())
    out, logits = _day_logits(broken, features, temperature=1.0, hard=hard)
    grad = torch.autograd.grad(-(out['positions'][:, -1] * returns[:, -1]).sum(), logits[0], allow_unused=True)[0]
    assert grad is None or grad.abs().sum() == 0


def test_network_shapes_positions_and_eval_is_deterministic():
    torch.manual_seed(2)
    net = GRUStrategyNetwork(5, hidden_size=8)
    x = torch.randn(3, 20, 5)
    out = net.train()(x, temperature=0.3, hard=True)
    assert out['positions'].shape == (3, 20) and out['logits'].shape == (3, 20, 11)
    tenths = out['positions'].detach() * 10
    assert torch.equal(tenths, tenths.round()) and tenths.min() >= 0 and tenths.max() <= 10
    net.eval()
    with torch.no_grad(): assert torch.equal(net(x)['positions'], net(x)['positions'])


def test_temperature_schedule():
    taus = [temperature_schedule(e, 10, 2.0, 0.1) for e in range(10)]
    assert taus[0] == 2.0 and abs(taus[-1] - 0.1) < 1e-12 and all(a > b for a, b in zip(taus, taus[1:]))
    assert temperature_schedule(0, 1, 2.0, 0.1) == 2.0
    with pytest.raises(ValueError): temperature_schedule(0, 5, 0.0, 0.1)


# --- stage 1 features and the two-stage run ------------------------------------------------------------------------

TINY = '{"d_model": 16, "n_layers": 1, "n_heads": 2, "ffn_dim": 32}'


def recomputing(*args, **kwargs):
    raise RuntimeError('stage-1 features recomputed although cached')


@pytest.fixture(scope='module')
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('out')


@pytest.fixture(scope='module')
def stage1(out_dir):
    "A finished price-transformer run on two stocks."
    return run_training(model='enhanced_transformer', symbols='600519,000001', epochs=1, seq_len=30,
                        start_date='2016-01-01',
                        model_kwargs=TINY, out_dir=str(out_dir), progress=False, run_name='stage1')


def test_features_match_the_runs_own_windows_and_are_cached(stage1, out_dir, monkeypatch):
    frame = extract_features('stage1', '600519.SH', output_dir=out_dir)
    assert frame.shape[1] == 16 and frame.index.names == ['symbol', 'trade_date']
    assert frame.index.is_monotonic_increasing
    # the stage-1 dataset's test windows, through the feature head, give the same rows
    b = stage1.bundle
    idx = b.sample_index('test')
    engine = load_stage1('stage1', output_dir=out_dir)
    sel = np.flatnonzero(idx.symbol.to_numpy() == '600519.SH')[::40]
    x = torch.stack([b.test[i][0] for i in sel])
    with torch.no_grad(): direct = StrategyFeatureHead(engine.model).eval()(x).numpy()
    assert np.allclose(direct, frame.loc[[('600519.SH', d) for d in idx.date.iloc[sel]]].to_numpy(), atol=1e-5)
    # a second call reads the cache and never recomputes
    monkeypatch.setattr(two_stage, 'compute_stage1_features', recomputing)
    again = extract_features('stage1', ['600519.SH'], output_dir=out_dir)
    pd.testing.assert_frame_equal(again, frame)
    sidecar = next((stage1.manager.run_dir / 'features').glob('pooled-*.json'))
    key = json.loads(sidecar.read_text())
    assert key['symbols'] == ['600519.SH'] and key['stage1_run'] == 'stage1' and key['rows'] == len(frame)
    assert feature_cache_path(stage1.manager,
                              {k: v for k, v in key.items() if k not in ('rows', 'd')}) == sidecar.with_suffix('.npz')
    with pytest.raises(RuntimeError, match='recomputed'):                # another range is another key
        extract_features('stage1', '600519.SH', start='2020-01-01', output_dir=out_dir)


def test_feature_kinds_and_date_ranges(stage1, out_dir):
    h = extract_features('stage1', '000001.SZ', start='2021-01-04', end='2021-03-31', kind='head_hidden',
                         output_dir=out_dir)
    p = extract_features('stage1', '000001.SZ', start='2021-01-04', end='2021-03-31', kind='pooled_price',
                         output_dir=out_dir)
    assert h.shape[1] == 16 and p.shape[1] == 16 + 7 and len(h) == len(p)
    dates = h.index.get_level_values(1)
    assert dates.min() >= pd.Timestamp('2021-01-04') and dates.max() <= pd.Timestamp('2021-03-31') and len(h) > 50
    # pooled_price ends with the price head's predictions: the run's own test predictions on those days
    rec = json.loads((stage1.manager.run_dir / 'results' / 'predictions.json').read_text())
    pred = {(s, d): v for s, d, v in zip(rec['symbols'], rec['dates'], rec['predictions'])}
    days = [d for d in dates if ('000001.SZ', f'{d:%Y-%m-%d}') in pred]
    assert days
    got = p.loc[[('000001.SZ', d) for d in days]].to_numpy()[:, -7:]
    assert np.allclose(got, [pred[('000001.SZ', f'{d:%Y-%m-%d}')] for d in days], atol=1e-5)
    with pytest.raises(ValueError, match='feature kind'): extract_features('stage1', kind='attention',
                                                                           output_dir=out_dir)


def test_run_two_stage_reusing_a_stage1_run(stage1, out_dir, monkeypatch):
    extract_features('stage1', ['000001', '600519'], output_dir=out_dir)  # warm the cache run_two_stage will use
    monkeypatch.setattr(two_stage, 'compute_stage1_features', recomputing)
    runs_before = {m['run_name'] for m in TrainingManager.list_runs(out_dir)}
    two = run_two_stage(stage1_run='stage1', symbols='', out_dir=str(out_dir), strategy_epochs=2, window_days=10,
                        hidden_size=8, run_name='strategy', seed=3)
    runs_after = {m['run_name'] for m in TrainingManager.list_runs(out_dir)}
    assert runs_after - runs_before == {'strategy'}                        # no new stage-1 run
    m = two.manager
    d = m.run_dir
    for rel in ['config.json', 'model/pytorch_model.bin', 'model/config.json', 'model/training_args.json',
                'checkpoints/best/pytorch_model.bin',
                'checkpoints/checkpoint-2/pytorch_model.bin', 'logs/metrics.json', 'results/backtest.json',
                'results/eval_results.json',
                'plots/backtest.png', 'plots/backtest_600519.SH.png', 'plots/backtest_000001.SZ.png',
                'plots/loss_curves.png']:
        assert (d / rel).is_file(), rel
    assert m.metadata['status'] == 'completed' and m.metadata['model_type'] == 'strategy_gru'
    config = m.load_config()
    assert config['stage1_run'] == 'stage1' and config['stage1_model'] == 'enhanced_transformer'
    assert sorted(config['symbols']) == ['000001.SZ', '600519.SH']
    # train and validation windows never reach the test split; the backtest covers exactly its days
    data, split = two.data, two.data.split
    test_start = np.datetime64(split.test_start, 'ns')
    for seg, limit in (('train', np.datetime64(split.val_start, 'ns')), ('val', test_start)):
        ends = data.window_ends(seg)
        assert len(ends) > 0
        # next-day returns included
        assert (data.dates[ends + 1] < limit).all() and (data.symbols[ends + 1] == data.symbols[ends]).all()
    assert (data.dates[data.window_ends('val') - 9] >= np.datetime64(split.val_start, 'ns')).all()
    bt = json.loads((d / 'results' / 'backtest.json').read_text())
    assert min(bt['daily']['dates']) >= f'{split.test_start:%Y-%m-%d}' and bt['stage1_run'] == 'stage1'
    assert len(bt['daily']['dates']) == int(data.test_day.sum()) == len(two.backtest.daily)
    assert set(bt['by_symbol']) == {'000001.SZ', '600519.SH'}
    # the saved network reproduces the backtest's positions
    network, mc = load_strategy_network('strategy', out_dir)
    assert mc['stage1_run'] == 'stage1' and mc['d_features'] == 16
    assert np.array_equal(strategy_positions(network, data),
                          two.backtest.daily.sort_values(['symbol', 'date']).position.to_numpy(np.float32))


def test_run_two_stage_trains_its_own_stage1(tmp_path):
    two = run_two_stage(symbols='600519.SH', out_dir=str(tmp_path), seq_len=30, epochs=1, start_date='2017-01-01',
                        model_kwargs=TINY, strategy_epochs=2, hidden_size=8, feature_kind='pooled_price', seed=0)
    assert two.stage1.metadata['model_type'] == 'enhanced_transformer' and two.stage1.metadata['status'] == 'completed'
    assert two.manager.load_config()['stage1_run'] == two.stage1.run_name
    assert two.data.features.shape[1] == 16 + 7
    assert list((two.stage1.run_dir / 'features').glob('pooled_price-*.npz'))
    m = two.backtest.metrics
    assert set(m) >= {'annualised_return', 'sharpe', 'max_drawdown', 'turnover', 'hit_rate', 'excess_return',
                      'buy_and_hold'}
    assert abs(m['excess_return'] - (m['annualised_return'] - m['buy_and_hold']['annualised_return'])) < 1e-12


def test_two_stage_params_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match='unknown parameter'): TwoStageParams.from_dict({'epoch': 3})
    with pytest.raises(ValueError, match='feature_kind'): TwoStageParams(feature_kind='all')
    with pytest.raises(ValueError, match='window_days'): TwoStageParams(window_days=1)
    with pytest.raises(ValueError, match='model='): TwoStageParams(model='nope')
    p = TwoStageParams.from_dict({'epochs': '3', 'hard': 'false', 'symbols': [600519, 1]})
    assert p.epochs == 3 and p.hard is False and p.symbols == '600519,000001'
    run_training(model='lstm', task='classification', symbols='600519', epochs=1, seq_len=20, start_date='2019-01-01',
                 model_kwargs='{"hidden_size": 8, "num_layers": 1}', out_dir=str(tmp_path), progress=False,
                 run_name='clf')
    with pytest.raises(ValueError, match='not a regression'): run_two_stage(stage1_run='clf', out_dir=str(tmp_path))
    assert [m['run_name'] for m in TrainingManager.list_runs(tmp_path)] == ['clf']   # nothing was created
