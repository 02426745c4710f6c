"""Using a finished run from the command line: `quantnb predict | verify | runs show` on plain, two-stage and pruning
runs; the database a prediction reads; weights that were swapped, truncated or pickled with arbitrary objects."""
import os, re, shutil, sqlite3, subprocess, sys
from pathlib import Path

import pytest
import torch

from quantnb.core import read_json, sha256_file, write_json
from quantnb.train.pipeline import run_training

QUANTNB = str(Path(sys.executable).parent / 'quantnb')   # the installed console script
TINY_GRU = '{"hidden_size": 16}'
TINY_TRANSFORMER = '{"d_model": 16, "n_layers": 1, "n_heads": 2}'
pytestmark = pytest.mark.usefixtures('one_torch_thread')


def quantnb(*args, home, out, env=None):
    e = {**os.environ, 'QUANTNB_HOME': str(home), 'QUANTNB_OUT': str(out), **(env or {})}
    e.pop('QUANTNB_DB_URL', None)
    return subprocess.run([QUANTNB, *args], capture_output=True, text=True, env=e, timeout=300)


def one_line_error(r, *fragments):
    "Exit code 1, one line on stderr with every fragment, no traceback and no advice to load weights unsafely."
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    assert 'Traceback' not in r.stderr and 'weights_only' not in r.stderr
    for f in fragments: assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope='module')
def home(tmp_path_factory):
    return tmp_path_factory.mktemp('home')


@pytest.fixture(scope='module')
def out(tmp_path_factory):
    return tmp_path_factory.mktemp('out')


@pytest.fixture(scope='module')
def two_stage(home, out):
    "A tiny two-stage run trained the way a user does: `quantnb train --model two_stage`."
    r = quantnb('train', '--model', 'two_stage', '--epochs', '1', '--strategy_epochs', '1', '--seq_len', '30',
                '--start_date', '2016-01-01', '--model_kwargs', TINY_TRANSFORMER, '--run_name', 'ts',
                '--out_dir', str(out), home=home, out=out)
    assert r.returncode == 0, r.stderr[-2000:]
    return 'ts'


@pytest.fixture(scope='module')
def plain(home, out):
    "A tiny GRU regression run, trained in this process; tests that damage its files work on copies."
    run = run_training(model='gru', symbols='600519.SH', epochs=1, seq_len=30, model_kwargs=TINY_GRU, out_dir=str(out),
                       run_name='plain', progress=False)
    return run.manager.run_name


def copy_run(out, name, new):
    shutil.copytree(out / name, out / new)
    meta = read_json(out / new / 'metadata.json')
    write_json(out / new / 'metadata.json', {**meta, 'run_name': new})
    return out / new


def test_two_stage_runs_show_predict_and_verify(two_stage, home, out):
    r = quantnb('runs', 'show', two_stage, home=home, out=out)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert 'strategy_gru' in r.stdout
    assert re.search(r'^strategy\s+-?\d', r.stdout, re.M) and re.search(r'^buy_and_hold\s', r.stdout, re.M)

    r = quantnb('predict', two_stage, home=home, out=out)
    assert r.returncode == 0, r.stderr
    header, columns, _, row = r.stdout.strip().splitlines()[:4]
    assert header.startswith(f'run {two_stage}, bars from sqlite:///') and header.endswith('quantnb.sqlite')
    assert columns.split()[:5] == ['date', 'close', 'position', 'p_position', 'expected_position']
    assert 'stage1_ret_1d' in columns and 'stage1_ret_7d' in columns
    values = row.split()
    assert values[:2] == ['600519.SH', '2022-01-14'] and 0 <= float(values[3]) <= 1

    r = quantnb('verify', two_stage, home=home, out=out)
    assert r.returncode in (0, 1) and not r.stderr.strip(), r.stderr
    assert f'{two_stage} is a two-stage strategy run' in r.stdout and 'matches the SHA-256 its run recorded' in r.stdout
    assert f'stage-1 price model, run {two_stage}_stage1' in r.stdout
    steps = r'provenance: run ts_stage1 \(completed\), [\d,]+ optimiser steps \(1 epoch\(s\) x \d+ steps'
    assert re.search(steps, r.stdout), r.stdout
    assert '?' not in r.stdout


