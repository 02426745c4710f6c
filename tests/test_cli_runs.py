"""`quantnb runs list | show | compare` and the CLI's error lines, run as a user runs them (subprocesses).

Run directories are built directly with TrainingManager (fast); a real tiny training run is used only where
the `quantnb train` output itself is the point (the completion line, a run directory made read-only).
"""
import io, json, os, shutil, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from quantnb.train.runs import MissingKeyError, TrainingManager, best_baseline, runs_table

QUANTNB = str(Path(sys.executable).parent / 'quantnb')
TEN = ['600000.SH', '600036.SH', '600519.SH', '601318.SH',
       '000001.SZ', '000002.SZ', '000333.SZ', '000858.SZ', '002415.SZ', '300750.SZ']
QUICK = ['--model', 'gru', '--epochs', '1', '--seq_len', '30', '--progress', 'false']


def quantnb(*args, home, env=None, timeout=300):
    e = {**os.environ, 'QUANTNB_HOME': str(home), **(env or {})}
    e.pop('QUANTNB_DB_URL', None)
    return subprocess.run([QUANTNB, *args], capture_output=True, text=True, env=e, timeout=timeout)


def regression_results(model_mae, baselines_mae):
    base = {name: {'mae': v, 'rmse': 2 * v, 'direction_accuracy': 0.0 if name == 'zero' else 0.5, 'ic': None}
            for name, v in baselines_mae.items()}
    return {'task': 'regression', 'test_samples': 400, 'metrics': {'mae': model_mae, 'rmse': 2 * model_mae, 'r2': -0.01,
            'mape': 3.2, 'direction_accuracy': 0.52, 'ic': 0.03, 'rank_ic': 0.02, 'mae_by_day': [model_mae] * 7},
            'baselines': base}


def make_run(out, symbols, results=None, task='regression', model='gru', fail=None):
    "A run directory as training leaves it (statuses, config, evaluation), without training anything."
    m = TrainingManager(symbols, model, out)
    m.update_status('preparing', task=task)
    m.save_config({'params': {'model': model, 'symbols': ','.join(symbols), 'seq_len': 30}})
    m.update_status('training')
    if fail: m.update_status('failed', error=fail); return m
    m.save_model(torch.nn.Linear(3, 1), {'model_type': model, 'input_size': 3, 'feature_names': ['a', 'b', 'c']},
                 {'total_epochs_trained': 2, 'best_val_loss': 0.0018})
    m.save_evaluation_results(results)
    m.update_status('completed')
    return m


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "Regression runs in one out/: ten stocks, one stock, a failed run."
    out = tmp_path_factory.mktemp('out')
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom'
    made = {'ten': make_run(out, TEN,
                            regression_results(0.0312, {'zero': 0.031, 'persistence': 0.046, 'train_mean': 0.0309})),
            'one': make_run(out, ['600519.SH'], regression_results(0.03, {'zero': 0.031, 'train_mean': 0.0309}),
                            model='lstm'),
            'failed': make_run(out, ['600519.SH'], fail=traceback)}
    return out, made


@pytest.fixture(scope='module')
def mixed(runs, tmp_path_factory):
    "The same runs plus a classification and a pretraining run: metrics that exist for some rows only."
    out = tmp_path_factory.mktemp('mixed')
    for d in runs[0].iterdir(): shutil.copytree(d, out / d.name)
    classification = {'task': 'classification', 'metrics': {'accuracy': 0.41, 'macro_f1': 0.3, 'ic': 0.01},
                      'baselines': {'majority': {'accuracy': 0.45, 'macro_f1': 0.2}}}
    pretrain = {'task': 'pretrain', 'metrics': {'masked_mse': 0.5},
                'baselines': {'zero': {'masked_mse': 1.0}, 'neighbour': {'masked_mse': 0.7}}}
    made = {'cls': make_run(out, ['600519.SH', '000001.SZ'], classification, task='classification'),
            'pre': make_run(out, TEN, pretrain, task='pretrain', model='transformer')}
    return out, {**runs[1], **made}


