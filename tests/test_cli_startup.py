"""The commands a user types most start fast: `quantnb --help`, `db info` and `runs list` never import torch."""
import os, subprocess, sys
from pathlib import Path

import pytest

QUANTNB = str(Path(sys.executable).parent / 'quantnb')   # the installed console script


def imported_modules(*args, home, url=None):
    "Top-level modules `quantnb *args` imported, read from `python -X importtime` (and the command's exit code)."
    env = {**os.environ, 'QUANTNB_HOME': str(home), 'QUANTNB_OUT': str(home / 'out')}
    env.pop('QUANTNB_DB_URL', None)
    if url: env['QUANTNB_DB_URL'] = url
    r = subprocess.run([sys.executable, '-X', 'importtime', QUANTNB, *args], capture_output=True, text=True,
                       env=env, timeout=120)
    names = {line.rsplit('|', 1)[1].strip() for line in r.stderr.splitlines() if line.startswith('import time:')}
    return r.returncode, names


@pytest.mark.parametrize('args', [['--help'], ['db', 'info'], ['runs', 'list'], ['runs', '--help']])
def test_everyday_commands_do_not_import_torch(args, tmp_path, sqlite_sample_url):
    code, names = imported_modules(*args, home=tmp_path, url=sqlite_sample_url)
    assert code == 0
    assert 'quantnb.cli' in names                     # the measurement saw the command's imports
    assert 'torch' not in names and 'quantnb.experiments' not in names


def startup(*args, home):
    "`quantnb *args` under `python -X importtime`: exit code, stderr without the import lines, imported modules."
    env = {**os.environ, 'QUANTNB_HOME': str(home), 'QUANTNB_OUT': str(home / 'out')}
    r = subprocess.run([sys.executable, '-X', 'importtime', QUANTNB, *args], capture_output=True, text=True,
                       env=env, timeout=120, cwd=home)
    lines = r.stderr.splitlines()
    names = {line.rsplit('|', 1)[1].strip() for line in lines if line.startswith('import time:')}
    return r.returncode, '\n'.join(line for line in lines if not line.startswith('import time:')), r.stdout, names


def test_train_help_is_grouped_and_does_not_import_torch(tmp_path):
    code, err, out, names = startup('train', '--help', home=tmp_path)
    assert code == 0 and 'torch' not in names and 'quantnb.experiments' not in names
    for group in ('data', 'model', 'training', 'pretraining', 'pruning', 'two-stage', 'run'):
        assert f'{group} parameters:' in out
    assert '--stage1_model' in out and 'one of regression, classification, pretrain' in ' '.join(out.split())


@pytest.mark.parametrize('args, message', [
    (['--model', 'nope'], "error: model='nope' is not a model; valid: attention_lstm"),
    (['--task', 'nope'], "error: task='nope': use one of regression, classification, pretrain"),
    (['--epochs', '0'], 'error: epochs=0 must be at least 1'),
])
def test_a_refused_training_parameter_does_not_import_torch(tmp_path, args, message):
    code, err, out, names = startup('train', *args, home=tmp_path)
    assert code == 1 and err.strip().startswith(message) and len(err.strip().splitlines()) == 1, err
    assert 'torch' not in names and 'quantnb.experiments' not in names
    assert not (tmp_path / 'out').exists()