def test_predict_the_position_the_backtest_took(two_stage, home, out):
    "The strategy's prediction as of the last test day is the position its backtest took on that day."
    backtest = read_json(out / two_stage / 'results' / 'backtest.json')
    day, position = backtest['daily']['dates'][-1], backtest['daily']['position'][-1]
    r = quantnb('predict', two_stage, '--as_of', day, home=home, out=out)
    assert r.returncode == 0, r.stderr
    values = r.stdout.strip().splitlines()[3].split()
    assert values[1] == day and abs(float(values[3]) - position) < 1e-3


def test_pruning_runs_show_predict_and_verify(home, out):
    from quantnb.experiments import run_experiment
    run_experiment(model='gru', prune='magnitude', prune_states=2, epochs=1, seq_len=30, model_kwargs=TINY_GRU,
                   run_name='pruned', out_dir=str(out), progress=False)
    show = quantnb('runs', 'show', 'pruned', home=home, out=out)
    assert show.returncode == 0 and 'baseline: train_mean' in show.stdout, show.stderr
    pred = quantnb('predict', 'pruned', home=home, out=out)
    assert pred.returncode == 0 and 'ret_7d' in pred.stdout, pred.stderr
    ver = quantnb('verify', 'pruned', home=home, out=out)
    assert re.search(r'[\d,]+ optimiser steps \(\d+ epoch\(s\) x \d+ steps', ver.stdout), ver.stdout + ver.stderr


def test_swapped_weights_are_refused_everywhere(plain, two_stage, home, out):
    "A model file replaced after training: predict, verify, transfer, pruned-model loading and the strategy all refuse."
    from quantnb.prune.structured import load_pruned_model
    from quantnb.transfer import CheckpointError, load_pretrained
    from quantnb.models.core import create_model
    d = copy_run(out, plain, 'swapped')
    other = torch.load(d / 'checkpoints' / 'checkpoint-1' / 'pytorch_model.bin', weights_only=True)['model_state_dict']
    torch.save({k: v + 1 for k, v in other.items()}, d / 'model' / 'pytorch_model.bin')
    weights = str(d / 'model' / 'pytorch_model.bin')
    one_line_error(quantnb('predict', 'swapped', home=home, out=out), weights, 'SHA-256 differs')
    one_line_error(quantnb('verify', 'swapped', home=home, out=out), weights, 'SHA-256 differs')
    with pytest.raises(CheckpointError, match='SHA-256 differs'): load_pruned_model('swapped', output_dir=out)
    with pytest.raises(CheckpointError, match='SHA-256 differs'):
        load_pretrained(create_model('gru', 11, seq_len=30, hidden_size=16), 'swapped', output_dir=out, verbose=False)

    s = copy_run(out, two_stage, 'swapped_strategy')
    net = s / 'model' / 'pytorch_model.bin'
    state = torch.load(net, weights_only=True)
    torch.save({k: v * 2 for k, v in state.items()}, net)
    one_line_error(quantnb('predict', 'swapped_strategy', home=home, out=out), str(net), 'SHA-256 differs')
    one_line_error(quantnb('verify', 'swapped_strategy', home=home, out=out), str(net), 'SHA-256 differs')


def test_truncated_weights_name_the_file(plain, home, out):
    d = copy_run(out, plain, 'truncated')
    checkpoint = d / 'checkpoints' / 'checkpoint-1' / 'pytorch_model.bin'
    checkpoint.write_bytes(checkpoint.read_bytes()[:2000])
    one_line_error(quantnb('verify', str(checkpoint), home=home, out=out), str(checkpoint), 'truncated or corrupt')
    final = d / 'model' / 'pytorch_model.bin'
    final.write_bytes(final.read_bytes()[:2000])
    one_line_error(quantnb('predict', 'truncated', home=home, out=out), str(final), 'damaged')


class Payload:
    "Unpickling this would run a command; a weights-only load must refuse it."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


