"""Weight transfer with a full report, and verification that tells pretrained from random at any size."""
import json, shutil

import pytest
import torch

from quantnb.core import read_json, sha256_file, write_json
from quantnb.models.core import create_model
from quantnb.train.pipeline import run_training
from quantnb.train.runs import TrainingManager
from quantnb.transfer import (NotAQuantnbCheckpoint, PretrainedCheckError, TransferError, load_pretrained,
                              verify_pretrained)


from conftest import SMALL_TRANSFORMER


def small_transformer(**kw):
    return create_model('transformer', 11, seq_len=30, **{**json.loads(SMALL_TRANSFORMER), **kw})


@pytest.fixture(scope='module')
def runs(pretrained_transformer):
    out, pre = pretrained_transformer
    lstm = run_training(model='lstm', task='pretrain', symbols='600519.SH', epochs=1, seq_len=30,
                        model_kwargs='{"hidden_size": 16}', out_dir=str(out), progress=False)
    return out, pre, lstm


def test_an_lstm_checkpoint_offered_to_a_transformer_is_refused_with_a_report(runs):
    "An LSTM pretraining checkpoint offered to a transformer: nothing loads silently."
    out, _, lstm = runs
    target = small_transformer()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(TransferError) as err:
        load_pretrained(target, lstm.manager.run_name, output_dir=out, verbose=False)
    report = err.value.report
    assert not report.accepted and report.fraction_loaded == 0.0 and report.backbone_parameters_loaded == 0
    assert any('architecture differs: checkpoint is lstm' in p for p in report.problems)
    assert 'backbone.input_proj.weight' in report.missing_in_checkpoint and report.unexpected
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())        # the model was not touched
    assert 'REFUSED' in str(err.value) and '0.0%' in str(err.value)


def test_pretrain_then_finetune_loads_every_backbone_parameter(runs):
    out, pre, _ = runs
    run = run_training(model='transformer', symbols='600519.SH', pretrained=pre.manager.run_name, epochs=2, seq_len=30,
                       freeze_epochs=1, out_dir=str(out), progress=False)
    d = run.manager.run_dir
    report = read_json(d / 'results' / 'transfer_report.json')
    verification = read_json(d / 'results' / 'pretrained_verification.json')
    assert report['accepted'] and report['fraction_loaded'] == 1.0 and not report['missing_in_checkpoint']
    assert not report['shape_mismatches']
    backbone = [p for n, p in run.model.named_parameters() if n.startswith('backbone.')]
    assert report['backbone_parameters'] == sum(p.numel() for p in backbone)
    assert set(report['excluded_by_rule']) >= {'head.mask_token', 'head.proj.weight'}
    assert verification['verdict'] == 'pretrained'
    meta = run.manager.metadata
    assert meta['status'] == 'completed' and meta['pretrained_from'] == pre.manager.run_name
    assert meta['transfer_fraction'] == 1.0
    assert 'TransferReport' in (d / 'logs' / 'training.log').read_text()


def test_the_frozen_epoch_trains_only_the_head(runs):
    from quantnb.data.datasets import load_datasets, make_dataloaders
    from quantnb.train.trainer import Trainer, TrainingArgs
    out, pre, _ = runs
    bundle = load_datasets('600519.SH', seq_len=30, horizon=7)
    model = small_transformer()
    load_pretrained(model, pre.manager.run_name, output_dir=out, verbose=False)
    backbone = {k: v.clone() for k, v in model.state_dict().items() if k.startswith('backbone.')}
    head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith('head.')}
    loaders = make_dataloaders(bundle, batch_size=64)
    Trainer(model, loaders['train'], loaders['val'],
            TrainingArgs(epochs=1, freeze_backbone_epochs=1, progress=False)).fit()
    assert all(torch.equal(backbone[k], model.state_dict()[k]) for k in backbone)
    assert any(not torch.equal(head[k], model.state_dict()[k]) for k in head)


@pytest.mark.parametrize('name, size',
                         [('lstm', 32), ('lstm', 64), ('lstm', 512), ('gru', 32), ('gru', 128), ('gru', 512),
                                        ('transformer', 32), ('transformer', 128), ('transformer', 256)])
@pytest.mark.parametrize('seed', [0, 1])
def test_fresh_models_of_any_size_are_random(name, size, seed):
    torch.manual_seed(seed)
    kw = {'hidden_size': size} if name != 'transformer' else {'d_model': size, 'head_dim': size // 4,
                                                              'ffn_dim': 4 * size}
    model = create_model(name, 45, **kw)
    report = verify_pretrained(model)
    assert report.verdict == 'random', str(report)
    if name == 'lstm' and size == 64:        # a 'std > 0.05 means pretrained' rule would pass it
        assert min(r['std'] for r in report.weights) > 0.05


