"""Point-in-time universes: the top-N rule's edge cases, no look-ahead, spells, membership files and their errors."""
from pathlib import Path
import numpy as np, pandas as pd
import pytest
import sqlalchemy as sa

from quantnb.data.universe import (members_on, membership_spells, read_membership_file, read_status, top_n_members,
                                   top_n_spells, universe_slice_files)


def days(n, start='2021-01-04'):
    return pd.bdate_range(start, periods=n)


def toy(rows):
    "A status frame from (symbol, name, cap, n_days, first_day_index) with business days as the calendar."
    cal = days(40)
    out = [(sym, d, name, cap) for sym, name, cap, n, first in rows for d in cal[first:first + n]]
    return pd.DataFrame(out, columns=['symbol', 'trade_date', 'name', 'float_market_cap']), cal


@pytest.fixture(scope='module')
def status():
    return read_status(universe_slice_files())


def test_min_days_and_window_edges():
    frame, cal = toy([('A', 'a', 1e9, 40, 0), ('B', 'b', 9e9, 10, 20), ('C', 'c', 8e9, 9, 21)])
    chosen = top_n_members(frame, 3, dates=[cal[30]], window=20, min_days=10)
    # window = cal[10:30]; B trades cal[20:30] (10 days: in), C cal[21:30] (9 days: out)
    assert chosen['symbol'].tolist() == ['B', 'A'] and chosen['rank'].tolist() == [1, 2]
    assert chosen['effective_date'].iloc[0] == cal[30]


@pytest.mark.parametrize('name', ['ST Alpha', '*ST Alpha', 'SST Alpha', 'S*ST Alpha'])
def test_special_treatment_names_are_excluded(name):
    frame, cal = toy([('A', 'a', 1e9, 40, 0), ('B', name, 9e9, 40, 0)])
    assert top_n_members(frame, 2, dates=[cal[30]])['symbol'].tolist() == ['A']
    assert top_n_members(frame, 2, dates=[cal[30]], exclude_st=False)['symbol'].tolist() == ['B', 'A']


def test_only_the_last_name_in_the_window_counts():
    frame, cal = toy([('A', 'a', 1e9, 40, 0), ('B', 'b', 9e9, 40, 0)])
    frame.loc[(frame['symbol'] == 'B') & (frame['trade_date'] < cal[25]), 'name'] = '*ST b'   # renamed back before
    assert top_n_members(frame, 2, dates=[cal[30]])['symbol'].tolist() == ['B', 'A']
    frame.loc[(frame['symbol'] == 'B') & (frame['trade_date'] == cal[29]), 'name'] = 'ST b'  # ST on the last day
    assert top_n_members(frame, 2, dates=[cal[30]])['symbol'].tolist() == ['A']


def test_no_look_ahead(status):
    "Changing everything from a rebalance day on leaves that rebalance's members as they were."
    date = pd.Timestamp('2021-07-01')
    before = top_n_members(status, 15, dates=[date])
    later = status['trade_date'] >= date
    shuffled = status.copy()
    caps = status.loc[later, 'float_market_cap']
    shuffled.loc[later, 'float_market_cap'] = np.random.default_rng(0).permutation(caps)
    shuffled.loc[later, 'name'] = '*ST'
    pd.testing.assert_frame_equal(top_n_members(shuffled, 15, dates=[date]), before)


def test_spells_end_at_delisting_and_at_the_next_rebalance(status):
    calendar = np.sort(status['trade_date'].unique())
    members = top_n_members(status, 40)
    last = status.groupby('symbol')['trade_date'].max()
    spells = membership_spells(members, calendar, last[last < calendar[-1]].to_dict())
    assert (spells['end'] >= spells['start']).all()
    for sym, end in last[last < calendar[-1]].items():   # delisted stocks: no spell runs past their last day
        assert (spells.loc[spells['symbol'] == sym, 'end'] <= end).all()
    for date, group in members.groupby('effective_date'):
        assert members_on(spells, date) == sorted(group['symbol'])