def test_a_pickle_with_an_arbitrary_object_is_refused_and_never_runs(plain, home, out, tmp_path):
    d = copy_run(out, plain, 'malicious')
    marker = tmp_path / 'ran'
    final = d / 'model' / 'pytorch_model.bin'
    state = torch.load(final, weights_only=True)
    torch.save({**state, 'payload': Payload(marker)}, final)
    config = read_json(d / 'model' / 'config.json')   # an attacker who also rewrites the recorded checksum
    write_json(d / 'model' / 'config.json', {**config, 'weights_sha256': sha256_file(final)})
    line = one_line_error(quantnb('predict', 'malicious', home=home, out=out), str(final), 'refused', 'system')
    assert 'never builds arbitrary objects' in line
    checkpoint = d / 'checkpoints' / 'checkpoint-1' / 'pytorch_model.bin'
    torch.save({'model_state_dict': state, 'payload': Payload(marker)}, checkpoint)
    one_line_error(quantnb('verify', str(checkpoint), home=home, out=out), str(checkpoint), 'refused')
    assert not marker.exists()


def test_predict_reads_the_database_the_run_was_trained_on(home, out, tmp_path, sqlite_sample_url):
    "No URL given: the run's recorded database, named in the output; a missing one or one with a password is an error."
    db = tmp_path / 'research.sqlite'
    with sqlite3.connect(sqlite_sample_url.removeprefix('sqlite:///')) as src, sqlite3.connect(db) as dst:
        src.backup(dst)   # the sample is in WAL mode: a file copy can miss what is still in its -wal file
    url = f'sqlite:///{db}'
    run = run_training(model='gru', symbols='600519.SH', epochs=1, seq_len=30, model_kwargs=TINY_GRU, out_dir=str(out),
                       run_name='elsewhere', db_url=url, progress=False)
    assert run.manager.metadata['data_source'] == url
    r = quantnb('predict', 'elsewhere', home=home, out=out)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert r.stdout.splitlines()[0] == f'run elsewhere, bars from {url}'

    r = quantnb('predict', 'elsewhere', '--symbols', '600519,000001', home=home, out=out)   # a stock it never saw
    assert r.returncode == 0
    assert r.stderr.strip() == ('warning: run elsewhere never saw 000001.SZ in training (trained on 600519.SH): '
                                'its prediction there is an extrapolation')

    default = f'sqlite:///{home / "quantnb.sqlite"}'
    r = quantnb('predict', 'elsewhere', '--url', default, home=home, out=out)   # asked for another database: warned
    assert r.returncode == 0 and f'warning: run elsewhere was trained on {url}; reading {default} instead' in r.stderr
    assert r.stdout.splitlines()[0] == f'run elsewhere, bars from {default}'

    db.rename(tmp_path / 'moved.sqlite')
    one_line_error(quantnb('predict', 'elsewhere', home=home, out=out),
                   f'was trained on {url}, which cannot be read now', '--url')

    meta = read_json(run.manager.run_dir / 'metadata.json')
    masked = 'mysql+pymysql://quant:***@db.example:3306/research'
    write_json(run.manager.run_dir / 'metadata.json', {**meta, 'data_source': masked})
    one_line_error(quantnb('predict', 'elsewhere', home=home, out=out),
                   f'was trained on {masked}, whose password quantnb never stores', 'QUANTNB_DB_URL')


@pytest.mark.mysql
def test_predict_on_a_mysql_run_reads_mysql_without_being_told(home, out, mysql_sample_url):
    "The first-hour report: a run trained on MariaDB, `quantnb predict` with QUANTNB_DB_URL unset, read the sample."
    from quantnb.core import mask_url
    run_training(model='gru', symbols='600519.SH', epochs=1, seq_len=30, model_kwargs=TINY_GRU, out_dir=str(out),
                 run_name='on_mysql', db_url=mysql_sample_url, progress=False)
    r = quantnb('predict', 'on_mysql', home=home, out=out)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert r.stdout.splitlines()[0] == f'run on_mysql, bars from {mask_url(mysql_sample_url)}'
    assert mask_url(mysql_sample_url).startswith('mysql')
