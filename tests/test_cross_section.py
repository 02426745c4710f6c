"""Cross-sectional studies on a universe: the ret_next label, date splits, label normalisation, signal analysis."""
import json

import numpy as np, pandas as pd
import pytest

from quantnb.data.universe import read_status, top_n_spells, universe_slice_files

SMALL = dict(model='gru', epochs=1, seq_len=20, horizon=3, model_kwargs='{"hidden_size": 8}', progress=False)


@pytest.fixture(scope='module')
def top10_db(tmp_path_factory):
    "The bundled universe slice in a fresh SQLite database, with its top-10 universe stored."
    from quantnb.data.importer import import_paths
    from quantnb.data.universe import save_universe
    url = f'sqlite:///{tmp_path_factory.mktemp("xsdb")}/universe.db'
    assert all(r.ok for r in import_paths(universe_slice_files(), url))
    spells = top_n_spells(read_status(universe_slice_files()), 10)
    save_universe(url, 'top10', spells)
    return url, spells


@pytest.fixture(scope='module')
def bars(top10_db):
    from quantnb.data.db import StockDataLoader
    loader = StockDataLoader(top10_db[0])
    return loader.load_many(sorted(top10_db[1]['symbol'].unique()))


def test_ret_next_is_the_return_from_the_next_close(top10_db, bars):
    "label=ret_next: one target, close[t+2]/close[t+1]-1 of the same stock, none in the last two bars, a 2-day gap."
    from quantnb.data.datasets import load_datasets
    b = load_datasets('top10', url=top10_db[0], seq_len=20, horizon=5, label='ret_next', cache=False)
    assert b.label == 'ret_next' and b.horizon == 1 and b.split.gap_days == 2
    for name in ('train', 'val', 'test'):
        ds = b.segment(name)
        ends = ds.ends.numpy()
        assert len(ends) and ds.targets.shape[1] == 1
        ok = b.symbol_codes[np.minimum(ends + 2, len(b.close) - 1)] == b.symbol_codes[ends]
        assert ok.all() and (ends + 2 < len(b.close)).all()   # the label's two bars are the same stock's
        want = b.close[ends + 2] / b.close[ends + 1] - 1
        np.testing.assert_allclose(ds.targets[ends, 0].numpy(), want, rtol=1e-5, atol=1e-7)
    # the samples' label ends stay inside their segment
    idx = b.sample_index('train')
    assert (idx.label_end < b.split.val_start).all()
    default = load_datasets('top10', url=top10_db[0], seq_len=20, horizon=5, cache=False)
    assert default.label == 'returns' and default.train.targets.shape[1] == 5 and default.split.gap_days == 5
    with pytest.raises(ValueError, match='label='):
        load_datasets('top10', url=top10_db[0], seq_len=20, label='fwd', cache=False)


def test_a_ret_next_run_is_recorded_and_predicts_ret_next(top10_db, tmp_path, one_torch_thread):
    "The label is a run parameter: in config.json, in the saved model, and in what a reloaded run predicts."
    from quantnb.predict import PredictionEngine
    from quantnb.train.pipeline import run_training
    url, spells = top10_db
    run = run_training(symbols='top10', db_url=url, out_dir=str(tmp_path), label='ret_next', **SMALL)
    m = run.manager
    config = m.load_config()
    assert config['params']['label'] == 'ret_next' and config['data']['label'] == 'ret_next'
    assert m.saved_model().label['target'] == 'ret_next' and m.saved_model().horizon == 1
    truths = json.loads((m.run_dir / 'results' / 'predictions.json').read_text())['truths']
    assert np.asarray(truths).shape[1] == 1
    engine = PredictionEngine(m.run_name, output_dir=str(tmp_path), url=url)
    out = engine.predict(sorted(spells['symbol'].unique())[:3])
    assert 'ret_next' in out.columns and not any(c.startswith('ret_1d') for c in out.columns)
    assert np.isfinite(out['ret_next']).all()


def test_date_splits_are_parameters(top10_db, tmp_path, one_torch_thread):
    "val_start / test_start give the split, recorded in config.json; dates out of order are refused before a run."
    from quantnb.train.pipeline import TrainParams, run_training
    url, _ = top10_db
    run = run_training(symbols='top10', db_url=url, out_dir=str(tmp_path), start_date='2019-06-01',
                       val_start='2020-09-01', test_start='2021-03-01', **SMALL)
    config = run.manager.load_config()
    assert config['params']['val_start'] == '2020-09-01' and config['params']['test_start'] == '2021-03-01'
    split = config['data']['split']
    assert split['val_start'] == '2020-09-01' and split['test_start'] == '2021-03-01'
    segments = config['data']['segments']
    assert segments['train']['last_date'] < '2020-09-01' <= segments['val']['first_date']
    assert segments['val']['last_date'] < '2021-03-01' <= segments['test']['first_date']
    assert segments['train']['first_date'] >= '2019-06-01'
    for bad, match in [(dict(val_start='2021-03-01', test_start='2020-09-01'), 'val_start=2021-03-01 must be before'),
                       (dict(start_date='2020-10-01', val_start='2020-09-01'), 'start_date=2020-10-01 must be before'),
                       (dict(test_start='2021-06-01', end_date='2021-05-01'), 'test_start=2021-06-01 must be before'),
                       (dict(val_start='2020-13-01'), 'not a date')]:
        with pytest.raises(ValueError, match=match):
            TrainParams(symbols='top10', **bad)


