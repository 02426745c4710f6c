"""Evaluation: confidence intervals, too-small test sets, baselines that mean something, the best baseline, plots."""
import json, math
from itertools import combinations

import matplotlib
matplotlib.use('agg')
import numpy as np
import pytest

from quantnb.data.datasets import load_datasets
from quantnb.train.evaluate import (best_baselines, correlation_confidence, direction_confusion, evaluate_predictions,
                                    metrics_table, plot_predictions, predictions_record, proportion_confidence)

TINY = '{"hidden_size": 8, "num_layers": 1}'


@pytest.fixture(scope='module')
def bundle():
    return load_datasets('600519.SH', seq_len=30, horizon=5)


@pytest.fixture(scope='module')
def small():
    return load_datasets('600519.SH', seq_len=30, horizon=5, start_date='2020-06-01', end_date='2021-06-30')


def noise(b, seed=0):
    return np.random.default_rng(seed).normal(0, 0.01, (len(b.test), b.horizon))


def test_intervals_match_the_textbook_formulas():
    c = correlation_confidence(0.3, 103)
    assert c['t'] == pytest.approx(0.3 * math.sqrt(101 / 0.91))
    z, half = math.atanh(0.3), 1.959964 / 10
    assert c['ci95'] == pytest.approx([math.tanh(z - half), math.tanh(z + half)])
    assert correlation_confidence(0.3, 103, rank=True)['ci95'][0] < c['ci95'][0]        # Spearman's is wider
    assert proportion_confidence(0.55, 400)['z'] == pytest.approx(2.0)
    lo, hi = proportion_confidence(0.55, 400)['ci95']
    assert lo < 0.55 < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.55 * 0.45 / 400), rel=0.01)


def test_results_carry_intervals_and_the_table_shows_them(bundle):
    results = evaluate_predictions(bundle, noise(bundle))
    m, n = results['metrics'], results['test_samples']
    for name in ('ic', 'rank_ic', 'direction_accuracy'):
        lo, hi = m[f'{name}_ci95']
        assert lo < m[name] < hi
    assert m['ic_t'] == pytest.approx(correlation_confidence(m['ic'], n)['t'])
    table = metrics_table(results)
    assert table.loc['model', 'ic ±95%'] == pytest.approx((m['ic_ci95'][1] - m['ic_ci95'][0]) / 2)
    assert {'direction_accuracy ±95%', 'rank_ic ±95%'} <= set(table.columns) and table.dtypes.eq(float).all()
    assert results['warnings'] == []                      # 400+ samples: above the floor


def test_a_test_set_too_small_to_say_anything_is_flagged(small):
    results = evaluate_predictions(small, noise(small))
    assert results['test_samples'] < 100
    assert any(w.startswith(f'only {results["test_samples"]} test samples') for w in results['warnings'])
    lo, hi = results['metrics']['ic_ci95']
    assert hi - lo > 0.5                                    # and the interval says why


def test_classification_results_carry_an_accuracy_interval():
    b = load_datasets('600519.SH', seq_len=30, horizon=5, task='classification')
    logits = np.random.default_rng(0).normal(size=(len(b.test), 3))
    m = evaluate_predictions(b, logits)['metrics']
    assert m['accuracy_ci95'][0] < m['accuracy'] < m['accuracy_ci95'][1] and 'ic_t' in m
    assert 'accuracy_z' not in m                            # three classes: no coin flip to test against


def test_baselines_without_meaning_for_a_metric_are_left_out(bundle):
    results = evaluate_predictions(bundle, noise(bundle))
    base = results['baselines']
    assert set(base) == {'zero', 'persistence', 'train_mean'}
    assert not {'direction_accuracy', 'direction_accuracy_by_day', 'ic', 'rank_ic', 'ic_t'} & set(base['zero'])
    assert 'ic' not in base['train_mean'] and 'direction_accuracy' in base['train_mean']
    assert {'ic', 'rank_ic', 'direction_accuracy', 'mape'} <= set(base['persistence'])
    table = metrics_table(results)
    assert math.isnan(table.loc['baseline: zero', 'direction_accuracy'])
    assert not math.isnan(table.loc['model', 'direction_accuracy'])


