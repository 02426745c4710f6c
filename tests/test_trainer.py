"""Trainer: exact resume after a SIGKILL, early stopping, accumulation, precision, losses, MoE aux loss, determinism."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from quantnb.data.datasets import load_datasets, make_dataloaders
from quantnb.models.core import create_model
from quantnb.train.runs import TrainingManager
from quantnb.train.trainer import Trainer, TrainingArgs, make_loss

QUANTNB = str(Path(sys.executable).parent / 'quantnb')


@pytest.fixture(scope='module')
def bundle():
    return load_datasets('600519.SH', seq_len=20, horizon=3)


def fixed_loaders(bundle, batch_size, n=256):
    "Unshuffled loaders over the first n training samples, so two trainers see the same batches."
    return DataLoader(Subset(bundle.train, range(n)), batch_size=batch_size), DataLoader(Subset(bundle.val, range(128)),
                                                                                         batch_size=64)


# --- exact resume after a kill -----------------------------------------------------------------------

TRAIN = ("from quantnb.train.pipeline import run_training; "
         "run_training(model='gru', symbols='600519,000001,600036,000858,601318', seq_len=40, epochs=6, patience=0, "
         "checkpoint_every=1, seed=3, out_dir={out!r}, run_name={name!r}, progress=False)")


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    out = str(tmp_path / 'out')
    whole = subprocess.run([sys.executable, '-c', TRAIN.format(out=out, name='whole')], capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen([sys.executable, '-c', TRAIN.format(out=out, name='killed')], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = tmp_path / 'out' / 'killed' / 'checkpoints' / 'checkpoint-2' / 'pytorch_model.bin'
    deadline = time.time() + 300
    while not second.exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = TrainingManager.load_run('killed', out)
    assert killed.metadata['status'] == 'training'                       # really interrupted mid-training
    assert not (killed.run_dir / 'checkpoints' / 'checkpoint-6').exists()
    resumed = subprocess.run([QUANTNB, 'train', '--resume', 'killed', '--out_dir', out, '--progress', 'false'],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    read = lambda name: json.loads((tmp_path / 'out' / name / 'results' / 'eval_results.json').read_text())
    assert read('killed')['metrics'] == read('whole')['metrics']
    m = lambda name: [(r['epoch'], r['train_loss'], r['val_loss'])
                      for r in json.loads((tmp_path / 'out' / name / 'logs' / 'metrics.json').read_text())]
    assert m('killed') == m('whole')
    meta = killed.metadata
    assert meta['status'] == 'completed'
    assert 'resumed from checkpoint-' in (killed.run_dir / 'logs' / 'training.log').read_text()
    assert list(killed.run_dir.glob('notebook-resumed-*.ipynb'))


# --- the loop -----------------------------------------------------------------------------------------

def test_same_seed_same_history(bundle):
    def history():
        loaders = make_dataloaders(bundle, batch_size=64, seed=5)
        torch.manual_seed(5)                                                  # initial weights
        t = Trainer(create_model('lstm', 11, horizon=3), loaders['train'], loaders['val'],
                    TrainingArgs(epochs=2, progress=False, seed=5))
        t.fit()
        return [(h['train_loss'], h['val_loss']) for h in t.state['history']]
    assert history() == history()


def test_early_stopping_after_patience(bundle):
    train, val = fixed_loaders(bundle, 64)
    t = Trainer(create_model('gru', 11, horizon=3), train, val,
                TrainingArgs(epochs=30, lr=1e-12, patience=2, progress=False, scheduler='constant'))
    summary = t.fit()
    assert summary['stopped_early'] and summary['total_epochs_trained'] <= 4 and summary['best_epoch'] <= 2


def test_accumulating_two_half_batches_equals_one_full_batch(bundle):
    "Without dropout, 2 x 32 accumulated gives the same update as one batch of 64."
    def trained(batch, accumulate):
        torch.manual_seed(0)
        model = create_model('gru', 11, horizon=3, dropout=0.0, head={'dropout': 0.0})
        train, val = fixed_loaders(bundle, batch)
        Trainer(model, train, val, TrainingArgs(epochs=1, accumulation_steps=accumulate, progress=False,
                                                scheduler='constant')).train_epoch()
        return torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(trained(32, 2), trained(64, 1), rtol=1e-4, atol=1e-6)


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)` has been overridden")
def test_gradients_are_clipped(bundle):
    train, val = fixed_loaders(bundle, 64)
    model = create_model('gru', 11, horizon=3)
    t = Trainer(model, train, val, TrainingArgs(epochs=1, grad_clip=1e-3, progress=False))
    norms = []
    real_step = t.optimizer.step
    def step(*a, **k):
        norms.append(torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])).item())
        return real_step(*a, **k)
    t.optimizer.step = step
    t.train_epoch()
    assert norms and max(norms) <= 1e-3 * 1.001


def test_bf16_autocast_on_cpu_trains(bundle):
    train, val = fixed_loaders(bundle, 64)
    t = Trainer(create_model('transformer', 11, horizon=3), train, val,
                TrainingArgs(epochs=1, precision='bf16', progress=False))
    summary = t.fit()
    assert summary['autocast_dtype'] == 'bfloat16' and np.isfinite(summary['best_val_loss'])
    with pytest.raises(ValueError, match='fp16 needs CUDA'):
        Trainer(create_model('gru', 11, horizon=3), train, val, TrainingArgs(precision='fp16', progress=False))


def test_moe_auxiliary_loss_is_added(bundle):
    x, y = next(iter(DataLoader(bundle.train, batch_size=32)))
    model = create_model('moe_transformer', 11, horizon=3)
    train, val = fixed_loaders(bundle, 32)
    with_aux = Trainer(model, train, val, TrainingArgs(aux_loss_weight=1.0, progress=False))
    without = Trainer(model, train, val, TrainingArgs(aux_loss_weight=0.0, progress=False))
    model.eval()
    a, b = with_aux._loss(x, y).item(), without._loss(x, y).item()
    assert a - b == pytest.approx(model.aux_loss().item(), rel=1e-5) and model.aux_loss().item() >= 1.0 - 1e-6


@pytest.mark.parametrize('name, task, ok',
                         [('mse', 'regression', True), ('huber', 'regression', True), ('mae', 'regression', True),
                                            ('ce', 'classification', True), ('auto', 'classification', True),
                                            ('mse', 'classification', False), ('ce', 'regression', False)])
def test_losses_fit_their_task(name, task, ok):
    if ok: assert make_loss(name, task) is not None
    else:
        with pytest.raises(ValueError, match='needs task|does not fit'): make_loss(name, task)


@pytest.mark.parametrize('kwargs, message',
                         [(dict(epochs=0), 'epochs=0'), (dict(lr=-1), 'lr=-1'), (dict(precision='fp8'), 'precision'),
                                             (dict(loss='hinge'), 'loss'), (dict(scheduler='step'), 'scheduler')])
def test_bad_training_args(kwargs, message):
    with pytest.raises(ValueError, match=message): TrainingArgs(**kwargs)


def test_resume_without_a_checkpoint_is_a_clear_error(bundle, tmp_path):
    train, val = fixed_loaders(bundle, 64)
    t = Trainer(create_model('gru', 11, horizon=3), train, val, TrainingArgs(progress=False),
                TrainingManager('600519.SH', 'gru', tmp_path))
    with pytest.raises(FileNotFoundError, match='nothing to resume'):
        t.fit(resume=True)


# --- checkpoints on disk: keep the last N, and a best/ that matches the trainer state ----------------

def test_only_the_last_checkpoints_are_kept_and_resume_stays_exact(bundle, tmp_path):
    train, val = fixed_loaders(bundle, 64)
    args = TrainingArgs(epochs=5, lr=3e-3, patience=None, keep_checkpoints=2, progress=False)
    def trainer(name):
        torch.manual_seed(0)
        manager = TrainingManager('600519.SH', 'gru', tmp_path, run_name=name)
        return Trainer(create_model('gru', 11, horizon=3), train, val, args, manager)
    whole = trainer('whole')
    whole.fit()
    assert [p.name for p in whole.manager.checkpoints()] == ['checkpoint-4', 'checkpoint-5']
    assert (whole.manager.run_dir / 'checkpoints' / 'best' / 'pytorch_model.bin').exists()
    half = trainer('half')
    half.args = TrainingArgs(**{**args.to_dict(), 'epochs': 3})
    half.fit()                                            # "killed" after epoch 3 (a resume restores the scheduler)
    resumed = Trainer(create_model('gru', 11, horizon=3), train, val, args, half.manager)
    resumed.fit(resume=True)
    assert [h['val_loss'] for h in resumed.state['history']] == [h['val_loss'] for h in whole.state['history']]
    assert [p.name for p in half.manager.checkpoints()] == ['checkpoint-4', 'checkpoint-5']


def test_a_crash_between_checkpoint_and_best_still_ends_with_the_best_weights(bundle, tmp_path, monkeypatch):
    "Killed after checkpoint-2 is on disk but before best/ is rewritten: resume must rebuild best/ from checkpoint-2."
    import quantnb.train.runs as runs
    train, val = fixed_loaders(bundle, 64)
    args = TrainingArgs(epochs=2, lr=3e-3, patience=None, progress=False)
    manager = TrainingManager('600519.SH', 'gru', tmp_path, run_name='crash')
    real_save = runs._torch_save
    def crash_on_second_best(obj, path):
        if path.parent.name == 'best' and obj['epoch'] == 2: raise KeyboardInterrupt('killed')
        return real_save(obj, path)
    monkeypatch.setattr(runs, '_torch_save', crash_on_second_best)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(create_model('gru', 11, horizon=3), train, val, args, manager).fit()
    monkeypatch.setattr(runs, '_torch_save', real_save)
    second = manager.load_checkpoint(manager.run_dir / 'checkpoints' / 'checkpoint-2')
    assert second['trainer_state']['best_epoch'] == 2 and manager.best_checkpoint_epoch() == 1   # the crash's footprint
    resumed = Trainer(create_model('gru', 11, horizon=3), train, val, args, manager)
    resumed.fit(resume=True)
    for name, weights in resumed.model.state_dict().items():
        torch.testing.assert_close(weights, second['model_state_dict'][name], rtol=0, atol=0)
    assert manager.best_checkpoint_epoch() == 2
    assert 'rebuilt it from checkpoint-2' in (manager.run_dir / 'logs' / 'training.log').read_text()


# --- non-finite losses --------------------------------------------------------------------------------

def test_a_nan_loss_stops_training_naming_epoch_and_batch(bundle, tmp_path):
    train, val = fixed_loaders(bundle, 64)
    manager = TrainingManager('600519.SH', 'gru', tmp_path, run_name='nan')
    args = TrainingArgs(epochs=3, lr=1e10, grad_clip=None, progress=False)
    t = Trainer(create_model('gru', 11, horizon=3), train, val, args, manager)
    from quantnb.train.trainer import NonFiniteLossError
    with pytest.raises(NonFiniteLossError, match=r'in epoch 1, batch \d+ of 4') as e:
        t.fit()
    assert e.value.epoch == 1 and e.value.batch >= 2      # the first batch's loss is finite: its step blows up
    assert manager.checkpoints() == [] and manager.read_metrics().empty


class NaNAt(torch.utils.data.Dataset):
    "A dataset whose targets are NaN at the given indices."
    def __init__(self, base, bad): self.base, self.bad = base, set(bad)
    def __len__(self): return len(self.base)
    def __getitem__(self, i):
        x, y = self.base[i]
        return x, (y * float('nan')) if i in self.bad else y


def test_skip_leaves_out_the_batches_with_a_nan_loss(bundle):
    data = NaNAt(Subset(bundle.train, range(256)), bad=[70, 200])       # in batches 2 and 4 of 64
    train, val = DataLoader(data, batch_size=64), fixed_loaders(bundle, 64)[1]
    args = TrainingArgs(epochs=2, on_nonfinite='skip', progress=False)
    t = Trainer(create_model('gru', 11, horizon=3), train, val, args)
    summary = t.fit()
    assert [h['skipped_batches'] for h in t.state['history']] == [2, 2]
    assert np.isfinite(summary['best_val_loss']) and all(torch.isfinite(p).all() for p in t.model.parameters())
    stop = Trainer(create_model('gru', 11, horizon=3), train, val, TrainingArgs(epochs=2, progress=False))
    with pytest.raises(FloatingPointError, match='in epoch 1, batch 2 of 4'):
        stop.fit()


def test_a_nan_run_fails_without_metrics(tmp_path):
    from quantnb.core import read_json
    from quantnb.train.pipeline import run_training
    with pytest.raises(FloatingPointError, match='epoch 1, batch'):
        run_training(model='gru', symbols='600519', seq_len=30, epochs=2, lr=1e10, grad_clip=0, out_dir=str(tmp_path),
                     run_name='nan', progress=False, model_kwargs='{"hidden_size": 8, "num_layers": 1}')
    run = tmp_path / 'nan'
    meta = read_json(run / 'metadata.json')
    assert meta['status'] == 'failed' and 'epoch 1, batch' in meta['error'] and meta['eval_metrics'] is None
    assert not (run / 'results' / 'eval_results.json').exists() and not (run / 'model' / 'pytorch_model.bin').exists()
    assert 'training loss is' in (run / 'logs' / 'training.log').read_text()


# --- progress -----------------------------------------------------------------------------------------

def test_progress_in_an_executed_notebook_is_one_line_per_epoch(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    code = ("from torch.utils.data import DataLoader, Subset\n"
            "from quantnb.data.datasets import load_datasets\n"
            "from quantnb.models.core import create_model\n"
            "from quantnb.train.trainer import Trainer, TrainingArgs\n"
            "b = load_datasets('600519.SH', seq_len=20, horizon=3)\n"
            "Trainer(create_model('gru', 11, horizon=3), DataLoader(Subset(b.train, range(256)), batch_size=16),\n"
            "        DataLoader(Subset(b.val, range(64)), batch_size=64), TrainingArgs(epochs=3)).fit();")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    text = ''.join(o.get('text', '') for o in outputs)
    assert all(o.get('output_type') == 'stream' and o['name'] == 'stdout' for o in outputs), outputs
    assert '\r' not in text and '\x1b' not in text and 'IProgress' not in text
    assert [line.split(':')[0] for line in text.splitlines()] == ['epoch 1/3', 'epoch 2/3', 'epoch 3/3']


def test_run_parameters_reach_the_trainer():
    from quantnb.train.pipeline import TrainParams
    assert TrainParams().training_args().keep_checkpoints == 3
    assert TrainParams(keep_checkpoints=0).training_args().keep_checkpoints is None      # 0: keep every checkpoint
    assert TrainParams(on_nonfinite='skip').training_args().on_nonfinite == 'skip'
    with pytest.raises(ValueError, match='on_nonfinite'): TrainParams(on_nonfinite='ignore')
