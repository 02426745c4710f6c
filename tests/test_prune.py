"""Pruning: masks that survive AdamW, IMP compounding, structured removal equal to its masked twin for every family,
Refill's and RSST's choices, FLOPs, and pruning runs saved into and reloaded from out/."""
import copy, json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from quantnb.core import set_seed
from quantnb.models.core import ModelConfig, build_model, count_parameters, create_model
from quantnb.prune.masks import (MaskKeeper, PruningTrainer, apply_masks, global_magnitude_masks, prunable_weights,
                                 random_masks_like, sparsity_report)
from quantnb.prune.structured import (GroupPenalty, count_flops, load_pruned_model, random_units,
                                      refill_selection, remove_units, run_pruning, structured_masks, top_units,
                                      uniform_counts, unit_groups, unit_scores)
from quantnb.train.runs import TrainingManager
from quantnb.train.trainer import TrainingArgs

SEQ_LEN = 20
TINY = {   # small enough to train in a second, with every kind of unit
    'transformer': dict(d_model=16, n_layers=2, n_heads=4, head_dim=4, ffn_dim=24),
    'enhanced_transformer': dict(d_model=16, n_layers=2, n_heads=4, qk_nope_dim=4, qk_rope_dim=2, v_dim=4,
                                 kv_lora_rank=8, ffn_dim=24),
    'moe_transformer': dict(d_model=16, n_layers=2, n_heads=4, qk_nope_dim=4, qk_rope_dim=2, v_dim=4, kv_lora_rank=8,
                            num_experts=3, top_k=2, expert_ffn_dim=12),
    'lstm': dict(hidden_size=12, num_layers=2),
    'gru': dict(hidden_size=12, num_layers=3),
}
QUICK = dict(seq_len=SEQ_LEN, batch_size=256, latency_batch=16, progress=False, patience=0)


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def bundle():
    from quantnb.data.datasets import load_datasets
    return load_datasets('600519.SH', seq_len=SEQ_LEN, horizon=7)


@pytest.fixture(scope='module')
def windows(bundle):
    "48 real, normalised 600519 windows `[48, 20, 11]` and their 7-day targets."
    idx = np.linspace(0, len(bundle.train) - 1, 48).astype(int)
    x, y = zip(*(bundle.train[int(i)] for i in idx))
    return torch.stack(x), torch.stack(y)


@pytest.fixture(scope='module')
def loaders(bundle):
    from quantnb.data.datasets import make_dataloaders
    return make_dataloaders(bundle, batch_size=256, seed=0)


def tiny(name, task='regression', seed=0, **kw):
    set_seed(seed)
    return create_model(name, 11, task=task, seq_len=SEQ_LEN, **{**TINY.get(name, {}), **kw})


def loud(model, std=0.3, seed=1):
    "Large random weights, so that every unit visibly changes the output (a wrong slice cannot hide)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if not n.endswith('norm.weight'): p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


# ---------------------------------------------------------------------------------------------- unstructured

@pytest.mark.parametrize('name', ['gru', 'transformer'])
def test_masks_stay_applied_through_adamw_with_weight_decay(windows, name):
    x, y = windows
    model = tiny(name)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.5)
    for _ in range(10):                                   # momentum for every weight
        opt.zero_grad(); F.mse_loss(model(x), y).backward(); opt.step()
    masks = global_magnitude_masks(model, 0.6)
    twin = copy.deepcopy(model)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=3e-2,
                                 weight_decay=0.5); twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    keeper = MaskKeeper(model, masks).attach(opt)
    apply_masks(twin, masks)                              # the control: zeroed once, no keeper
    for _ in range(30):
        for m, o in ((model, opt), (twin, twin_opt)):
            o.zero_grad(); F.mse_loss(m(x), y).backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); o.step()
    params, twin_params = dict(model.named_parameters()), dict(twin.named_parameters())
    for n, m in masks.items():
        assert (params[n][~m] == 0).all(), n
        assert (params[n].grad[~m] == 0).all(), n
        for key in ('exp_avg', 'exp_avg_sq'): assert (opt.state[params[n]][key][~m] == 0).all(), (n, key)
        assert (params[n][m] != 0).all(), n               # survivors train on
    assert sum(int((twin_params[n][~m] != 0).sum()) for n, m in masks.items()) > 0   # without the keeper they come back
    keeper.detach()
    assert sparsity_report(model).loc['global', 'sparsity'] == pytest.approx(0.6, abs=1e-3)


