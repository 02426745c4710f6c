"""Masked pretraining: masks, loss on hidden days only, every backbone, pretraining runs with provenance."""

import numpy as np
import pytest
import torch

from quantnb.core import read_json, sha256_file
from quantnb.models.core import ModelConfig
from quantnb.pretrain import (MaskedMSELoss, MaskedWindows, build_pretrainer, make_mask, neighbour_fill,
                              random_mask, span_mask, unpack)
from quantnb.train.pipeline import run_training


@pytest.mark.parametrize('ratio, span', [(0.15, 3), (0.3, 5), (0.5, 2)])
def test_span_masks_hide_the_ratio_in_geometric_stretches(ratio, span):
    torch.manual_seed(1)
    masks = torch.stack([span_mask(200, ratio, span) for _ in range(800)])
    assert abs(masks.float().mean().item() - ratio) < 0.02
    lengths = [len(s) for row in masks.int().tolist() for s in ''.join(map(str, row)).split('0') if s]
    assert abs(np.mean(lengths) - span) < 0.25 * span
    assert masks.any(dim=1).all()


def test_random_masks_hide_an_exact_count_and_never_nothing():
    torch.manual_seed(0)
    assert all(random_mask(50, 0.2).sum() == 10 for _ in range(20))
    assert random_mask(10, 0.01).sum() == 1
    with pytest.raises(ValueError, match='mask'):
        make_mask(20, 0.2, 'blocks')


def test_loss_counts_hidden_days_only():
    torch.manual_seed(0)
    x = torch.randn(4, 20, 5)
    mask = torch.zeros(4, 20, 1); mask[:, 3:6] = 1
    packed = torch.cat([x, mask], -1)
    pred = x.clone(); pred[:, 3:6] += 1.0                      # wrong by 1 on hidden days
    assert MaskedMSELoss()(pred, packed).item() == pytest.approx(1.0)
    pred[:, 10:] += 100.0                                       # visible days do not count
    assert MaskedMSELoss()(pred, packed).item() == pytest.approx(1.0)


def test_neighbour_fill_averages_the_nearest_visible_days():
    x = torch.tensor([[[1.0], [9.0], [9.0], [3.0], [9.0]]])
    mask = torch.tensor([[[0.0], [1.0], [1.0], [0.0], [1.0]]])
    filled = neighbour_fill(torch.cat([x, mask], -1))
    assert filled[0, :, 0].tolist() == [1.0, 2.0, 2.0, 3.0, 3.0]


def test_learned_token_replaces_hidden_days_and_learns():
    model = build_pretrainer(ModelConfig('gru', 5, task='masked', head={'mask_token': 'learned'}))
    packed = torch.cat([torch.randn(8, 12, 5), (torch.rand(8, 12, 1) < 0.3).float()], -1)
    MaskedMSELoss()(model(packed), packed).backward()
    assert model.head.mask_token.grad is not None and model.head.mask_token.grad.abs().sum() > 0
    frozen = build_pretrainer(ModelConfig('gru', 5, task='masked', head={'mask_token': 'zero'}))
    assert 'head.mask_token' not in dict(frozen.named_parameters()) and 'head.mask_token' in frozen.state_dict()
    x, mask = unpack(packed)
    assert torch.equal(frozen.head.hide(x, mask)[mask.expand_as(x)], torch.zeros(int(mask.expand_as(x).sum())))


@pytest.mark.parametrize('name',
                         ['lstm', 'gru', 'attention_lstm', 'transformer', 'enhanced_transformer', 'moe_transformer'])
def test_every_backbone_of_the_zoo_pretrains(name):
    """One mechanism for all: a masked step on real-shaped input gives a finite loss and gradients in every backbone
    parameter."""
    torch.manual_seed(0)
    model = build_pretrainer(ModelConfig(name, 11, task='masked', seq_len=30))
    packed = torch.cat([torch.randn(16, 30, 11), (torch.rand(16, 30, 1) < 0.2).float()], -1)
    loss = MaskedMSELoss()(model(packed), packed) + 0.01 * model.aux_loss()
    loss.backward()
    assert torch.isfinite(loss)
    dead = [n for n, p in model.named_parameters()
            if n.startswith('backbone.') and (p.grad is None or p.grad.abs().sum() == 0)]
    # attention_lstm's attention pooling serves a task head, which a per-step reconstruction head never calls
    assert [n for n in dead if not (name == 'attention_lstm' and n.startswith('backbone.attention.'))] == []
    assert {n.split('.')[0] for n, _ in model.named_parameters()} == {'backbone', 'head'}


def test_masked_windows_pack_a_fresh_mask_each_time():
    from quantnb.data.datasets import load_datasets
    bundle = load_datasets('600519.SH', seq_len=30, horizon=7)
    ds = MaskedWindows(bundle.train, 0.2, 'random')
    torch.manual_seed(0)
    (a, a2), (b, _) = ds[3], ds[3]
    assert a.shape == (30, 12) and torch.equal(a, a2)
    assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.equal(a[:, -1], b[:, -1])


def test_a_pretraining_run_records_provenance_and_beats_its_baselines(pretrained_transformer):
    m = pretrained_transformer[1].manager
    config = m.load_model_config()
    assert config['task'] == 'pretrain' and config['model']['task'] == 'masked'
    pre = config['pretraining']
    assert pre['pretext'] == 'masked' and len(pre['symbols']) == 5 and pre['optimizer_steps'] > 200
    assert pre['data_range'][0] < pre['data_range'][1]
    assert config['weights_sha256'] == sha256_file(m.get_model_path())
    results = read_json(m.run_dir / 'results' / 'eval_results.json')
    assert results['metrics']['masked_mse'] < results['baselines']['zero']['masked_mse']
    assert m.run_name.startswith('transformer_') and (m.run_dir / 'plots' / 'reconstruction.png').exists()


def test_returns_pretext_is_a_regression_pretraining_run(tmp_path):
    run = run_training(model='gru', task='pretrain', pretext='returns', symbols='600519,000001', epochs=1, seq_len=30,
                       model_kwargs='{"hidden_size": 16}', out_dir=str(tmp_path), progress=False)
    config = run.manager.load_model_config()
    assert config['model']['task'] == 'regression' and config['pretraining']['pretext'] == 'returns'
    assert 'baselines' in read_json(run.manager.run_dir / 'results' / 'eval_results.json')
