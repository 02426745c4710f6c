"""The training notebook under papermill and `quantnb train`: two models, MariaDB, failures, no passwords in out/."""
import json, os, subprocess, sys, uuid
from pathlib import Path

import nbformat
import pytest

from quantnb.cli import TRAIN_NOTEBOOK
from quantnb.experiments import PARAMETERS
from quantnb.train.runs import TrainingManager

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUICK = ['-p', 'epochs', '2', '-p', 'seq_len', '30', '-p', 'progress', 'False']


def papermill(tmp_path, *params, env=None, output='out/executed.ipynb'):
    (tmp_path / 'out').mkdir(exist_ok=True)
    return subprocess.run([str(BIN / 'papermill'), str(ROOT / 'train.ipynb'), output, *params],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def assert_strict_json(out: Path):
    "Every JSON file under `out` parses without Python's NaN/Infinity extension (jq and JavaScript refuse those)."
    def refuse(token): raise ValueError(token)
    files = list(out.rglob('*.json'))
    for path in files:
        try: json.loads(path.read_text(), parse_constant=refuse)
        except ValueError as e: pytest.fail(f'{path.relative_to(out)} is not strict JSON: {e}')
    assert len(files) > 5


def only_run(tmp_path) -> TrainingManager:
    (meta,) = TrainingManager.list_runs(tmp_path / 'out')
    return TrainingManager.load_run(meta['run_name'], tmp_path / 'out')


def test_the_shipped_notebook_is_clean_and_parameterised():
    nb = nbformat.read(TRAIN_NOTEBOOK, as_version=4)
    assert (ROOT / 'train.ipynb').resolve() == TRAIN_NOTEBOOK.resolve()
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert all(not c.get('outputs') and c.get('execution_count') is None for c in code)
    (params,) = [c for c in code if 'parameters' in c.metadata.get('tags', [])]
    names = {line.split('=')[0].strip() for line in params.source.splitlines()
             if '=' in line and not line.lstrip().startswith('#')}
    required = {'model', 'symbols', 'db_url', 'feature_set', 'seq_len', 'horizon', 'task', 'epochs', 'batch_size', 'lr',
                'preset', 'seed', 'out_dir', 'resume', 'pretrained'}
    assert required <= names and names - {'notebook_path'} == set(PARAMETERS)
    assert {'prune', 'prune_rate', 'prune_states', 'rewind_epoch', 'stage1_run', 'strategy_epochs', 'pretext',
            'freeze_epochs'} <= names
    import papermill as pm
    assert set(pm.inspect_notebook(str(TRAIN_NOTEBOOK))) == names      # papermill parses every parameter line


@pytest.mark.parametrize('model, extra, plots', [
    ('gru', [], {'loss_curves', 'predictions', 'direction_confusion'}),
    ('attention_lstm', ['-p', 'task', 'classification', '-p', 'symbols', '000001,600036'],
     {'loss_curves', 'direction_confusion', 'attention_heatmap'}),
])
def test_papermill_runs_record_into_out(tmp_path, model, extra, plots):
    r = papermill(tmp_path, '-p', 'model', model, *QUICK, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run(tmp_path)
    meta = run.metadata
    assert meta['status'] == 'completed' and meta['model_type'] == model
    assert {p.stem for p in (run.run_dir / 'plots').glob('*.png')} == plots
    executed = nbformat.read(run.run_dir / 'notebook.ipynb', as_version=4)     # the executed copy lives in the run
    assert any(c.get('outputs') for c in executed.cells if c.cell_type == 'code')
    assert (tmp_path / 'out' / 'executed.ipynb').exists()
    assert_strict_json(tmp_path / 'out')          # the zero-return baseline has no IC: null, not NaN


SMALL = '{"d_model": 32, "head_dim": 8, "ffn_dim": 64}'


@pytest.mark.parametrize('params, model_type, result', [
    (['-p', 'model', 'gru', '-p', 'prune', 'refill', '-p', 'prune_rate', '0.5', '-p', 'prune_states', '2'], 'gru',
     'pruning'),
    (['-p', 'model', 'two_stage', '-p', 'stage1_model', 'transformer', '-p', 'model_kwargs', SMALL, '-p',
      'strategy_epochs', '2'],
     'strategy_gru', 'backtest'),
])
def test_pruning_and_two_stage_runs_through_the_notebook(tmp_path, params, model_type, result):
    r = papermill(tmp_path, *params, '-p', 'epochs', '1', '-p', 'seq_len', '30', '-p', 'progress', 'False')
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {m['model_type']: m for m in TrainingManager.list_runs(tmp_path / 'out')}
    run = TrainingManager.load_run(runs[model_type]['run_name'], tmp_path / 'out')
    assert run.metadata['status'] == 'completed' and (run.run_dir / 'results' / f'{result}.json').exists()
    assert (run.run_dir / 'notebook.ipynb').exists() and list((run.run_dir / 'plots').glob('*.png'))
    assert_strict_json(tmp_path / 'out')
    table = json.loads((run.run_dir / 'results' / f'{result}.json').read_text())
    if result == 'pruning': assert [s['label'] for s in table['states']] == ['state-0', 'state-1'] and table['controls']
    else: assert table['segment'] == 'test' and 'buy_and_hold' in table['metrics']


def test_parameters_of_another_kind_of_run_are_refused(tmp_path):
    r = papermill(tmp_path, '-p', 'model', 'gru', '-p', 'prune_rate', '0.5', *QUICK)
    assert r.returncode != 0 and "['prune_rate'] are not used by a plain training run" in r.stderr + r.stdout
    assert TrainingManager.list_runs(tmp_path / 'out') == []


def test_quantnb_train_runs_the_same_notebook(tmp_path):
    r = subprocess.run([str(BIN / 'quantnb'), 'train', '--model', 'lstm', '--epochs', '2', '--seq_len', '30',
                        '--progress', 'false',
                        '--out_dir', str(tmp_path / 'out')], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run(tmp_path)
    assert run.metadata['status'] == 'completed' and f'completed {run.run_name}' in r.stdout
    assert (run.run_dir / 'notebook.ipynb').exists() and (run.run_dir / 'model' / 'pytorch_model.bin').exists()
    listed = subprocess.run([str(BIN / 'quantnb'), 'runs', 'list', '--out_dir', str(tmp_path / 'out')],
                            capture_output=True, text=True)
    assert run.run_name in listed.stdout and 'completed' in listed.stdout


@pytest.mark.mysql
def test_papermill_against_mariadb(tmp_path, mysql_sample_url):
    r = papermill(tmp_path, '-p', 'model', 'gru', '-p', 'db_url', mysql_sample_url, *QUICK)
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run(tmp_path)
    assert run.metadata['status'] == 'completed' and run.metadata['data_source'].startswith('mysql+pymysql://')
    assert run.load_config()['data']['segments']['test']['samples'] > 100


def test_a_failing_papermill_run_is_marked_failed_and_exits_non_zero(tmp_path):
    r = papermill(tmp_path, '-p', 'model', 'gru', '-p', 'symbols', '688981.SH', *QUICK)
    assert r.returncode != 0 and 'no daily bars for 688981' in r.stderr + r.stdout
    assert TrainingManager.list_runs(tmp_path / 'out') == []          # refused before a run directory exists
    r = papermill(tmp_path, '-p', 'model', 'gru', '-p', 'pretrained', 'no_such_run', *QUICK)
    assert r.returncode != 0
    run = only_run(tmp_path)
    assert run.metadata['status'] == 'failed' and "'no_such_run'" in run.metadata['error']


def test_bad_parameters_fail_before_any_run_exists(tmp_path):
    r = papermill(tmp_path, '-p', 'model', 'rnn', *QUICK)
    assert r.returncode != 0 and 'valid: attention_lstm, enhanced_transformer, gru' in r.stderr + r.stdout
    assert TrainingManager.list_runs(tmp_path / 'out') == []
    r = subprocess.run([str(BIN / 'quantnb'), 'train', '--model', 'gru', '--task', 'ranking', '--out_dir',
                        str(tmp_path / 'out')],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "task='ranking'" in r.stderr and TrainingManager.list_runs(tmp_path / 'out') == []


@pytest.mark.mysql
@pytest.mark.parametrize('form', ['userinfo', 'query'])
def test_no_password_appears_anywhere_under_out(tmp_path, mysql_server, make_mysql_db, form):
    """A password-protected MariaDB account, in `user:pw@` or `?password=` form: the run completes, no file under out/
    holds it."""
    from quantnb.data.importer import load_sample
    db = make_mysql_db('qnb_pw')
    load_sample(db)
    user, password = f'qnb_{uuid.uuid4().hex[:8]}', f'Pw-{uuid.uuid4().hex[:10]}'
    hosts = ('%%', 'localhost')
    with mysql_server.begin() as conn:
        for host in hosts:
            conn.exec_driver_sql(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
            conn.exec_driver_sql(f"GRANT ALL ON `{db.rsplit('/', 1)[1]}`.* TO '{user}'@'{host}'")
    try:
        url = (db.replace('root@', f'{user}:{password}@') if form == 'userinfo' else
               db.replace('root@', f'{user}@') + f'?password={password}')
        r = subprocess.run([str(BIN / 'quantnb'), 'train', '--model', 'gru', '--epochs', '1', '--seq_len', '30',
                            '--progress', 'false',
                            '--db_url', url, '--out_dir', str(tmp_path / 'out')], capture_output=True, text=True,
                            timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        run = only_run(tmp_path)
        assert run.metadata['status'] == 'completed' and password not in run.metadata['data_source']
        assert '***' in run.metadata['data_source']
        files = [p for p in (tmp_path / 'out').rglob('*') if p.is_file()]
        assert len(files) > 15
        for p in files: assert password.encode() not in p.read_bytes(), p
        assert password not in r.stdout + r.stderr
        if form == 'query': return
        # as a papermill parameter it would be written into the executed notebook (papermill's file, outside out/ here)
        refused = papermill(tmp_path, '-p', 'db_url', url, *QUICK, output=str(tmp_path / 'refused.ipynb'))
        assert refused.returncode != 0 and 'carries a password' in refused.stderr + refused.stdout
    finally:
        with mysql_server.begin() as conn:
            for host in hosts: conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")