def test_pruning_trainer_keeps_masks_and_snapshots(loaders):
    model = tiny('lstm')
    masks = global_magnitude_masks(model, 0.7)
    args = TrainingArgs(epochs=2, lr=1e-2, weight_decay=0.3, progress=False, patience=None)
    trainer = PruningTrainer(model, loaders['train'], loaders['val'], args, masks=masks, snapshot_epochs=[1])
    trainer.fit()
    params = dict(model.named_parameters())
    assert all((params[n][~m] == 0).all() and (params[n][m] != 0).all() for n, m in masks.items())
    assert list(trainer.snapshots) == [1]
    assert all((trainer.snapshots[1][n][~m] == 0).all() for n, m in masks.items())
    assert trainer.steps_done == trainer.total_steps and trainer.progress == 1.0
    assert not any(p._backward_hooks for p in model.parameters())   # the keeper let go after fit


def test_imp_sparsity_compounds_and_ranks_globally():
    model = loud(tiny('transformer'))
    names = list(prunable_weights(model))
    assert 'backbone.pos_emb.weight' not in names and 'head.fc2.weight' in names
    total = sum(p.numel() for p in prunable_weights(model).values())
    masks, alive = None, total
    for k in range(1, 6):
        new = global_magnitude_masks(model, 0.3, masks)
        expected = alive - round(0.3 * alive)
        assert sum(int(m.sum()) for m in new.values()) == expected
        assert abs(expected / total - 0.7 ** k) <= k / total
        if masks is not None: assert all((new[n] <= masks[n]).all() for n in names)   # pruned stays pruned
        params = dict(model.named_parameters())
        newly = torch.cat([params[n].detach().abs()[(masks[n] if masks else torch.ones_like(new[n])) & ~new[n]]
                           for n in names])
        kept = torch.cat([params[n].detach().abs()[new[n]] for n in names])
        assert newly.max() <= kept.min()                  # the smallest went, whatever their layer
        masks, alive = new, expected
    sparsities = [1 - m.float().mean().item() for m in masks.values()]
    assert max(sparsities) - min(sparsities) > 0.01       # global, not the same share per layer


def test_random_controls_keep_per_layer_counts():
    model = tiny('gru')
    masks = global_magnitude_masks(loud(model), 0.5)
    rnd = random_masks_like(masks, seed=3)
    assert {n: int(m.sum()) for n, m in rnd.items()} == {n: int(m.sum()) for n, m in masks.items()}
    assert any(not torch.equal(rnd[n], masks[n]) for n in masks)
    groups = unit_groups(model)
    counts = uniform_counts(groups, 0.5)
    chosen = random_units(groups, counts, seed=1)
    assert {g: len(v) for g, v in chosen.items()} == counts


# ---------------------------------------------------------------------------------------------- structured removal

TWINS = [('transformer', 'regression', None), ('transformer', 'classification', ['heads']),
         ('enhanced_transformer', 'regression', None), ('moe_transformer', 'classification', None),
         ('lstm', 'regression', None), ('gru', 'classification', None), ('gru', 'regression', ['head']),
         ('attention_lstm', 'regression', None)]