def test_list_fits_a_terminal_and_counts_symbols(runs, tmp_path):
    out, made = runs
    r = quantnb('runs', 'list', '--out_dir', str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 + len(made) and max(map(len, lines)) <= 120, r.stdout
    assert '10 stocks' in r.stdout and '600000.SH' not in r.stdout
    assert made['ten'].run_name.startswith('gru_2')        # several stocks: no symbol in the name (README)
    assert 'NaN' not in r.stdout and 'kind' not in lines[0]  # every run is plain regression: no kind column
    assert lines[0].split()[-4:] == ['best', 'mae', 'baseline', 'wins']


def test_list_shows_only_columns_that_mean_something_for_the_rows(mixed, tmp_path):
    out, made = mixed
    r = quantnb('runs', 'list', '--out_dir', str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'NaN' not in r.stdout and 'None' not in r.stdout and '2 stocks' in r.stdout
    header = r.stdout.splitlines()[0].split()
    assert {'mae', 'accuracy', 'masked_mse', 'kind', 'wins'} <= set(header)
    assert not {'sharpe', 'macro_f1', 'rmse'} & set(header)


def test_list_names_the_best_baseline_and_who_wins(mixed, tmp_path):
    out, made = mixed
    listed = quantnb('runs', 'list', '--out_dir', str(out), home=tmp_path).stdout
    rows = {line.split()[0]: line for line in listed.splitlines()[1:]}
    assert 'mae: train_mean 0.0309' in rows[made['ten'].run_name] and rows[made['ten'].run_name].endswith('baseline')
    assert rows[made['one'].run_name].endswith('model')
    assert 'accuracy: majority 0.4500' in rows[made['cls'].run_name] and rows[made['cls'].run_name].endswith('baseline')
    assert 'masked_mse: neighbour 0.7000' in rows[made['pre'].run_name] and rows[made['pre'].run_name].endswith('model')
    table = runs_table(out, sort_by='mae')
    assert table.winner.tolist()[:2] == ['model', 'baseline']


def test_best_baseline_follows_the_metric_and_skips_meaningless_ones():
    results = regression_results(0.0312, {'zero': 0.0310, 'persistence': 0.046, 'train_mean': 0.0309})
    results['baselines']['persistence']['ic'] = 0.05
    assert best_baseline(results, 'mae') == ('train_mean', 0.0309)                  # lower is better
    assert best_baseline(results, 'ic') == ('persistence', 0.05)                     # higher; constants have no IC
    assert best_baseline(results, 'direction_accuracy')[0] != 'zero'                 # a zero forecast has no direction
    strategy = {'metrics': {}, 'buy_and_hold': {'max_drawdown': 0.3}}
    assert best_baseline(strategy, 'max_drawdown') == ('buy_and_hold', 0.3)


def test_show_prints_lists_readably_and_failures_in_one_line(runs, tmp_path):
    out, made = runs
    r = quantnb('runs', 'show', made['ten'].run_name, '--out_dir', str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'stock_symbol: 10 stocks: 600000.SH, 600036.SH, 600519.SH' in r.stdout
    assert "['" not in r.stdout and "{'" not in r.stdout
    assert 'test mae 0.0312 (best baseline train_mean 0.0309: baseline wins)' in r.stdout
    r = quantnb('runs', 'show', made['failed'].run_name, '--out_dir', str(out), home=tmp_path)
    assert r.returncode == 0 and 'error: ValueError: boom' in r.stdout and 'Traceback' not in r.stdout


def test_compare_prints_values_not_reprs(runs, tmp_path):
    out, made = runs
    r = quantnb('runs', 'compare', made['ten'].run_name, made['one'].run_name, '--out_dir', str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'metric.mae' in r.stdout and "['" not in r.stdout


@pytest.mark.parametrize('args', [['runs', 'list'], ['runs', 'show', 'RUN'], ['db', 'info']])
def test_a_closed_pipe_ends_quietly(runs, tmp_path, args):
    "`quantnb runs list | head -1`: the reader has gone before quantnb writes; no 'Broken pipe', no traceback."
    out, made = runs
    args = [made['ten'].run_name if a == 'RUN' else a for a in args]
    if args[0] == 'runs': args += ['--out_dir', str(out)]
    env = {**os.environ, 'QUANTNB_HOME': str(tmp_path)}
    p = subprocess.Popen([QUANTNB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()                                     # head -1 has read its line and exited
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and err == '', err


def test_one_unreadable_metadata_is_flagged_and_the_others_listed(runs, tmp_path):
    out = tmp_path / 'out'
    shutil.copytree(runs[0], out)
    broken, fine = runs[1]['one'].run_name, runs[1]['ten'].run_name
    (out / broken / 'metadata.json').write_text('{"run_name": "x", ')       # a disk filled up mid-write, or a bad edit
    r = quantnb('runs', 'list', '--out_dir', str(out), home=tmp_path)
    assert r.returncode == 0 and fine in r.stdout and broken in r.stdout and 'unreadable' in r.stdout
    assert f'warning: run {broken} is unreadable: ' in r.stderr and 'metadata.json is not valid JSON' in r.stderr
    r = quantnb('runs', 'show', broken, '--out_dir', str(out), home=tmp_path)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
    assert f'{broken}/metadata.json is not valid JSON: ' in r.stderr and '(line 1 column' in r.stderr


def test_a_missing_key_names_the_file_and_the_key(runs, tmp_path):
    out = tmp_path / 'out'
    shutil.copytree(runs[0], out)
    name = runs[1]['one'].run_name
    meta = json.loads((out / name / 'metadata.json').read_text())
    del meta['status']
    (out / name / 'metadata.json').write_text(json.dumps(meta))
    r = quantnb('runs', 'show', name, '--out_dir', str(out), home=tmp_path)
    assert r.returncode == 1 and r.stderr == f"error: {out / name / 'metadata.json'} has no key 'status'\n", r.stderr
    (out / runs[1]['ten'].run_name / 'config.json').write_text('not json')
    r = quantnb('runs', 'compare', runs[1]['ten'].run_name, name, '--out_dir', str(out), home=tmp_path)
    assert r.returncode == 1 and 'config.json is not valid JSON' in r.stderr and r.stderr.count('\n') == 1
    config = TrainingManager.load_run(runs[1]['one'].run_name, runs[0]).load_model_config()
    del config['feature_names']
    with pytest.raises(MissingKeyError, match=r"model/config.json has no key 'feature_names'"): config['feature_names']
    with pytest.raises(KeyError): config['feature_names']                 # still a KeyError for code that expects one


def test_run_records_are_plain_data_in_a_checkpoint(runs):
    config = TrainingManager.load_run(runs[1]['one'].run_name, runs[0]).load_model_config()
    buffer = io.BytesIO()
    torch.save({'model_config': config}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)['model_config'] == dict(config)


def test_completion_line_shows_the_best_baseline_and_who_wins(tmp_path):
    out = tmp_path / 'out'
    r = quantnb('train', *QUICK, '--out_dir', str(out), home=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = out.iterdir()
    results = json.loads((run_dir / 'results' / 'eval_results.json').read_text())
    mae = results['metrics']['mae']
    name, best = min(((k, b['mae']) for k, b in results['baselines'].items()), key=lambda kv: kv[1])
    verdict = 'model wins' if mae < best else 'baseline wins'
    assert f'  test mae {mae:.4g} (best baseline {name} {best:.4g}: {verdict})' in r.stdout.splitlines(), r.stdout
    assert 'test direction_accuracy ' in r.stdout and "{'mae'" not in r.stdout
    listed = quantnb('runs', 'list', '--out_dir', str(out), home=tmp_path)
    assert listed.stdout.splitlines()[1].endswith(verdict.split()[0]) and f'{name} {best:.4f}' in listed.stdout


def test_a_database_error_during_training_is_one_line_with_the_drivers_message(tmp_path):
    url = f'sqlite:///{tmp_path}/no/such/dir/x.sqlite'
    r = quantnb('train', *QUICK, '--out_dir', str(tmp_path / 'out'), '--db_url', url, home=tmp_path, timeout=600)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'unable to open database file' in last, r.stderr[-2000:]
    assert 'sqlalche.me' not in r.stderr and 'Traceback' not in r.stderr


@pytest.mark.mysql
def test_a_mariadb_error_during_training_is_one_line_and_masked(mysql_server, tmp_path):
    url = mysql_server.url.set(password='not-the-password-42').render_as_string(hide_password=False)
    r = quantnb('train', *QUICK, '--out_dir', str(tmp_path / 'out'), '--db_url', url, home=tmp_path, timeout=600)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and '1045' in last and 'Access denied' in last, r.stderr[-2000:]
    assert 'not-the-password-42' not in r.stdout + r.stderr and 'sqlalche.me' not in r.stderr


def _without_root_override(cmd):
    "As root, file permissions do not bind: run `cmd` without the capabilities that bypass them."
    if os.geteuid() != 0: return cmd
    if not shutil.which('setpriv'): pytest.skip('running as root without setpriv: cannot make a directory read-only')
    return ['setpriv', '--bounding-set', '-dac_override,-dac_read_search,-fowner', '--', *cmd]


def test_a_run_directory_made_read_only_fails_in_one_line(tmp_path):
    out = tmp_path / 'out'
    env = {**os.environ, 'QUANTNB_HOME': str(tmp_path)}
    env.pop('QUANTNB_DB_URL', None)
    cmd = _without_root_override([QUANTNB, 'train', '--model', 'gru', '--epochs', '60', '--patience', '100',
                                  '--seq_len', '30', '--progress', 'false', '--out_dir', str(out)])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 300
        while not list(out.glob('*/checkpoints/checkpoint-1/pytorch_model.bin')):
            assert p.poll() is None and time.time() < deadline, 'training ended before its first checkpoint'
            time.sleep(0.2)
        (run_dir,) = out.iterdir()
        for path in [run_dir, *run_dir.rglob('*')]: path.chmod(path.stat().st_mode & ~0o222)
        stdout, stderr = p.communicate(timeout=300)
    finally:
        if p.poll() is None: p.kill()
        for path in [*out.rglob('*')]: path.chmod(path.stat().st_mode | 0o200)
    assert p.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: run {run_dir.name} failed: ') and 'Permission denied' in last, stderr[-2000:]
    assert 'Traceback' not in stderr