def test_membership_csv_of_spells_and_bad_files(tmp_path):
    good = tmp_path / 'spells.csv'
    good.write_text('instrument,start,end\n600519.SH,2019-01-02,2021-12-31\nsz000001,2020-01-02,2020-06-30\n')
    spells = read_membership_file(good)
    assert members_on(spells, '2020-03-02') == ['000001.SZ', '600519.SH']
    assert members_on(spells, '2020-07-01') == ['600519.SH']
    header = tmp_path / 'header.csv'
    header.write_text('code,from,to\n600519,2019-01-02,2021-12-31\n')
    with pytest.raises(ValueError, match='header.csv, line 1: expected a header'):
        read_membership_file(header)
    date = tmp_path / 'date.txt'
    date.write_text('\nSH600519\t2019-01-02\t2021-12-31\nSH600000\t2019-13-45\t2021-12-31\n')
    with pytest.raises(ValueError, match=r"date.txt, line 3: '2019-13-45' or '2021-12-31' is not a date"):
        read_membership_file(date)


def test_a_file_that_is_not_vendor_bars_is_named(tmp_path):
    bad = tmp_path / 'prices.csv'
    bad.write_text('banner\ncode,date,close\n600519,2021-01-04,2000\n')
    with pytest.raises(ValueError, match='prices.csv: not a vendor daily-bar file'):
        read_status([bad])
    with pytest.raises(ValueError, match='n=0'):
        top_n_members(read_status(universe_slice_files()[:1]), 0)


def test_stored_universe_on_each_backend(empty_db_url, status):
    "Spells round-trip through the database; a failed save leaves the stored universe as it was."
    from quantnb.data.db import StockDataLoader
    from quantnb.data.universe import save_universe
    calendar = np.sort(status['trade_date'].unique())
    spells = membership_spells(top_n_members(status, 12), calendar)
    assert save_universe(empty_db_url, 'top12', spells) == len(spells)
    loader = StockDataLoader(empty_db_url)
    assert loader.list_universes() == ['top12']
    pd.testing.assert_frame_equal(loader.universe_members('top12'), spells)
    for day in ['2019-07-01', '2020-12-31', '2021-12-31']:
        assert loader.universe_members('top12', day) == members_on(spells, day)
    twice = pd.concat([spells, spells.iloc[:1]], ignore_index=True)   # a repeated spell: the insert fails
    with pytest.raises(sa.exc.IntegrityError):
        save_universe(empty_db_url, 'top12', twice)
    pd.testing.assert_frame_equal(loader.universe_members('top12'), spells)
    with pytest.raises(LookupError, match="no universe 'csi300'.*stored: top12"):
        loader.universe_members('csi300')


def test_load_datasets_by_universe_name_samples_member_days_only(tmp_path, status):
    "`load_datasets('top12')`: the universe's stored members, each sampled only on its member days."
    from quantnb.data.datasets import SEGMENTS, load_datasets
    from quantnb.data.importer import import_paths
    from quantnb.data.universe import save_universe
    url = f'sqlite:///{tmp_path}/universe.db'
    assert all(r.ok for r in import_paths(universe_slice_files(), url))
    spells = top_n_spells(status, 12)
    save_universe(url, 'top12', spells)
    bundle = load_datasets('top12', url=url, seq_len=20, horizon=5, feature_set='basic11')
    assert sorted(bundle.symbol_names) == sorted(spells['symbol'].unique())
    names = np.asarray(bundle.symbol_names)
    for name in SEGMENTS:
        ends = bundle.segment(name).ends.numpy()[::5]   # every fifth sample: members_on is a slow, plain oracle
        for sym, day in zip(names[bundle.symbol_codes[ends]], bundle.dates[ends]):
            assert sym in members_on(spells, day)
    everyone = load_datasets(sorted(spells['symbol'].unique()), url=url, seq_len=20, horizon=5, feature_set='basic11')
    assert len(bundle.train) < len(everyone.train)


@pytest.fixture(scope='module')
def universe_db(tmp_path_factory):
    "The universe slice in a fresh SQLite database, with its top-12 universe stored."
    from quantnb.data.importer import import_paths
    from quantnb.data.universe import save_universe
    url = f'sqlite:///{tmp_path_factory.mktemp("udb")}/universe.db'
    assert all(r.ok for r in import_paths(universe_slice_files(), url))
    status = read_status(universe_slice_files())
    spells = top_n_spells(status, 12)
    save_universe(url, 'top12', spells)
    return url, spells