def test_best_baselines_knows_which_way_is_better():
    results = {'task': 'regression', 'metrics': {'mae': 0.02, 'ic': 0.05, 'direction_accuracy': 0.51, 'r2': -0.01},
               'baselines': {'zero': {'mae': 0.015, 'r2': -0.002},
                             'persistence': {'mae': 0.03, 'ic': -0.01, 'direction_accuracy': 0.49, 'r2': -1.0},
                             'train_mean': {'mae': 0.016, 'direction_accuracy': 0.55, 'ic': float('nan'), 'r2': 0.0}}}
    best = best_baselines(results)
    assert best['mae'] == ('zero', 0.015, False)
    assert best['ic'] == ('persistence', -0.01, True)
    assert best['direction_accuracy'] == ('train_mean', 0.55, False)
    assert best['r2'] == ('train_mean', 0.0, False)
    assert set(best) == {'mae', 'ic', 'direction_accuracy', 'r2'}


def test_nan_outputs_are_refused(bundle):
    out = noise(bundle)
    out[3, 1] = np.nan
    with pytest.raises(FloatingPointError, match='NaN or inf for 1 of'):
        evaluate_predictions(bundle, out)


def _overlapping_labels(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labelled = [[t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
                for ax in fig.axes]
    assert max(map(len, labelled)) >= 2
    return any(a.overlaps(b) for boxes in labelled for a, b in combinations(boxes, 2))


def test_predictions_plot_every_stock_with_readable_dates():
    b = load_datasets(['600519.SH', '000001.SZ', '600036.SH'], seq_len=30, horizon=5)
    fig = plot_predictions(predictions_record(b, noise(b)))
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert {t.split(':')[0] for t in titles} == {'600519.SH', '000001.SZ', '600036.SH'}
    assert any('compounded' in t for t in titles) and not _overlapping_labels(fig)
    few = plot_predictions(predictions_record(b, noise(b)), max_symbols=1)
    assert len(few.axes) == 2 and few._suptitle.get_text().startswith('1 of 3 stocks shown')


@pytest.mark.parametrize('days', [5, 20, 40, 70, 250, 1200])
def test_date_labels_never_overlap_whatever_the_test_period(days):
    "A 40-day test period (a small dataset's) used to print seven full dates into each other."
    import pandas as pd
    dates = pd.bdate_range('2019-01-02', periods=days)
    record = {'dates': [f'{d:%Y-%m-%d}' for d in dates], 'symbols': ['600519.SH'] * days,
              'predictions': [[0.01]] * days, 'truths': [[0.02]] * days}
    assert not _overlapping_labels(plot_predictions(record))


def test_the_direction_confusion_is_the_metric_it_sits_beside(bundle):
    out = noise(bundle)
    confusion = direction_confusion(predictions_record(bundle, out))
    assert confusion.sum() == len(bundle.test) * bundle.horizon
    metric = evaluate_predictions(bundle, out)['metrics']['direction_accuracy']
    assert np.trace(confusion) / confusion.sum() == pytest.approx(metric)


def test_a_small_run_warns_in_its_log_its_output_and_its_results(tmp_path, capsys):
    from quantnb.train.pipeline import run_training
    run_training(model='gru', symbols='600519.SH', seq_len=30, epochs=1, start_date='2020-01-01', end_date='2021-06-30',
                 out_dir=str(tmp_path), run_name='small', progress=False, model_kwargs=TINY)
    run = tmp_path / 'small'
    results = json.loads((run / 'results' / 'eval_results.json').read_text())
    assert results['warnings'] and 'test samples (fewer than 100)' in results['warnings'][-1]
    assert 'WARNING: only' in (run / 'logs' / 'training.log').read_text()
    assert 'WARNING: only' in capsys.readouterr().out
