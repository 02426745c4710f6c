"""Backtest arithmetic checked by hand, portfolio rules, MLStrategy, and backtest_run on a finished classification
run."""
import json, math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from quantnb.data.db import StockDataLoader
from quantnb.strategy.backtest import MLStrategy, backtest, backtest_run, next_day_returns_for, performance_metrics
from quantnb.train.pipeline import run_training


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def five_days(symbol='600519.SH', positions=(0, 1, 1, 0.5, 0), returns=(0.01, 0.02, -0.01, 0.03, -0.02),
              start='2021-01-04'):
    return pd.DataFrame({'symbol': symbol, 'date': pd.bdate_range(start, periods=len(positions)),
                         'position': positions, 'next_return': returns})


def test_five_days_by_hand_with_costs():
    # costs 10 bps per unit of change; positions 0, 1, 1, 0.5, 0 starting from cash
    #   changes 0, 1, 0, 0.5, 0.5 -> costs 0, 0.001, 0, 0.0005, 0.0005
    #   daily   0, 0.02 - 0.001 = 0.019, -0.01, 0.015 - 0.0005 = 0.0145, 0 - 0.0005 = -0.0005
    #   equity  1, 1.019, 1.00881, 1.023437745, 1.0229260261275
    res = backtest(five_days(), cost_bps=10)
    d = res.daily
    assert np.allclose(d.cost, [0, 0.001, 0, 0.0005, 0.0005], atol=1e-15)
    assert np.allclose(d.strategy_return, [0, 0.019, -0.01, 0.0145, -0.0005], atol=1e-15)
    assert np.allclose(d.equity, [1, 1.019, 1.00881, 1.023437745, 1.0229260261275], atol=1e-12)
    m = res.metrics
    assert m['days'] == 5
    assert abs(m['total_return'] - 0.0229260261275) < 1e-12
    assert abs(m['annualised_return'] - (1.0229260261275 ** (252 / 5) - 1)) < 1e-9
    # mean 0.023 / 5 = 0.0046;
    # squared deviations 0.00002116 + 0.00020736 + 0.00021316 + 0.00009801 + 0.00002601 = 0.0005657
    std = math.sqrt(0.0005657 / 4)
    assert abs(m['volatility'] - std * math.sqrt(252)) < 1e-12
    assert abs(m['sharpe'] - 0.0046 / std * math.sqrt(252)) < 1e-9
    assert abs(m['max_drawdown'] - 0.01) < 1e-12                       # 1.019 -> 1.00881
    assert abs(m['turnover'] - 2 * 252 / 5) < 1e-9                      # 2 units traded in 5 days, per year
    assert abs(m['hit_rate'] - 2 / 3) < 1e-12                           # invested on 3 days, 2 of them gained
    assert abs(m['exposure'] - 0.5) < 1e-12
    # buy and hold: enters once (0.001), then rides: 0.009, 0.02, -0.01, 0.03, -0.02
    #   equity 1.009, 1.02918, 1.0188882, 1.049454846, 1.02846574908
    bh = m['buy_and_hold']
    assert abs(bh['total_return'] - 0.02846574908) < 1e-12
    assert abs(bh['max_drawdown'] - 0.02) < 1e-12                       # 1.049454846 -> 1.02846574908
    assert abs(m['excess_total_return'] - (0.0229260261275 - 0.02846574908)) < 1e-12
    assert abs(m['excess_return'] - (m['annualised_return'] - bh['annualised_return'])) < 1e-15


def test_without_costs_and_always_invested_the_strategy_is_buy_and_hold():
    res = backtest(five_days(positions=(1, 1, 1, 1, 1)), cost_bps=25)
    assert res.metrics['excess_return'] == 0 and res.metrics['turnover'] == pytest.approx(252 / 5)
    cash = backtest(five_days(positions=(0, 0, 0, 0, 0)), cost_bps=25).metrics
    assert cash['total_return'] == 0 and cash['max_drawdown'] == 0 and cash['turnover'] == 0
    assert math.isnan(cash['hit_rate'])
    free = backtest(five_days(), cost_bps=0).metrics
    assert free['total_return'] == pytest.approx(1.02 * 0.99 * 1.015 * 1.0 - 1, abs=1e-12)


