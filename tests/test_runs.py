"""TrainingManager: the standard out/ layout, atomic writes, unique names, statuses, masking."""
import json, threading

import pytest
import torch

from quantnb.train.runs import RunNotFoundError, TrainingManager, compare_runs, runs_table
from quantnb.train.pipeline import run_training


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('out')
    return run_training(model='gru', symbols='600519.SH', epochs=2, seq_len=30, out_dir=str(out), progress=False,
                        checkpoint_every=1)


def test_a_finished_run_has_the_full_run_tree(finished_run):
    d = finished_run.manager.run_dir
    for rel in ['config.json', 'metadata.json', 'model/pytorch_model.bin', 'model/config.json',
                'model/training_args.json',
                'checkpoints/checkpoint-1/pytorch_model.bin', 'checkpoints/checkpoint-1/metrics.json',
                'checkpoints/checkpoint-2/pytorch_model.bin', 'checkpoints/best/pytorch_model.bin',
                'checkpoints/best/metrics.json',
                'logs/training.log', 'logs/metrics.json', 'results/eval_results.json', 'results/predictions.json',
                'plots/loss_curves.png', 'plots/predictions.png', 'plots/direction_confusion.png']:
        assert (d / rel).is_file(), rel
    assert d.name.startswith('600519.SH_gru_') and len(d.name) == len('600519.SH_gru_20250119_143025')


def test_json_files_carry_the_documented_keys(finished_run):
    d = finished_run.manager.run_dir
    read = lambda rel: json.loads((d / rel).read_text())
    meta = read('metadata.json')
    assert {'run_name', 'stock_symbol', 'model_type', 'data_source', 'created_at', 'updated_at', 'status',
            'model_saved', 'model_path', 'evaluation_completed', 'eval_metrics'} <= set(meta)
    assert meta['status'] == 'completed' and meta['model_saved'] and meta['evaluation_completed']
    assert [h['status'] for h in meta['status_history']] == ['initialized', 'preparing', 'training', 'completed']
    assert {'mae', 'rmse', 'mape', 'r2', 'direction_accuracy', 'ic', 'rank_ic'} <= set(meta['eval_metrics'])
    config = read('config.json')
    assert {'run_name', 'stock_symbol', 'model_type', 'data_source', 'created_at', 'params'} <= set(config)
    assert {'seq_len', 'epochs', 'batch_size', 'lr'} <= set(config['params'])
    assert not set(config['params']) & (set(config) - {'run_name'})   # each parameter recorded once
    assert config['data']['split']['val_start'] < config['data']['split']['test_start']
    model_config = read('model/config.json')
    assert {'model_type', 'input_size', 'output_size', 'feature_names', 'seq_len', 'normalizer',
            'model'} <= set(model_config)
    assert len(model_config['feature_names']) == model_config['input_size'] == 11
    args = read('model/training_args.json')
    assert {'epochs', 'batch_size', 'learning_rate', 'optimizer', 'loss_function', 'train_samples', 'val_samples',
            'best_val_loss', 'total_epochs_trained'} <= set(args) and args['learning_rate'] == 1e-3
    records = read('logs/metrics.json')
    assert [r['epoch'] for r in records] == [1, 2]
    assert all({'train_loss', 'val_loss', 'phase', 'timestamp'} <= set(r) for r in records)
    evals = read('results/eval_results.json')
    assert {'evaluated_at', 'stock_symbol', 'model_type', 'metrics', 'baselines', 'test_samples'} <= set(evals)
    assert set(evals['baselines']) == {'zero', 'persistence', 'train_mean'}
    preds = read('results/predictions.json')
    assert (len(preds['dates']) == len(preds['symbols']) == len(preds['predictions']) == len(preds['truths'])
            == evals['test_samples'])
    assert len(preds['predictions'][0]) == 7


def test_checkpoints_hold_the_full_training_state_and_load_weights_only(finished_run):
    path = finished_run.manager.run_dir / 'checkpoints' / 'checkpoint-2' / 'pytorch_model.bin'
    state = torch.load(path, weights_only=True)
    assert {'epoch', 'model_state_dict', 'optimizer_state_dict', 'metrics', 'timestamp', 'scheduler_state_dict',
            'rng_state', 'trainer_state'} <= set(state)
    assert state['epoch'] == 2 and 'loader' in state['rng_state']
    final = torch.load(finished_run.manager.get_model_path(), weights_only=True)
    best = torch.load(finished_run.manager.run_dir / 'checkpoints' / 'best' / 'pytorch_model.bin', weights_only=True)
    for k in final: assert torch.equal(final[k], best['model_state_dict'][k])    # the final model is the best epoch's


def test_names_stay_unique_within_one_second(tmp_path):
    managers = []
    threads = [threading.Thread(target=lambda: managers.append(TrainingManager('600519.SH', 'gru',
                                                                               tmp_path))) for _ in range(12)]
    for t in threads: t.start()
    for t in threads: t.join()
    names = [m.run_name for m in managers]
    assert len(set(names)) == 12 and len(list(tmp_path.iterdir())) == 12
    with pytest.raises(FileExistsError):
        TrainingManager('600519.SH', 'gru', tmp_path, run_name=names[0])   # never overwrite a run