@pytest.mark.parametrize('name, task, kinds', TWINS, ids=lambda v: str(v))
def test_removed_units_compute_what_the_masked_twin_computes(windows, name, task, kinds):
    x = windows[0]
    model = loud(tiny(name, task)).eval()
    groups = unit_groups(model, kinds)
    assert groups and (kinds is None or {g.kind for g in groups} == set(kinds))
    keep = random_units(groups, {g.name: max(1, g.n_units // 3 + i % 2) for i, g in enumerate(groups)}, seed=7)
    small = remove_units(model, keep, groups).eval()
    twin = apply_masks(copy.deepcopy(model), structured_masks(model, keep, groups)).eval()
    with torch.no_grad(): out, out_twin, out_full = small(x), twin(x), model(x)
    torch.testing.assert_close(out, out_twin, rtol=1e-4, atol=1e-5)
    assert (out - out_full).abs().max() > 1e-3                    # the removal did change the model
    assert count_parameters(small) < count_parameters(model)
    rebuilt = build_model(ModelConfig.from_json(small.config.to_json()))
    rebuilt.load_state_dict(small.state_dict(), strict=True)     # the config describes the smaller model
    assert {g.name: g.n_units for g in unit_groups(small, kinds)} == {n: len(v) for n, v in keep.items()}


def test_recurrent_units_take_all_their_gates_and_outgoing_weights(windows):
    "Removing LSTM unit j drops rows j of all four gate blocks, column j of W_hh, of the next layer and of the head."
    model = loud(tiny('lstm')).eval()
    groups = unit_groups(model, ['units'])
    keep = {'backbone.rnn.l0': torch.tensor([0, 3, 4, 9]), 'backbone.rnn.l1': torch.tensor([1, 2, 11])}
    small = remove_units(model, keep, groups)
    W, w = dict(model.named_parameters()), dict(small.named_parameters())
    rows0 = torch.cat([g * 12 + keep['backbone.rnn.l0'] for g in range(4)])
    torch.testing.assert_close(w['backbone.rnn.weight_ih_l0'], W['backbone.rnn.weight_ih_l0'][rows0])
    torch.testing.assert_close(w['backbone.rnn.weight_hh_l0'],
                               W['backbone.rnn.weight_hh_l0'][rows0][:, keep['backbone.rnn.l0']])
    rows1 = torch.cat([g * 12 + keep['backbone.rnn.l1'] for g in range(4)])
    torch.testing.assert_close(w['backbone.rnn.weight_ih_l1'],
                               W['backbone.rnn.weight_ih_l1'][rows1][:, keep['backbone.rnn.l0']])
    torch.testing.assert_close(w['head.fc1.weight'], W['head.fc1.weight'][:, keep['backbone.rnn.l1']])
    assert small.config.backbone['hidden_size'] == [4, 3]
    with pytest.raises(ValueError, match='distinct units'): remove_units(model, {'backbone.rnn.l0': [1, 1]}, groups)


# ---------------------------------------------------------------------------------------------- Refill and RSST

def _big_units(model, groups, chosen, small=0.01, big=1.0, seed=0):
    "Weights of the `chosen` units (group -> unit indices) large, every other weight of the groups small."
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for grp in groups:
            for s in grp.slices:
                p = params[s.param]
                p.copy_(torch.randn(p.shape, generator=g).sign() * small)
        for grp in groups:
            idx = torch.as_tensor(chosen[grp.name])
            for s in grp.slices:
                p = params[s.param]
                p.index_fill_(s.dim, s.index(idx, grp.n_units), 0.0)
                p.index_add_(s.dim, s.index(idx, grp.n_units),
                             torch.full_like(p.index_select(s.dim, s.index(idx, grp.n_units)), big))


def test_refill_keeps_the_units_with_most_surviving_weights():
    model = tiny('transformer', n_layers=1)
    groups = unit_groups(model)
    chosen = {'backbone.blocks.0.attn': [1, 3], 'backbone.blocks.0.ffn': [0, 5, 6, 7, 20], 'head': [2, 9, 15]}
    _big_units(model, groups, chosen)
    params = dict(model.named_parameters())
    weights = {s.param for g in groups for s in g.slices if params[s.param].ndim >= 2}
    n_big = sum(int((params[n].abs() > 0.5).sum()) for n in weights)
    total = sum(params[n].numel() for n in weights)
    # the round removes exactly the small weights
    keep, masks = refill_selection(model, groups, rate=1 - n_big / total)
    # whole units refilled, as many as survivors fill
    assert {g: v.tolist() for g, v in keep.items()} == chosen
    keep_half, _ = refill_selection(model, groups, rate=1 - n_big / total, refill_rate=0.5)
    for g in groups:
        k = len(chosen[g.name])
        assert len(keep_half[g.name]) == round(k + 0.5 * (g.n_units - k))
        assert set(chosen[g.name]) <= set(keep_half[g.name].tolist())


def test_refill_counts_survivors_across_lstm_gate_blocks():
    model = loud(tiny('lstm'))
    groups = unit_groups(model)
    keep, masks = refill_selection(model, groups, rate=0.6)
    for g in groups:   # count survivors of unit u element by element, from the gate layout
        n, counts = g.n_units, torch.zeros(g.n_units)
        for s in g.slices:
            if s.param not in masks: continue
            m = masks[s.param].movedim(s.dim, 0)
            for pos in range(m.shape[0]):
                counts[(pos % (n * s.width)) // s.width] += m[pos].sum()
        ranked = torch.argsort(counts, descending=True, stable=True)
        assert counts[keep[g.name]].min() >= counts[ranked[len(keep[g.name]) - 1]]   # the kept ones are the top counts


def test_rsst_penalty_grows_and_drives_the_doomed_units_to_zero(bundle):
    "With Adam the pull of the penalty is bounded by the learning rate per step, so this trains for ~120 steps."
    from quantnb.data.datasets import make_dataloaders
    loaders = make_dataloaders(bundle, batch_size=64, seed=0)
    model = tiny('transformer')
    groups = unit_groups(model)
    keep = top_units(unit_scores(model, groups), uniform_counts(groups, 0.5))
    doomed = {g.name: torch.tensor(sorted(set(range(g.n_units)) - set(keep[g.name].tolist()))) for g in groups}
    penalty = GroupPenalty(model, doomed, groups, lambda_max=10.0, exponent=2.0)
    assert penalty.strength(0.0) == 0 and penalty.strength(0.5) == 2.5 and penalty.strength(1.0) == 10.0
    model.zero_grad(); penalty(1.0).backward()     # gradient 2 * lambda * w on the doomed weights, nothing elsewhere
    doomed_masks = {n: ~m for n, m in structured_masks(model, keep, groups).items()}
    for n, p in model.named_parameters():
        expected = 20.0 * p.detach() * doomed_masks[n] if n in doomed_masks else torch.zeros_like(p)
        torch.testing.assert_close(p.grad if p.grad is not None else torch.zeros_like(p), expected)
    before_doomed = penalty.unit_norms()
    before_kept = unit_scores(model, groups)
    args = TrainingArgs(epochs=4, lr=1e-2, progress=False, patience=None)
    PruningTrainer(model, loaders['train'], loaders['val'], args, penalty=penalty, restore_best=False).fit()
    after_doomed, after_kept = penalty.unit_norms(), unit_scores(model, groups)
    norm = lambda scores, sel=None: float(sum((s if sel is None else s[sel[g]]).pow(2).sum()
                                              for g, s in scores.items()).sqrt())
    assert norm(after_doomed) < 0.1 * norm(before_doomed)                 # the penalised units shrank towards zero ...
    assert norm(after_kept, keep) > 0.5 * norm(before_kept, keep)         # ... the others did not
    x = torch.stack([loaders['val'].dataset[i][0] for i in range(64)])
    model.eval()
    with torch.no_grad(): drift = (remove_units(model, keep, groups).eval()(x) - model(x)).abs().max()
    assert drift < 2e-3                                              # so removing them changes little


# ---------------------------------------------------------------------------------------------- FLOPs

def test_flop_count_agrees_with_flop_counter_mode(windows):
    x = windows[0][:2]
    gru = tiny('gru').eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad(): gru(x)
    assert count_flops(gru, x) == fc.get_total_flops()
    tf = tiny('transformer').eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad(): tf(x)
    # layers * batch * heads * T * T * (scores + mixing) * head_dim
    attention = 2 * 2 * (2 * 4 * SEQ_LEN * SEQ_LEN * 2 * 4)
    assert count_flops(tf, x) == fc.get_total_flops() + attention   # FlopCounterMode does not see SDPA on the CPU
    masks = global_magnitude_masks(tf, 0.5)
    apply_masks(tf, masks)
    assert count_flops(tf, x) > count_flops(tf, x, sparse=True)     # zeros cost the same in dense kernels


# ---------------------------------------------------------------------------------------------- runs

def test_prune_params_are_checked_before_anything_runs(tmp_path):
    for bad, match in [({'prune': 'obd'}, "prune='obd'"), ({'prune_rate': 1.0}, 'between 0 and 1'),
                       ({'rewind_epoch': 30, 'epochs': 3}, 'rewind_epoch=30'),
                       ({'random_control': 'some'}, 'random_control'),
                       ({'prune_units': 'neurons'}, "unknown \\['neurons'\\]"), ({'model': 'rnn'}, 'is not a model')]:
        with pytest.raises(ValueError, match=match): run_pruning(out_dir=str(tmp_path), **bad)
    assert not any(tmp_path.iterdir())   # nothing was created


def test_imp_run_records_states_masks_and_a_random_control(tmp_path):
    run = run_pruning('imp', 0.5, 3, rewind_epoch=1, model='gru', epochs=2, out_dir=str(tmp_path),
                      model_kwargs=json.dumps(TINY['gru']), **QUICK)
    d = run.manager.run_dir
    table = json.loads((d / 'results' / 'pruning.json').read_text())
    rows = {r['label']: r for r in table['table']}
    assert list(rows) == ['state-0', 'state-1', 'state-2', 'random-2']
    assert [round(s['weight_sparsity']['global'], 6) for s in table['states']] == [0.0, 0.5, 0.75]
    assert rows['random-2']['nonzero_parameters'] == rows['state-2']['nonzero_parameters']
    for label in ('state-1', 'state-2', 'random-2'):
        ckpt = run.manager.load_checkpoint(d / 'checkpoints' / label)
        for n, m in ckpt['masks'].items(): assert (ckpt['model_state_dict'][n][~m] == 0).all()
        assert json.loads((d / 'checkpoints' / label / 'metrics.json').read_text())['flops'] > 0
    assert not torch.equal(run.rewind_weights['backbone.rnn.weight_ih_l0'],
                           run.init_weights['backbone.rnn.weight_ih_l0'])
    assert not torch.equal(run.rewind_weights['backbone.rnn.weight_ih_l0'],
                           run.dense_trained['backbone.rnn.weight_ih_l0'])
    assert (d / 'plots' / 'pruning.png').stat().st_size > 10_000
    assert run.manager.metadata['status'] == 'completed'
    metrics = run.manager.read_metrics()
    assert metrics.state.tolist() == ['state-0'] * 2 + ['state-1'] * 2 + ['state-2'] * 2 + ['random-2'] * 2


@pytest.mark.parametrize('method', ['refill', 'rsst'])
def test_structured_run_is_saved_smaller_and_reloads(tmp_path, method):
    from quantnb.predict import PredictionEngine
    run = run_pruning(method, 0.5, 2, model='gru', epochs=3, out_dir=str(tmp_path), random_control='none', lr=0.02,
                      model_kwargs=json.dumps(TINY['gru']), **{**QUICK, 'batch_size': 128})
    d = run.manager.run_dir
    config = json.loads((d / 'model' / 'config.json').read_text())['model']
    model = build_model(ModelConfig.from_dict(config))
    model.load_state_dict(torch.load(d / 'model' / 'pytorch_model.bin', weights_only=True), strict=True)
    assert count_parameters(model) < run.dense_parameters
    assert sum(config['backbone']['hidden_size']) < 3 * 12
    x = torch.stack([run.bundle.test[i][0] for i in range(8)])
    run.model.eval()
    with torch.no_grad(): torch.testing.assert_close(model.eval()(x), run.model(x))
    state1 = load_pruned_model(d, 1)
    assert count_parameters(state1) == count_parameters(model)
    dense = load_pruned_model(d, 0)
    assert count_parameters(dense) == run.dense_parameters
    preds = PredictionEngine(d).predict('600519.SH')        # the pruned run serves predictions like any other
    assert preds.shape[0] == 1 and np.isfinite(preds.filter(like='ret_').to_numpy()).all()
    if method == 'rsst':
        r = run.states[1]['rsst']
        assert r['doomed_norm'] < 0.2 * r['kept_norm']
        # the penalty made removal cheap
        assert r['val_loss_after_removal'] == pytest.approx(r['val_loss_before_removal'], rel=0.1)
        # then the smaller model recovered
        assert run.states[1]['epochs'] > r['penalty_epochs']


def test_pretrained_initialisation_is_verified_before_pruning_rewinds_to_it(tmp_path):
    from quantnb.train.pipeline import run_training
    from quantnb.transfer import PretrainedCheckError
    out = tmp_path / 'out'
    source = dict(model='gru', symbols='600519.SH', seq_len=SEQ_LEN, batch_size=128, progress=False, out_dir=str(out),
                  model_kwargs=json.dumps(TINY['gru']), patience=0)
    untrained = run_training(epochs=1, lr=1e-9, **source).manager.run_dir      # "pretrained" in name only
    trained = run_training(epochs=3, lr=1e-2, **source).manager.run_dir
    common = dict(model='gru', epochs=1, out_dir=str(out), prune_states=2, random_control='none',
                  model_kwargs=json.dumps(TINY['gru']), seed=5, **QUICK)
    with pytest.raises(PretrainedCheckError): run_pruning('imp', pretrained=str(untrained), **common)
    assert TrainingManager.list_runs(out)[-1]['status'] == 'failed'
    def refuse(model, src): raise ValueError('not the backbone I wanted')
    with pytest.raises(ValueError, match='not the backbone I wanted'): run_pruning('imp', pretrained=str(trained),
                                                                                   pretrained_check=refuse, **common)
    seen = []
    run = run_pruning('imp', pretrained=str(trained), pretrained_check=lambda model, src: seen.append(src), **common)
    assert seen == [str(trained)] and run.manager.metadata['status'] == 'completed'
    pretrained = torch.load(trained / 'model' / 'pytorch_model.bin', weights_only=True)
    for k, v in run.init_weights.items():   # the rewind point is the pretrained backbone
        if k.startswith('backbone.'): torch.testing.assert_close(v, pretrained[k])
    pruning = json.loads((run.manager.run_dir / 'results' / 'pruning.json').read_text())
    assert pruning['pretrained_verdict'] in ('pretrained', 'suspicious')