def test_portfolio_is_the_equal_weight_mean_of_the_stocks_on_each_day():
    a = five_days('600519.SH')
    # starts a day later
    b = five_days('000001.SZ', positions=(1, 1, 0, 0), returns=(0.03, -0.01, 0.02, 0.01), start='2021-01-05')
    res = backtest(pd.concat([b, a]), cost_bps=10)
    assert sorted(res.by_symbol) == ['000001.SZ', '600519.SH']
    port = res.portfolio
    first = port.loc[pd.Timestamp('2021-01-04')]
    assert first.strategy_return == pytest.approx(0.0)                          # only 600519 traded that day
    second = port.loc[pd.Timestamp('2021-01-05')]
    assert second.strategy_return == pytest.approx((0.019 + 0.03 - 0.001) / 2)
    assert res.metrics['total_return'] == pytest.approx(port.equity.iloc[-1] - 1)
    turnovers = res.by_symbol['600519.SH']['turnover'], res.by_symbol['000001.SZ']['turnover']
    assert res.metrics['turnover'] == pytest.approx(sum(turnovers) / 2)
    # each stock priced alone
    assert res.by_symbol['600519.SH']['total_return'] == pytest.approx(0.0229260261275, abs=1e-12)
    table = res.table()
    assert list(table.index) == ['000001.SZ', '600519.SH', 'portfolio']
    # strict JSON, no NaN
    assert json.loads(json.dumps(res.to_dict(), allow_nan=False))['symbols'] == ['000001.SZ', '600519.SH']


@pytest.mark.parametrize('bad, message', [
    (dict(position=[0, 1.5, 1, 0, 0]), '0..1'),
    (dict(position=[0, -0.1, 1, 0, 0]), '0..1'),
    (dict(next_return=[0.01, np.nan, 0, 0, 0]), 'finite'),
])
def test_bad_frames_are_refused(bad, message):
    frame = five_days()
    for k, v in bad.items(): frame[k] = v
    with pytest.raises(ValueError, match=message): backtest(frame)
    with pytest.raises(ValueError, match='one row'): backtest(pd.concat([five_days(), five_days()]))
    with pytest.raises(ValueError, match='columns'): backtest(five_days().drop(columns='next_return'))


def test_performance_metrics_of_a_known_drawdown():
    m = performance_metrics([0.1, -0.5, 0.2, 1.0])             # 1.1, 0.55, 0.66, 1.32
    assert m['max_drawdown'] == pytest.approx(0.5) and m['total_return'] == pytest.approx(0.32)


# --- MLStrategy ---------------------------------------------------------------------------------------------

class FixedLogits(nn.Module):
    "A 'classifier' whose logits are the last step's first three inputs."
    def forward(self, x): return x[:, -1, :3]


def test_ml_strategy_thresholds_p_up():
    probs = np.array([[0.1, 0.25, 0.65], [0.2, 0.2, 0.6], [0.0, 0.0, 1.0], [0.7, 0.1, 0.2]])
    assert MLStrategy(probs).positions().tolist() == [1.0, 0.0, 1.0, 0.0]
    assert MLStrategy(probs, confidence_threshold=0.6).positions().tolist() == [1.0, 1.0, 1.0, 0.0]
    # p(up) 0.787, 0.576, 0.982, 0.212
    logits = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [5.0, 0.0, 9.0], [1.0, 0.0, 0.0]])
    assert MLStrategy.from_logits(logits).positions().tolist() == [1.0, 0.0, 1.0, 0.0]
    x = torch.tensor(logits, dtype=torch.float32)[:, None, :].repeat(1, 5, 1)                   # [n, seq_len, 3]
    model_strategy = MLStrategy(FixedLogits())
    assert model_strategy.positions(x).tolist() == [1.0, 0.0, 1.0, 0.0]
    class Seed002Model:
        def predict_proba(self, x): return probs[: len(x)]
    assert MLStrategy(Seed002Model()).positions(np.zeros((2, 5, 3))).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match='sum to 1'): MLStrategy(np.array([[0.5, 0.5, 0.5]]))
    with pytest.raises(ValueError, match='confidence_threshold'): MLStrategy(probs, confidence_threshold=0)


# --- backtest_run on a finished classification run --------------------------------------------------------------

SMALL_RNN = '{"hidden_size": 16, "num_layers": 1}'


@pytest.fixture(scope='module')
def classification_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('out')
    return run_training(model='lstm', task='classification', symbols='600519,000001', epochs=1, seq_len=20,
                        start_date='2018-01-01',
                        model_kwargs=SMALL_RNN, out_dir=str(out), progress=False, run_name='clf'), out