def test_label_norm_ranks_the_fitting_targets_per_day(top10_db, tmp_path, one_torch_thread):
    "label_norm=cs_rank: training and validation targets are per-day ranks of the day's members; test stays raw."
    from quantnb.data.datasets import load_datasets
    from quantnb.train.pipeline import TrainParams, run_training
    url, spells = top10_db
    kw = dict(url=url, seq_len=20, label='ret_next', cache=False)
    raw, ranked = load_datasets('top10', **kw), load_datasets('top10', label_norm='cs_rank', **kw)
    for name in ('train', 'val'):
        ends = ranked.segment(name).ends.numpy()
        frame = pd.DataFrame({'day': ranked.dates[ends], 'raw': raw.segment(name).targets[ends, 0].numpy(),
                              'rank': ranked.segment(name).targets[ends, 0].numpy()})
        assert frame['rank'].between(-0.5, 0.5).all()
        big = frame.groupby('day').filter(lambda g: len(g) >= 5)
        assert len(big) and big.groupby('day')['rank'].mean().abs().max() < 1e-6   # centred each day
        by_day = big.groupby('day')[['raw', 'rank']].corr(method='spearman').xs('raw', level=1)['rank']
        assert (by_day > 0.999).all()   # the order within the day is the returns' order
    ends = ranked.test.ends.numpy()
    np.testing.assert_array_equal(ranked.test.targets[ends].numpy(), raw.test.targets[ends].numpy())
    run = run_training(symbols='top10', db_url=url, out_dir=str(tmp_path), label='ret_next', label_norm='cs_zscore',
                       **SMALL)
    m = run.manager
    config = m.load_config()
    assert config['params']['label_norm'] == 'cs_zscore' and config['data']['label_norm'] == 'cs_zscore'
    assert m.saved_model().label['norm'] == 'cs_zscore'
    with pytest.raises(ValueError, match='label_norm'):
        TrainParams(symbols='top10', task='classification', label_norm='cs_rank')


def test_a_universe_run_gets_a_signal_analysis(top10_db, tmp_path, one_torch_thread, capsys):
    "A run over a universe: signal_analysis.json (model and baseline factors), the IC plots, ic/icir in runs list."
    from quantnb.cli import runs_list
    from quantnb.train.pipeline import realised_ret_next, run_training
    from quantnb.train.runs import runs_table
    url, _ = top10_db
    run = run_training(symbols='top10', db_url=url, out_dir=str(tmp_path), label='ret_next', label_norm='cs_rank',
                       **SMALL)
    m = run.manager
    summary = json.loads((m.run_dir / 'results' / 'signal_analysis.json').read_text())
    assert set(summary['signals']) == {'model', 'reversal_20', 'momentum_20', 'volatility_20'}
    assert summary['first_date'] >= run.bundle.split.test_start.strftime('%Y-%m-%d')
    for name in ('ic.png', 'quantiles.png'): assert (m.run_dir / 'plots' / name).stat().st_size > 0
    assert (m.run_dir / 'results' / 'signal_daily.parquet').exists()
    # the realised returns are the bars' ret_next, the same numbers as the test targets
    preds = pd.read_parquet(m.run_dir / 'results' / 'signal_predictions.parquet')
    preds = preds.set_index(['trade_date', 'instrument'])
    record = json.loads((m.run_dir / 'results' / 'predictions.json').read_text())
    truth = pd.Series(np.asarray(record['truths'])[:, 0],
                      pd.MultiIndex.from_arrays([pd.DatetimeIndex(record['dates']), record['symbols']]))
    np.testing.assert_allclose(preds['return'].to_numpy(), truth.reindex(preds.index).to_numpy(),
                               rtol=1e-4, atol=1e-6)
    close = pd.Series([10.0, 11.0, 12.1, 13.31], pd.MultiIndex.from_product(
        [pd.bdate_range('2021-01-04', periods=4), ['A']], names=['trade_date', 'instrument']))
    np.testing.assert_allclose(realised_ret_next(close).to_numpy()[:2], [0.1, 0.1])
    assert np.isnan(realised_ret_next(close).to_numpy()[2:]).all()
    s = summary['signals']['model']
    assert m.metadata['signal_metrics'] == {'ic': s['ic_mean'], 'icir': s['icir'], 'rank_ic': s['rank_ic_mean'],
                                            'rank_icir': s['rank_icir']}
    row = runs_table(tmp_path).set_index('run_name').loc[m.run_name]
    assert row['icir'] == pytest.approx(s['icir']) and row['ic'] == pytest.approx(s['ic_mean'])
    runs_list(str(tmp_path))
    assert 'icir' in capsys.readouterr().out