def test_a_checkpoint_trained_a_few_hundred_steps_is_pretrained(runs):
    out, pre, _ = runs
    assert read_json(pre.manager.run_dir / 'model' / 'config.json')['pretraining']['optimizer_steps'] >= 200
    report = verify_pretrained(pre.manager.run_name, output_dir=out)
    assert report.verdict == 'pretrained', str(report)
    assert report.functional['ratio'] < 0.9 and report.provenance['checksum_ok'] is True and report.moved_share > 0.5
    supervised = run_training(model='gru', symbols='600519.SH', epochs=2, seq_len=30, batch_size=16,
                              model_kwargs='{"hidden_size": 16}',
                              out_dir=str(out), progress=False)   # ~250 optimiser steps
    assert read_json(supervised.manager.run_dir / 'model' / 'training_args.json')['total_epochs_trained'] == 2
    assert verify_pretrained(supervised.manager.run_name, output_dir=out).verdict == 'pretrained'


def test_a_random_file_called_pretrained_stops_training(runs, tmp_path):
    "An initialisation saved as 'pretrained' before it was trained. The run stops before training."
    out, pre, _ = runs
    fake = out / 'untrained_pretrained'
    shutil.copytree(pre.manager.run_dir, fake)
    config = read_json(fake / 'model' / 'config.json')
    from quantnb.pretrain import build_pretrainer
    torch.save(build_pretrainer(config['model']).state_dict(), fake / 'model' / 'pytorch_model.bin')
    write_json(fake / 'model' / 'config.json',
               {**config, 'weights_sha256': sha256_file(fake / 'model' / 'pytorch_model.bin')})
    assert verify_pretrained('untrained_pretrained', output_dir=out).verdict == 'random'
    with pytest.raises(PretrainedCheckError, match='not a usable pretrained checkpoint'):
        run_training(model='transformer', symbols='600519.SH', pretrained='untrained_pretrained', epochs=1, seq_len=30,
                     out_dir=str(out), progress=False)
    failed = [m for m in TrainingManager.list_runs(out) if m['status'] == 'failed']
    assert failed and 'RANDOM' in failed[-1]['error']
    run_dir = out / failed[-1]['run_name']
    assert read_json(run_dir / 'results' / 'pretrained_verification.json')['verdict'] == 'random'
    assert not list((run_dir / 'checkpoints').glob('checkpoint-*'))                     # no training happened


def test_what_is_not_a_quantnb_checkpoint_is_refused(runs, tmp_path):
    out, pre, _ = runs
    loose = tmp_path / 'vit_small_pretrained_init.pth'
    torch.save(small_transformer().state_dict(), loose)
    with pytest.raises(NotAQuantnbCheckpoint, match='not a quantnb checkpoint'):
        load_pretrained(small_transformer(), loose, verbose=False)
    replaced = out / 'replaced'
    shutil.copytree(pre.manager.run_dir, replaced)
    torch.save(torch.load(replaced / 'model' / 'pytorch_model.bin', weights_only=True) | {},
               replaced / 'model' / 'pytorch_model.bin')
    with pytest.raises(NotAQuantnbCheckpoint, match='SHA-256 differs'):
        load_pretrained(small_transformer(), 'replaced', output_dir=out, verbose=False)
    with pytest.raises(NotAQuantnbCheckpoint, match='no such run'):
        load_pretrained(small_transformer(), 'nope', output_dir=out, verbose=False)


def test_feature_and_window_mismatches_are_refused(runs):
    out, pre, _ = runs
    model = small_transformer()
    names = pre.bundle.feature_names
    with pytest.raises(TransferError, match='feature names differ'):
        load_pretrained(model, pre.manager.run_name, output_dir=out, feature_names=names[::-1], verbose=False)
    with pytest.raises(TransferError, match='seq_len differs'):
        load_pretrained(model, pre.manager.run_name, output_dir=out, seq_len=60, verbose=False)


def test_partial_loading_is_explicit(runs):
    out, pre, _ = runs
    deeper = small_transformer(n_layers=3)
    with pytest.raises(TransferError, match='would load'):
        load_pretrained(deeper, pre.manager.run_name, output_dir=out, verbose=False)
    report = load_pretrained(deeper, pre.manager.run_name, output_dir=out, min_fraction=0.5, verbose=False)
    assert report.accepted and 0.5 < report.fraction_loaded < 1
    assert any('blocks.2' in k for k in report.missing_in_checkpoint)