def test_backtest_run_trades_the_test_predictions_and_saves_into_the_run(classification_run):
    run, out = classification_run
    rec = run.record
    res = backtest_run('clf', output_dir=out)
    d = run.manager.run_dir
    saved = json.loads((d / 'results' / 'backtest.json').read_text())
    assert saved['strategy'] == 'MLStrategy' and saved['confidence_threshold'] == 0.65 and saved['segment'] == 'test'
    assert (d / 'plots' / 'backtest.png').is_file() and (d / 'plots' / 'backtest_600519.SH.png').is_file()
    # every test prediction is one backtest day, and nothing else
    days = sorted(zip(rec['symbols'], rec['dates']))
    assert sorted(zip(saved['daily']['symbols'], saved['daily']['dates'])) == days
    assert min(saved['daily']['dates']) >= f'{run.bundle.split.test_start:%Y-%m-%d}'
    expected = MLStrategy.from_logits(rec['predictions']).positions()
    order = np.lexsort((np.array(rec['dates']), np.array(rec['symbols'])))
    assert np.array_equal(res.daily.position.to_numpy(), expected[order])
    # with a threshold every prediction clears, the strategy is buy-and-hold on exactly these days
    always = backtest_run('clf', output_dir=out, confidence_threshold=1e-9, name='always')
    assert always.metrics['exposure'] == 1 and abs(always.metrics['excess_return']) < 1e-12
    bars = StockDataLoader().load_many(['600519.SH'], start_date=rec['dates'][0], adjust='qfq').close.droplevel(0)
    sym_rows = always.daily[always.daily.symbol == '600519.SH']
    realised = bars.shift(-1).reindex(sym_rows.date) / bars.reindex(sym_rows.date) - 1
    assert np.allclose(sym_rows.next_return.to_numpy(), realised.to_numpy(), atol=1e-12)
    assert (d / 'results' / 'always.json').is_file()


def test_backtest_run_refuses_a_regression_run(tmp_path):
    run_training(model='gru', symbols='600519', epochs=1, seq_len=20, start_date='2019-01-01', model_kwargs=SMALL_RNN,
                 out_dir=str(tmp_path), progress=False, run_name='reg')
    with pytest.raises(ValueError, match='regression run'): backtest_run('reg', output_dir=tmp_path)


def test_next_day_returns_for_uses_the_next_trading_day():
    bars = StockDataLoader().load_kline_data('600519.SH', '2021-01-04', '2021-01-12')
    r = next_day_returns_for(['600519.SH', '600519.SH'], [bars.index[0], bars.index[3]])
    assert r[0] == pytest.approx(bars.close.iloc[1] / bars.close.iloc[0] - 1, abs=1e-12)
    assert r[1] == pytest.approx(bars.close.iloc[4] / bars.close.iloc[3] - 1, abs=1e-12)
    last = StockDataLoader().summary().loc['600519.SH', 'last_date']
    assert np.isnan(next_day_returns_for(['600519.SH'], [last])[0])


def test_a_strategy_that_never_trades_says_why_sharpe_is_undefined(tmp_path):
    "Zero trades: Sharpe is NaN in memory, null in strict JSON, and a note says why, per stock and for the portfolio."
    from quantnb.strategy.backtest import save_backtest, strategy_metrics_table
    from quantnb.train.runs import TrainingManager
    flat = pd.concat([five_days('600519.SH', positions=(0,) * 5), five_days('000001.SZ', positions=(0,) * 5)])
    res = backtest(flat, cost_bps=10)
    for m in [res.metrics, *res.by_symbol.values()]:
        assert math.isnan(m['sharpe']) and m['note'].startswith('no trades: the position was 0 on all 5 days')
    assert 'note' not in res.metrics['buy_and_hold']          # buy-and-hold's returns vary: its Sharpe is a number
    text = json.dumps(res.to_dict(), allow_nan=False)          # strict JSON
    assert json.loads(text)['metrics']['sharpe'] is None
    assert json.loads(text)['metrics']['note'] == res.metrics['note']
    manager = TrainingManager('600519.SH', 'test', tmp_path)
    save_backtest(manager, res)
    saved = json.loads((manager.run_dir / 'results' / 'backtest.json').read_text(), parse_constant=pytest.fail)
    assert saved['metrics']['note'] == res.metrics['note']
    assert 'WARNING: backtest backtest: no trades' in (manager.run_dir / 'logs' / 'training.log').read_text()
    table = strategy_metrics_table({'metrics': res.metrics, 'buy_and_hold': res.metrics['buy_and_hold']})
    assert math.isnan(table.loc['strategy', 'sharpe']) and table.loc['buy_and_hold', 'sharpe'] > 0
    from quantnb.strategy.backtest import plot_backtest
    legend = [t.get_text() for t in plot_backtest(res, '600519.SH').axes[0].get_legend().get_texts()]
    assert legend[0].startswith('strategy (Sharpe undefined: no trades')
    one_day = performance_metrics([0.01], [1.0])
    assert one_day['note'] == 'one day: Sharpe needs at least two daily returns'
    assert 'note' not in performance_metrics([0.01, -0.02], [1, 1])