def test_a_training_run_on_a_universe(universe_db, tmp_path):
    "`symbols=top12`: one run over the universe's members, recorded as such; an unknown name lists the universes."
    from quantnb.train.pipeline import run_training
    url, spells = universe_db
    run = run_training(model='gru', symbols='top12', db_url=url, epochs=1, seq_len=20, horizon=5,
                       model_kwargs='{"hidden_size": 8}', out_dir=str(tmp_path), progress=False)
    m = run.manager
    assert m.metadata['status'] == 'completed' and m.run_name.startswith('top12_gru_')
    assert m.load_config()['data']['universe'] == 'top12'
    assert sorted(m.saved_model().symbols) == sorted(spells['symbol'].unique())
    with pytest.raises(ValueError, match='no daily bars for top99 .*; universes: top12'):
        run_training(model='gru', symbols='top99', db_url=url, epochs=1, seq_len=20, out_dir=str(tmp_path))


def test_db_universe_command(tmp_path, capsys):
    "`quantnb db universe`: the top-N rule over vendor files, a Qlib file, and one-line refusals that change nothing."
    from quantnb.cli import main
    from quantnb.data.db import StockDataLoader
    from quantnb.data.universe import UNIVERSE_SLICE_DIR
    url = f'sqlite:///{tmp_path}/u.db'
    assert main(['db', 'universe', 'top12', '--top', '12', '--bars', str(UNIVERSE_SLICE_DIR), '--url', url]) == 0
    assert 'universe top12:' in capsys.readouterr().out
    loader = StockDataLoader(url)
    assert len(loader.universe_members('top12', '2020-07-01')) == 12
    (tmp_path / 'csi.txt').write_text('SH600519\t2019-01-02\t2021-12-31\n')
    assert main(['db', 'universe', 'csi', '--file', str(tmp_path / 'csi.txt'), '--url', url]) == 0
    assert loader.universe_members('csi', '2020-01-02') == ['600519.SH']
    assert main(['db', 'universe', 'x', '--url', url]) == 1
    assert 'give --file FILE, or --top N (over --bars PATH' in capsys.readouterr().err
    bad = tmp_path / 'bad.txt'
    bad.write_text('SH000001\t2021-01-04\t2019-12-31\n')
    assert main(['db', 'universe', 'csi', '--file', str(bad), '--url', url]) == 1
    assert 'bad.txt, line 1' in capsys.readouterr().err
    assert loader.universe_members('csi', '2020-01-02') == ['600519.SH']   # the stored universe is unchanged


def test_top_n_from_stored_bars_equals_the_rule_over_vendor_files(tmp_path, status, capsys):
    "The rule over the database's own bars and name history; a database without names is refused, not mis-ranked."
    import shutil
    from quantnb.cli import main
    from quantnb.data.db import StockDataLoader
    from quantnb.data.importer import import_paths
    from quantnb.data.universe import stored_status, top_n_spells, universe_slice_files
    url = f'sqlite:///{tmp_path}/stored.db'
    assert all(r.ok for r in import_paths(universe_slice_files(), url))
    pd.testing.assert_frame_equal(top_n_spells(stored_status(url), 15), top_n_spells(status, 15))
    assert main(['db', 'universe', 'top15', '--top', '15', '--url', url]) == 0
    assert StockDataLoader(url).universe_members('top15').equals(top_n_spells(status, 15))
    legacy = tmp_path / 'legacy.sqlite'   # bars imported by the previous release: no names, so no ST days
    shutil.copy(Path(__file__).parent / 'data' / 'legacy_v1.sqlite', legacy)
    capsys.readouterr()
    assert main(['db', 'universe', 'top2', '--top', '2', '--url', f'sqlite:///{legacy}']) == 1
    assert 'has no name history' in capsys.readouterr().err
    assert StockDataLoader(f'sqlite:///{legacy}').list_universes() == ['mini']


def test_a_run_over_a_period_takes_the_members_of_that_period(universe_db):
    "Members who join after the period ends (or have no bars in it) are left out instead of failing the load."
    from quantnb.data.datasets import load_datasets
    from quantnb.data.db import StockDataLoader
    from quantnb.data.universe import universe_symbols
    url, spells = universe_db
    loader = StockDataLoader(url)
    early, _ = universe_symbols(loader, 'top12', end_date='2019-12-31')
    late = set(spells.loc[spells['start'] > pd.Timestamp('2019-12-31'), 'symbol']) - set(
        spells.loc[spells['start'] <= pd.Timestamp('2019-12-31'), 'symbol'])
    assert late and not late & set(early)
    bundle = load_datasets('top12', url=url, end_date='2019-12-31', seq_len=10, horizon=2, cache=False)
    assert set(bundle.symbol_names) == set(early)
