"""`quantnb train` as a user runs it: a subprocess; how runs start, resume, stop and refuse bad input."""
import json, os, re, signal, stat, subprocess, sys, time
from pathlib import Path

import pytest

from quantnb.train.runs import LOCK_NAME, TrainingManager

BIN = Path(sys.executable).parent
QUANTNB = str(BIN / 'quantnb')
QUICK = ['--epochs', '1', '--seq_len', '30', '--progress', 'false']


def quantnb(*args, cwd, env=None, timeout=300):
    e = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    for k in ('QUANTNB_DB_URL', 'QUANTNB_OUT'):
        if k not in (env or {}): e.pop(k, None)
    return subprocess.run([QUANTNB, *args], capture_output=True, text=True, env=e, cwd=cwd, timeout=timeout)


def runs(out: Path) -> list[dict]:
    return TrainingManager.list_runs(out) if out.exists() else []


def everything_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob('*')}


def test_symbols_all_trains_every_stored_stock(tmp_path):
    r = quantnb('train', '--symbols', 'all', '--model', 'gru', *QUICK, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (meta,) = runs(tmp_path / 'out')
    assert meta['status'] == 'completed' and len(meta['stock_symbol']) == 10
    assert not meta['run_name'].startswith('all_')
    # item 13: the kernel is quiet
    assert '\n' not in r.stderr.strip() and 'without encryption' not in r.stdout + r.stderr
    epochs = [line for line in r.stdout.splitlines() if re.search(r' epoch 1(/\d+)?: train_loss=', line)]
    assert len(epochs) == 1, r.stdout                                                       # one line per epoch, live
    config = json.loads((tmp_path / 'out' / meta['run_name'] / 'config.json').read_text())
    # OMP_NUM_THREADS=1 honoured
    assert config['params']['threads'] == 1
    assert not (tmp_path / 'out' / meta['run_name'] / LOCK_NAME).exists()


@pytest.mark.parametrize('args, message', [
    (['--symbols', 'AAPL'], 'no daily bars for AAPL'),
    (['--symbols', '60051'], "'60051' is not a six-digit code"),
    (['--seq_len', '5000'], 'seq_len=5000 is longer than the data'),
    (['--symbols', '../../x'], "'../../x' is not a stock code"),
    (['--run_name', '../escaped_run'], "run name '../escaped_run' is not allowed"),
    (['--resume', '/tmp/abs_run'], "run name '/tmp/abs_run' is not allowed"),
    (['--db', 'nowhere'], "no database connection named 'nowhere'"),
])
def test_bad_input_is_refused_before_anything_exists(tmp_path, args, message):
    work = tmp_path / 'work'
    work.mkdir()
    r = quantnb('train', '--model', 'gru', '--epochs', '1', *args, cwd=work)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr
    # no run, no out/, nothing outside
    assert everything_under(tmp_path) == {'work'} and not Path('/tmp/abs_run').exists()


def test_quantnb_out_is_where_runs_go(tmp_path):
    elsewhere = tmp_path / 'runs_here'
    r = quantnb('train', '--model', 'gru', '--symbols', '600519.SH', *QUICK, cwd=tmp_path,
                env={'QUANTNB_OUT': str(elsewhere)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / 'out').exists() and len(runs(elsewhere)) == 1
    listed = quantnb('runs', 'list', cwd=tmp_path, env={'QUANTNB_OUT': str(elsewhere)})
    assert runs(elsewhere)[0]['run_name'] in listed.stdout


def wait_for_status(path: Path, status: str, timeout=180):
    stop = time.time() + timeout
    while time.time() < stop:
        try:
            if json.loads(path.read_text()).get('status') == status: return
        except (OSError, ValueError): pass
        time.sleep(0.2)
    raise AssertionError(f'{path} never reached {status}')


def test_ctrl_c_marks_the_run_interrupted_and_resume_finishes_it(tmp_path):
    e = {**os.environ, 'OMP_NUM_THREADS': '1'}
    e.pop('QUANTNB_OUT', None)
    p = subprocess.Popen([QUANTNB, 'train', '--model', 'gru', '--symbols', '600519', '--epochs', '2', '--seq_len', '30',
                          '--progress', 'false', '--run_name', 'stopped'], cwd=tmp_path, env=e, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    run_dir = tmp_path / 'out' / 'stopped'
    wait_for_status(run_dir / 'metadata.json', 'training')
    t = time.time()
    os.killpg(p.pid, signal.SIGINT)          # what Ctrl-C in a terminal sends: the whole foreground group
    out, err = p.communicate(timeout=30)
    assert time.time() - t < 10
    assert p.returncode == 130
    assert err.strip() == 'interrupted: run stopped can be resumed with: quantnb train --resume stopped', err
    meta = json.loads((run_dir / 'metadata.json').read_text())
    assert meta['status'] == 'interrupted' and not (run_dir / LOCK_NAME).exists()
    listed = quantnb('runs', 'list', cwd=tmp_path)
    assert 'interrupted' in listed.stdout
    r = quantnb('train', '--resume', 'stopped', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((run_dir / 'metadata.json').read_text())
    assert meta['status'] == 'completed'
    assert json.loads((run_dir / 'model' / 'training_args.json').read_text())['total_epochs_trained'] == 2


def test_resume_of_a_completed_run_is_refused_unless_it_asks_for_more_epochs(tmp_path):
    r = quantnb('train', '--model', 'gru', '--symbols', '600519.SH', '--patience', '0', *QUICK, '--run_name', 'done',
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp_path / 'out' / 'done'
    before = everything_under(run_dir)
    t = time.time()
    r = quantnb('train', '--resume', 'done', cwd=tmp_path)
    assert r.returncode == 1 and time.time() - t < 15
    assert r.stderr.strip() == ('error: run done is already completed (1 epochs); to train it longer, ask for more: '
                                '--resume done --epochs 11'), r.stderr
    assert everything_under(run_dir) == before            # nothing written
    r = quantnb('train', '--resume', 'done', '--epochs', '2', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run_dir / 'model' / 'training_args.json').read_text())['total_epochs_trained'] == 2
    assert json.loads((run_dir / 'config.json').read_text())['params']['epochs'] == 2
    assert 'epochs raised from 1 to 2' in (run_dir / 'logs' / 'training.log').read_text()


def test_a_run_killed_before_its_first_checkpoint_restarts_and_a_second_resume_is_refused(tmp_path):
    out = tmp_path / 'out'
    from quantnb.train.pipeline import TrainParams, TrainingRun
    run = TrainingRun(TrainParams(model='gru', symbols='600519.SH', epochs=1, seq_len=30, progress=False,
                                  run_name='killed', out_dir=str(out)))
    manager = run.start()
    manager.update_status('training')        # as if killed -9 during the first epoch: no checkpoint, status training
    manager.release_lock()
    (manager.run_dir / LOCK_NAME).write_text('999999999\n')   # the dead owner's lock file stays behind
    holder = subprocess.Popen([sys.executable, '-c',
                               'import sys, time; from quantnb.train.runs import TrainingManager as T; '
                               'T.load_run(sys.argv[1]).acquire_lock(); print("locked", flush=True); time.sleep(60)',
                               str(manager.run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'     # the stale lock was taken over
        r = quantnb('train', '--resume', 'killed', cwd=tmp_path)
        assert r.returncode == 1 and r.stderr.strip() == (
            f'error: run killed is in use by process {holder.pid}; '
            'wait for it to finish (or stop it), then try again'), r.stderr
        assert json.loads((manager.run_dir / 'metadata.json').read_text())['status'] == 'training'   # untouched
    finally:
        holder.kill(); holder.wait()
    r = quantnb('train', '--resume', 'killed', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((manager.run_dir / 'metadata.json').read_text())['status'] == 'completed'
    log = (manager.run_dir / 'logs' / 'training.log').read_text()
    assert 'no checkpoint to resume from: training from the start' in log
    assert not (manager.run_dir / LOCK_NAME).exists()


def test_named_connection_keeps_the_password_out_of_parameters(tmp_path):
    home = tmp_path / 'home'
    url = f'sqlite:///{home / "quantnb.sqlite"}'
    r = quantnb('db', 'connect', 'research', url, cwd=tmp_path, env={'QUANTNB_HOME': str(home)})
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((home / 'config').stat().st_mode) == 0o600
    r = quantnb('train', '--db', 'research', '--model', 'gru', '--symbols', '600519.SH', *QUICK, cwd=tmp_path,
                env={'QUANTNB_HOME': str(home)})
    assert r.returncode == 0, r.stderr[-2000:]
    (meta,) = runs(tmp_path / 'out')
    config = json.loads((tmp_path / 'out' / meta['run_name'] / 'config.json').read_text())
    assert config['params']['db'] == 'research' and config['params']['db_url'] == ''
    r = quantnb('db', 'connect', 'bad', 'not a url', cwd=tmp_path, env={'QUANTNB_HOME': str(home)})
    assert r.returncode == 1 and 'does not parse' in r.stderr and 'not a url' not in r.stderr


def test_papermill_output_is_scrubbed_when_a_password_arrives_as_a_parameter(tmp_path):
    secret = 'Pw-s3cr3t-123'
    output = tmp_path / 'executed.ipynb'
    r = subprocess.run([str(BIN / 'papermill'), str(Path(__file__).resolve().parent.parent / 'train.ipynb'),
                        str(output),
                        '-p', 'db_url', f'mysql+pymysql://quant:{secret}@127.0.0.1:3306/test', '-p', 'epochs', '1'],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'carries a password' in r.stdout + r.stderr
    assert secret not in r.stdout + r.stderr
    stop = time.time() + 10
    # masked right after papermill's last write
    while secret in output.read_text() and time.time() < stop: time.sleep(0.1)
    text = output.read_text()
    assert secret not in text and 'quant:***@127.0.0.1' in text
    assert not (tmp_path / 'out').exists() or runs(tmp_path / 'out') == []


@pytest.mark.mysql
def test_named_connection_to_a_password_protected_mariadb(tmp_path, mysql_server, make_mysql_db):
    """The password lives in $QUANTNB_HOME/config only: not in the run, not in the executed notebook, not on the
    terminal."""
    import uuid
    from quantnb.data.importer import load_sample
    db = make_mysql_db('qnb_named')
    load_sample(db)
    user, password = f'qnb_{uuid.uuid4().hex[:8]}', f'Pw-{uuid.uuid4().hex[:10]}'
    with mysql_server.begin() as conn:
        for host in ('%%', 'localhost'):
            conn.exec_driver_sql(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
            conn.exec_driver_sql(f"GRANT ALL ON `{db.rsplit('/', 1)[1]}`.* TO '{user}'@'{host}'")
    try:
        home = tmp_path / 'home'
        env = {'QUANTNB_HOME': str(home)}
        r = quantnb('db', 'connect', 'research', db.replace('root@', f'{user}:{password}@'), cwd=tmp_path, env=env)
        assert r.returncode == 0 and password not in r.stdout + r.stderr, r.stderr
        r = quantnb('train', '--db', 'research', '--model', 'gru', '--symbols', '600519', *QUICK, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert password not in r.stdout + r.stderr
        (meta,) = runs(tmp_path / 'out')
        assert meta['status'] == 'completed' and f'{user}:***@' in meta['data_source']
        files = [p for p in (tmp_path / 'out').rglob('*') if p.is_file()]
        assert len(files) > 15 and not [p for p in files if password.encode() in p.read_bytes()]
    finally:
        with mysql_server.begin() as conn:
            for host in ('%%', 'localhost'): conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")