def test_a_crash_while_writing_leaves_the_previous_version_whole(tmp_path, monkeypatch):
    m = TrainingManager('600519.SH', 'gru', tmp_path)
    model, opt = torch.nn.Linear(3, 1), None
    m.save_checkpoint(model, opt, 1, {'val_loss': 1.0})
    before = (m.run_dir / 'checkpoints/checkpoint-1/pytorch_model.bin').read_bytes()
    def dies_halfway(obj, f, *a, **k):
        f.write(b'PK\x03\x04 half a zip')
        raise KeyboardInterrupt('kill -9')
    monkeypatch.setattr(torch, 'save', dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        m.save_checkpoint(torch.nn.Linear(3, 1), opt, 1, {'val_loss': 0.5})
    assert (m.run_dir / 'checkpoints/checkpoint-1/pytorch_model.bin').read_bytes() == before
    monkeypatch.undo()
    assert m.load_checkpoint()['metrics'] == {'val_loss': 1.0}
    assert not [p for p in m.run_dir.rglob('*.tmp')]


def test_statuses_move_forward_and_failures_keep_the_error(tmp_path):
    m = TrainingManager(['600519.SH', '000001.SZ'], 'lstm', tmp_path)
    assert m.run_name.startswith('lstm_')                                  # several symbols: no symbol in the name
    with pytest.raises(ValueError, match="cannot go from 'initialized' to 'completed'"):
        m.update_status('completed')
    m.update_status('preparing'); m.update_status('failed', error='Traceback...\nValueError: boom')
    assert m.metadata['status'] == 'failed' and 'boom' in m.metadata['error']
    assert 'ERROR: status: failed (ValueError: boom)' in (m.run_dir / 'logs/training.log').read_text()
    with pytest.raises(ValueError, match='status'):
        m.update_status('finished')


def test_failing_training_marks_the_run_failed_and_raises(tmp_path):
    # a code the database lacks: refused before a run exists
    with pytest.raises(ValueError, match='no daily bars for 688981'):
        run_training(model='gru', symbols='688981.SH', epochs=1, out_dir=str(tmp_path), progress=False)
    assert TrainingManager.list_runs(tmp_path) == []
    with pytest.raises(ValueError, match='no_such_run'):                # fails once the run has started
        run_training(model='gru', symbols='600519.SH', epochs=1, seq_len=30, pretrained='no_such_run',
                     out_dir=str(tmp_path), progress=False)
    (meta,) = TrainingManager.list_runs(tmp_path)
    assert meta['status'] == 'failed' and 'no_such_run' in meta['error']
    assert not (tmp_path / meta['run_name'] / 'run.lock').exists()      # a failed run releases its lock


def test_passwords_are_masked_in_everything_written(tmp_path):
    url = 'mysql+pymysql://quant:hunter2@db.example:3306/kline'
    m = TrainingManager('600519.SH', 'gru', tmp_path, data_source=url)
    m.save_config({'db_url': url, 'nested': {'urls': [url]}})
    m.save_training_log(f'connecting to {url}')
    m.update_status('failed', error=f'OperationalError: could not reach {url}')
    text = ''.join(p.read_text() for p in m.run_dir.rglob('*') if p.is_file())
    assert 'hunter2' not in text and 'quant:***@db.example' in text


def test_listing_and_comparing(finished_run, tmp_path_factory):
    out = finished_run.manager.output_dir
    other = run_training(model='lstm', symbols='600519.SH', epochs=1, seq_len=30, out_dir=str(out), progress=False)
    table = runs_table(out, sort_by='mae')
    assert set(table.run_name) == {finished_run.manager.run_name, other.manager.run_name}
    assert table.mae.is_monotonic_increasing
    diff = compare_runs(finished_run.manager.run_name, other.manager.run_name, out)
    assert diff.loc['config.model'].tolist() == ['gru', 'lstm'] and diff.loc['config.epochs'].tolist() == [2, 1]
    assert 'metric.mae' in diff.index
    with pytest.raises(RunNotFoundError, match='no run'):
        TrainingManager.load_run('nope', out)
    with pytest.raises(ValueError, match='cannot sort by'):
        runs_table(out, sort_by='sharpe')


@pytest.mark.parametrize('damage', ['truncated', 'pickled object'])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, damage):
    "Resume reads the latest checkpoint: a truncated file or a pickle of more than tensors is refused, naming it."
    import pickle, torch
    from quantnb.train.runs import CheckpointReadError
    m = TrainingManager('600519.SH', 'gru', output_dir=tmp_path / 'out')
    net = torch.nn.Linear(2, 1)
    path = m.save_checkpoint(net, torch.optim.AdamW(net.parameters()), 1, {'val_loss': 1.0}) / 'pytorch_model.bin'
    if damage == 'truncated': path.write_bytes(path.read_bytes()[:100])
    else: path.write_bytes(pickle.dumps({'epoch': 1, 'hook': print}))
    with pytest.raises(CheckpointReadError) as e: m.load_checkpoint()
    message = str(e.value)
    assert str(path) in message and '\n' not in message and 'weights_only=False' not in message
