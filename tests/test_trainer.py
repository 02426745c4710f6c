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
    return load_datasets('600519', seq_len=20, horizon=3)


def fixed_loaders(bundle, batch_size, n=256):
    "Unshuffled loaders over the first n training samples, so two trainers see the same batches."
    return DataLoader(Subset(bundle.train, range(n)), batch_size=batch_size), DataLoader(Subset(bundle.val, range(128)), batch_size=64)


# --- exact resume after a kill -----------------------------------------------------------------------

TRAIN = ("from quantnb.train.pipeline import run_training; "
         "run_training(model='gru', symbols='600519,000001,600036,000858,601318', seq_len=40, epochs=6, patience=0, "
         "checkpoint_every=1, seed=3, out_dir={out!r}, run_name={name!r}, progress=False)")


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    out = str(tmp_path / 'out')
    whole = subprocess.run([sys.executable, '-c', TRAIN.format(out=out, name='whole')], capture_output=True, text=True, timeout=600)
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
    m = lambda name: [(r['epoch'], r['train_loss'], r['val_loss']) for r in json.loads((tmp_path / 'out' / name / 'logs' / 'metrics.json').read_text())]
    assert m('killed') == m('whole')
    meta = killed.metadata
    assert meta['status'] == 'completed' and 'resumed from checkpoint-' in (killed.run_dir / 'logs' / 'training.log').read_text()
    assert list(killed.run_dir.glob('notebook-resumed-*.ipynb'))


# --- the loop -----------------------------------------------------------------------------------------

def test_same_seed_same_history(bundle):
    def history():
        loaders = make_dataloaders(bundle, batch_size=64, seed=5)
        torch.manual_seed(5)                                                  # initial weights
        t = Trainer(create_model('lstm', 11, horizon=3), loaders['train'], loaders['val'], TrainingArgs(epochs=2, progress=False, seed=5))
        t.fit()
        return [(h['train_loss'], h['val_loss']) for h in t.state['history']]
    assert history() == history()


def test_early_stopping_after_patience(bundle):
    train, val = fixed_loaders(bundle, 64)
    t = Trainer(create_model('gru', 11, horizon=3), train, val, TrainingArgs(epochs=30, lr=1e-12, patience=2, progress=False, scheduler='constant'))
    summary = t.fit()
    assert summary['stopped_early'] and summary['total_epochs_trained'] <= 4 and summary['best_epoch'] <= 2


def test_accumulating_two_half_batches_equals_one_full_batch(bundle):
    "Without dropout, 2 x 32 accumulated gives the same update as one batch of 64."
    def trained(batch, accumulate):
        torch.manual_seed(0)
        model = create_model('gru', 11, horizon=3, dropout=0.0, head={'dropout': 0.0})
        train, val = fixed_loaders(bundle, batch)
        Trainer(model, train, val, TrainingArgs(epochs=1, accumulation_steps=accumulate, progress=False, scheduler='constant')).train_epoch()
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
    t = Trainer(create_model('transformer', 11, horizon=3), train, val, TrainingArgs(epochs=1, precision='bf16', progress=False))
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


@pytest.mark.parametrize('name, task, ok', [('mse', 'regression', True), ('huber', 'regression', True), ('mae', 'regression', True),
                                            ('ce', 'classification', True), ('auto', 'classification', True),
                                            ('mse', 'classification', False), ('ce', 'regression', False)])
def test_losses_fit_their_task(name, task, ok):
    if ok: assert make_loss(name, task) is not None
    else:
        with pytest.raises(ValueError, match='needs task|does not fit'): make_loss(name, task)


@pytest.mark.parametrize('kwargs, message', [(dict(epochs=0), 'epochs=0'), (dict(lr=-1), 'lr=-1'), (dict(precision='fp8'), 'precision'),
                                             (dict(loss='hinge'), 'loss'), (dict(scheduler='step'), 'scheduler')])
def test_bad_training_args(kwargs, message):
    with pytest.raises(ValueError, match=message): TrainingArgs(**kwargs)


def test_resume_without_a_checkpoint_is_a_clear_error(bundle, tmp_path):
    train, val = fixed_loaders(bundle, 64)
    t = Trainer(create_model('gru', 11, horizon=3), train, val, TrainingArgs(progress=False), TrainingManager('600519', 'gru', tmp_path))
    with pytest.raises(FileNotFoundError, match='nothing to resume'):
        t.fit(resume=True)
