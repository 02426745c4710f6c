"""The model zoo: the backbone/head contract, causality, RoPE, MLA against a plain reference, MoE routing and
balance loss, one real training step per model, config round trips and error messages."""
import json, math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

from quantnb.core import set_seed
from quantnb.models.core import (HEADS, ModelConfig, ModelConfigError, build_model, count_parameters,
                                 create_model, list_models, list_presets, model_options, register_head)
from quantnb.models.enhanced import (ENHANCED_PRESETS, MoEFeedForward, MultiHeadLatentAttention, apply_rotary_emb,
                                     precompute_freqs_cis)
from quantnb.models.rnn import StackedRNN

MODELS = ['attention_lstm', 'enhanced_transformer', 'gru', 'lstm', 'moe_transformer', 'transformer']
SEQ_LEN, N_FEATURES = 60, 5

# Variants that exercise the options of each family as well as the defaults.
VARIANTS = [(name, {}) for name in MODELS] + [
    ('attention_lstm', {'bidirectional': True}),
    ('lstm', {'pooling': 'mean', 'num_layers': 1}),
    ('transformer', {'positions': 'sinusoidal', 'causal': True, 'pooling': 'last'}),
    ('transformer', {'n_heads': [4, 2], 'ffn_dim': [64, 32]}),
    ('enhanced_transformer', {'causal': True, 'pooling': 'last', 'n_heads': [4, 2]}),
    ('moe_transformer', {'top_k': 1, 'num_experts': 3}),
    # per-layer and per-expert widths, as pruned models have them
    ('gru', {'hidden_size': [32, 12]}),
    ('lstm', {'hidden_size': [16, 24, 8], 'num_layers': 3, 'pooling': 'mean'}),
    ('moe_transformer', {'num_experts': 3, 'expert_ffn_dim': [32, [16, 48, 8]]}),
]
CAUSAL = [('lstm', {}), ('gru', {}), ('lstm', {'hidden_size': [16, 8]}), ('gru', {'hidden_size': [8, 16]}),
          ('attention_lstm', {}), ('transformer', {'causal': True}),
          ('transformer', {'causal': True, 'positions': 'sinusoidal'}), ('enhanced_transformer', {'causal': True}),
          ('moe_transformer', {'causal': True})]


def _id(v): return v[0] + ''.join(f'-{k}={v}' for k, v in v[1].items())


@pytest.fixture(scope='module')
def sample():
    "Scale-free inputs from 600519's real bars, 60-day windows, regression and classification targets."
    from quantnb.data.db import StockDataLoader
    bars = StockDataLoader().load_kline_data('600519.SH')
    prev = bars['close'].shift(1)
    feats = np.stack([np.log(bars[c] / prev) / 0.02 for c in ('close', 'open', 'high', 'low')]
                     + [np.log(bars['volume'] / bars['volume'].shift(1)) / 0.5], -1)[1:]
    ret = np.log(bars['close'] / prev).to_numpy()[1:]
    assert np.isfinite(feats).all()
    ends = np.linspace(SEQ_LEN - 1, len(feats) - 8, 24).astype(int)
    x = np.stack([feats[e - SEQ_LEN + 1:e + 1] for e in ends])                   # [24, 60, 5]
    y_reg = np.stack([ret[e + 1:e + 8] for e in ends]) / 0.02                   # next 7 daily returns
    y_cls = np.digitize(ret[ends + 1], [-0.005, 0.005])
    return (torch.tensor(x, dtype=torch.float32), torch.tensor(y_reg, dtype=torch.float32), torch.tensor(y_cls))


def make(name, kwargs, **extra):
    set_seed(0)
    return create_model(name, N_FEATURES, seq_len=SEQ_LEN, **kwargs, **extra)


# ---------------------------------------------------------------------------------------------- contract

def test_every_family_is_registered():
    assert list_models() == MODELS


@pytest.mark.parametrize('task, width', [('regression', 7), ('classification', 3)])
@pytest.mark.parametrize('variant', VARIANTS, ids=_id)
def test_output_shapes_and_contract(sample, variant, task, width):
    x = sample[0][:6]
    model = make(*variant, task=task).eval()
    assert [n for n, _ in model.named_children()] == ['backbone', 'head']
    assert all(n.startswith(('backbone.', 'head.')) for n, _ in model.named_parameters())
    with torch.no_grad():
        out, h = model(x), model.backbone(x)
        z = model.backbone.pool(h)
        assert out.shape == (6, width) and torch.isfinite(out).all()
        assert h.shape == (6, SEQ_LEN, model.backbone.d_out)
        assert z.shape == (6, model.backbone.d_out)
        torch.testing.assert_close(out, model.head(z), rtol=0, atol=0)
        torch.testing.assert_close(model.features(x), z, rtol=0, atol=0)
    aux = model.aux_loss()
    assert aux.ndim == 0 and torch.isfinite(aux)
    if variant[0] != 'moe_transformer': assert aux.item() == 0.0


def test_horizon_and_classes_are_configurable(sample):
    x = sample[0][:2]
    assert create_model('gru', N_FEATURES, horizon=3)(x).shape == (2, 3)
    assert create_model('gru', N_FEATURES, task='classification', n_classes=5)(x).shape == (2, 5)
    assert create_model('gru', N_FEATURES, head={'hidden': 8})(x).shape == (2, 7)


def test_backbone_transfers_between_tasks():
    "The `backbone.*` half of a regression model loads strictly into a classification model's backbone."
    reg, cls = make('enhanced_transformer', {}), make('enhanced_transformer', {}, task='classification')
    cls.backbone.load_state_dict(reg.backbone.state_dict(), strict=True)
    head_params = count_parameters(cls.head)
    cls.backbone.requires_grad_(False)
    assert count_parameters(cls, trainable_only=True) == head_params
    assert count_parameters(cls) == count_parameters(cls.backbone) + head_params


def test_new_heads_plug_in_including_per_step_heads(sample):
    "A head registered later (here a per-step reconstruction head) works through create_model and build_model."
    class Reconstruction(nn.Module):
        per_step = True
        def __init__(self, d_in, d_out): super().__init__(); self.proj = nn.Linear(d_in, d_out)
        def forward(self, h): return self.proj(h)

    @register_head('test_reconstruction')
    def reconstruction_head(d_in, config, scale: float = 1.0): return Reconstruction(d_in, config.n_features)

    try:
        model = create_model('transformer', N_FEATURES, task='test_reconstruction', head={'scale': 2.0})
        assert model(sample[0][:3]).shape == (3, SEQ_LEN, N_FEATURES)
        assert build_model(ModelConfig.from_json(model.config.to_json())).config.head == {'scale': 2.0}
        with pytest.raises(ModelConfigError, match="'scal'.*did you mean 'scale'"):
            create_model('transformer', N_FEATURES, task='test_reconstruction', head={'scal': 2.0})
    finally: HEADS.pop('test_reconstruction')


# ---------------------------------------------------------------------------------------------- causality

@pytest.mark.parametrize('variant', CAUSAL, ids=_id)
def test_per_step_outputs_are_causal(sample, variant):
    "Changing day t+1 leaves the backbone's outputs at days <= t unchanged and changes day t+1 itself."
    x = sample[0][:4]
    model = make(*variant).eval()
    with torch.no_grad():
        h = model.backbone(x)
        for t in (0, 17, 41, SEQ_LEN - 2):
            x2 = x.clone()
            x2[:, t + 1] += torch.randn_like(x2[:, t + 1]) * 3
            h2 = model.backbone(x2)
            torch.testing.assert_close(h2[:, :t + 1], h[:, :t + 1], rtol=0, atol=1e-5)
            assert (h2[:, t + 1] - h[:, t + 1]).abs().max() > 1e-4


@pytest.mark.parametrize('variant', [('transformer', {}), ('enhanced_transformer', {}),
                                     ('attention_lstm', {'bidirectional': True})],
                         ids=_id)
def test_non_causal_variants_do_see_the_whole_window(sample, variant):
    "The causality test can fail: without the mask (or with a backward pass) earlier days depend on later ones."
    x = sample[0][:4]
    model = make(*variant).eval()
    with torch.no_grad():
        x2 = x.clone(); x2[:, 41] += 3.0
        assert (model.backbone(x2)[:, :41] - model.backbone(x)[:, :41]).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------- RoPE

def _rotate_plain(v, pos, theta=1e4):
    "Reference RoPE: rotate pair (v[2i], v[2i+1]) by pos * theta**(-2i/d), written with cos and sin."
    d = v.shape[-1]
    out = v.clone()
    for i in range(d // 2):
        a = pos * theta ** (-2 * i / d)
        c, s = math.cos(a), math.sin(a)
        out[..., 2 * i] = v[..., 2 * i] * c - v[..., 2 * i + 1] * s
        out[..., 2 * i + 1] = v[..., 2 * i] * s + v[..., 2 * i + 1] * c
    return out


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 200), n=st.integers(0, 200), shift=st.integers(-100, 100), dim=st.sampled_from([4, 8, 16, 32]),
       seed=st.integers(0, 2**16))
def test_rope_scores_depend_only_on_the_position_difference(m, n, shift, dim, seed):
    m2, n2 = m + shift, n + shift
    if min(m2, n2) < 0: m2, n2 = m2 - min(m2, n2), n2 - min(m2, n2)
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(dim, generator=g, dtype=torch.float64), torch.randn(dim, generator=g, dtype=torch.float64)
    freqs = precompute_freqs_cis(dim, 512)
    rot = lambda v, p: apply_rotary_emb(v.float().view(1, 1, 1, dim), freqs[p:p + 1]).view(dim).double()
    score = (rot(q, m) * rot(k, n)).sum()
    torch.testing.assert_close(score, (rot(q, m2) * rot(k, n2)).sum(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rot(q, m).norm(), q.norm(), rtol=1e-5, atol=1e-5)   # a rotation keeps lengths
    torch.testing.assert_close(rot(q, m), _rotate_plain(q, m), rtol=1e-4, atol=1e-4)


def test_rope_distinguishes_distances():
    q, k = torch.randn(16), torch.randn(16)
    freqs = precompute_freqs_cis(16, 64)
    rot = lambda v, p: apply_rotary_emb(v.view(1, 1, 1, 16), freqs[p:p + 1]).view(16)
    scores = torch.stack([(rot(q, 30) * rot(k, 30 - d)).sum() for d in range(8)])
    assert scores.unique().numel() == 8


# ---------------------------------------------------------------------------------------------- MLA

def _mla_reference(mla, x, causal):
    "MLA written plainly: one head at a time, RoPE with cos/sin, an explicit mask and softmax."
    B, T, _ = x.shape
    H, dn, dr, dv = mla.n_heads, mla.qk_nope_dim, mla.qk_rope_dim, mla.v_dim
    W = {n: p.detach().double() for n, p in mla.named_parameters()}
    x = x.double()
    c = x @ W['kv_compress.weight'].T                                               # latent
    c = c / torch.sqrt((c ** 2).mean(-1, keepdim=True) + 1e-6) * W['kv_norm.weight']
    k_rope_shared = x @ W['k_rope.weight'].T                                        # [B, T, dr], one for all heads
    k_rope_shared = torch.stack([_rotate_plain(k_rope_shared[:, t], t) for t in range(T)], 1)
    heads = []
    for h in range(H):
        q_nope = x @ W['q_nope.weight'][h * dn:(h + 1) * dn].T
        q_rope = x @ W['q_rope.weight'][h * dr:(h + 1) * dr].T
        q_rope = torch.stack([_rotate_plain(q_rope[:, t], t) for t in range(T)], 1)
        k_nope = c @ W['k_up.weight'][h * dn:(h + 1) * dn].T
        v = c @ W['v_up.weight'][h * dv:(h + 1) * dv].T
        scores = (q_nope @ k_nope.transpose(1, 2) + q_rope @ k_rope_shared.transpose(1, 2)) / math.sqrt(dn + dr)
        if causal: scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))
        heads.append(scores.softmax(-1) @ v)                                        # [B, T, dv]
    return torch.cat(heads, -1) @ W['out_proj.weight'].T


@pytest.mark.parametrize('causal', [False, True])
def test_mla_matches_a_plain_reference(causal):
    torch.manual_seed(1)
    mla = MultiHeadLatentAttention(d_model=32, n_heads=4, qk_nope_dim=8, qk_rope_dim=6, v_dim=5, kv_lora_rank=12,
                                   causal=causal).eval()
    for p in mla.parameters(): nn.init.normal_(p, 0, 0.3)
    x = torch.randn(2, 11, 32)
    with torch.no_grad(): out = mla(x, precompute_freqs_cis(6, 11))
    torch.testing.assert_close(out.double(), _mla_reference(mla, x, causal), rtol=1e-4, atol=1e-5)


def test_mla_caches_less_than_multi_head_attention():
    "What an inference cache would hold per token: the latent and the shared rope key, not per-head K and V."
    opts = model_options('enhanced_transformer')
    mla_values = opts['kv_lora_rank'] + opts['qk_rope_dim']
    mha_values = 2 * opts['n_heads'] * (opts['qk_nope_dim'] + opts['qk_rope_dim'])
    assert mla_values < mha_values / 3
    model = make('enhanced_transformer', {})
    attn = model.backbone.blocks[0].attn
    assert attn.kv_compress.out_features == opts['kv_lora_rank'] and attn.k_rope.out_features == opts['qk_rope_dim']


# ---------------------------------------------------------------------------------------------- MoE

@pytest.mark.parametrize('num_experts, top_k', [(4, 2), (5, 1), (3, 3)])
def test_moe_routes_every_token_to_exactly_top_k_experts(num_experts, top_k):
    torch.manual_seed(2)
    moe = MoEFeedForward(d_model=8, expert_ffn_dim=12, num_experts=num_experts, top_k=top_k).eval()
    nn.init.normal_(moe.gate.weight, 0, 1.0)
    x = torch.randn(3, 7, 8)
    rows = []
    hooks = [e.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[0])) for e in moe.experts]
    with torch.no_grad(): out = moe(x)
    for hk in hooks: hk.remove()
    n_tokens = 3 * 7
    assert sum(rows) == n_tokens * top_k
    idx = moe.expert_index
    assert idx.shape == (n_tokens, top_k)
    assert all(len(set(r.tolist())) == top_k for r in idx)
    # Reference: token by token, the weighted sum of its top-k experts.
    tokens = x.reshape(n_tokens, 8)
    with torch.no_grad():
        probs = (tokens @ moe.gate.weight.T).softmax(-1)
        ref = torch.zeros_like(tokens)
        for n in range(n_tokens):
            w, chosen = probs[n].topk(top_k)
            if top_k > 1: w = w / w.sum()
            for wj, e in zip(w, chosen): ref[n] += wj * moe.experts[int(e)](tokens[n])
    torch.testing.assert_close(out.reshape(n_tokens, 8), ref, rtol=1e-5, atol=1e-6)
    # Balance loss: E * sum_e f_e P_e, from the counts.
    f = torch.bincount(idx.flatten(), minlength=num_experts).float() / (n_tokens * top_k)
    torch.testing.assert_close(moe.balance_loss, num_experts * (f * probs.mean(0)).sum())


def test_moe_balance_loss_is_one_for_uniform_routing_and_larger_when_skewed(sample):
    x = sample[0][:4]
    model = make('moe_transformer', {}).eval()
    moe_layers = [b.ffn for b in model.backbone.blocks]
    with torch.no_grad():
        for m in moe_layers: m.gate.weight.zero_()                  # every expert equally probable
        model(x)
        torch.testing.assert_close(model.aux_loss(), torch.tensor(1.0), rtol=0, atol=1e-6)
        for m in moe_layers: m.gate.weight[0] = 0.5                 # some tokens prefer expert 0 ...
        model(x); mild = model.aux_loss().item()
        for m in moe_layers: m.gate.weight[0] = 20.0                # ... or almost all of them
        model(x); strong = model.aux_loss().item()
    assert 1.0 < mild < strong


def test_moe_balance_loss_has_a_gradient_into_the_router(sample):
    model = make('moe_transformer', {})
    model(sample[0][:4])
    model.aux_loss().backward()
    for b in model.backbone.blocks: assert b.ffn.gate.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- training

@pytest.mark.parametrize('task', ['regression', 'classification'])
@pytest.mark.parametrize('variant', VARIANTS, ids=_id)
def test_one_training_step_on_real_data(sample, variant, task):
    x, y_reg, y_cls = sample
    model = make(*variant, task=task).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(x)
    loss = F.mse_loss(out, y_reg) if task == 'regression' else F.cross_entropy(out, y_cls)
    loss = loss + 0.01 * model.aux_loss()
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not (p.grad.abs().sum() > 0)]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


# ---------------------------------------------------------------------------------------------- configs

@pytest.mark.parametrize('variant', VARIANTS + [('enhanced_transformer', {'dropout': 0.0})], ids=_id)
def test_config_round_trip_rebuilds_the_same_model(sample, variant, tmp_path):
    x = sample[0][:3]
    model = make(*variant, task='classification').eval()
    path = tmp_path / 'model' / 'config.json'
    text = model.config.to_json(path)
    assert json.loads(text) == json.loads(path.read_text())
    for config in (ModelConfig.from_json(text), ModelConfig.from_json(path), ModelConfig.from_dict(json.loads(text))):
        assert config == model.config
        # every option explicit
        assert config.backbone == model_options(variant[0]) | json.loads(json.dumps(variant[1]))
        set_seed(123)                                                # different initial weights ...
        twin = build_model(config).eval()
        twin.load_state_dict(model.state_dict(), strict=True)        # ... replaced by the original ones
        with torch.no_grad(): torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)


def test_config_json_is_plain_and_stable():
    model = create_model('transformer', 45, n_heads=(4, 2), ffn_dim=[128, 64])
    d = model.config.to_dict()
    assert d['backbone']['n_heads'] == [4, 2]           # tuples are stored as lists, so JSON gives the same config
    assert ModelConfig.from_json(model.config.to_json()) == model.config
    assert list(d) == ['name', 'n_features', 'task', 'horizon', 'n_classes', 'seq_len', 'backbone', 'head']


def test_presets_have_the_seed_sizes():
    assert list_presets('enhanced_transformer') == ['tiny', 'small', 'base', 'large']
    for preset, target in zip(ENHANCED_PRESETS, [2.5e6, 10e6, 40e6, 160e6]):
        with torch.device('meta'): model = create_model('enhanced_transformer', 45, preset=preset)
        n = count_parameters(model)
        assert abs(n / target - 1) < 0.10, (preset, n)
    tiny = create_model('enhanced_transformer', 45, preset='tiny', n_layers=2)    # keywords override the preset
    assert tiny.config.backbone['n_layers'] == 2 and tiny.config.backbone['d_model'] == 256


def test_default_sizes_are_cpu_sized():
    for name in MODELS:
        n = count_parameters(create_model(name, 45))
        assert 10_000 < n < 400_000, (name, n)


# ---------------------------------------------------------------------------------------------- attention weights

@pytest.mark.parametrize('bidirectional', [False, True])
def test_attention_weights_are_a_distribution_over_days(sample, bidirectional):
    x = sample[0][:5]
    model = make('attention_lstm', {'bidirectional': bidirectional}).eval()
    with torch.no_grad():
        a = model.get_attention_weights(x)
        h = model.backbone(x)
        z = model.backbone.pool(h)
    assert a.shape == (5, SEQ_LEN) and (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(5))
    torch.testing.assert_close(z, (a[..., None] * h).sum(1))        # the pooled vector is the weighted sum
    assert a.std(-1).min() > 0                                      # not a fixed average
    with pytest.raises(AttributeError, match='no attention pooling'): make('lstm', {}).get_attention_weights(x)


# ---------------------------------------------------------------------------------------------- errors

def test_unknown_model_names_list_the_valid_ones():
    with pytest.raises(ModelConfigError) as e: create_model('lstn', 5)
    assert "'lstn'" in str(e.value) and all(name in str(e.value) for name in MODELS)


@pytest.mark.parametrize('call, match', [
    (lambda: create_model('lstm', 5, hiden_size=32), r"unknown option 'hiden_size' \(did you mean 'hidden_size'\?\)"),
    (lambda: create_model('transformer', 5, d_modle=32), r"'d_modle'.*valid options: d_model"),
    (lambda: create_model('lstm', 5, head={'hidden_dim': 3}), r"unknown option 'hidden_dim'"),
    (lambda: create_model('enhanced_transformer', 5, preset='huge'),
     r"no preset 'huge'; valid presets: tiny, small, base, large"),
    (lambda: create_model('gru', 5, preset='tiny'), r"no preset 'tiny'; valid presets: \(none\)"),
    (lambda: create_model('lstm', 5, task='ranking'),
     r"unknown task 'ranking'; valid tasks: classification, masked, regression"),
    (lambda: create_model('lstm', 5, pooling='max'), r"pooling='max'; valid: 'last', 'mean'"),
    (lambda: create_model('transformer', 5, positions='rotary'), r"positions='rotary'"),
    (lambda: create_model('transformer', 5, n_layers=3, n_heads=[4, 4]), r"n_heads=\[4, 4\].*list of 3"),
    (lambda: create_model('gru', 5, hidden_size=[64]), r"hidden_size=\[64\].*list of 2"),
    (lambda: create_model('moe_transformer', 5, num_experts=3, expert_ffn_dim=[8, [8, 8]]),
     r"expert_ffn_dim=.*one per expert"),
    (lambda: create_model('moe_transformer', 5, ffn_dim=64), r"'ffn_dim'.*valid options: .*expert_ffn_dim"),
    (lambda: create_model('lstm', 5, hidden_size=np.array([1, 2])), r"cannot be stored in a JSON config"),
    (lambda: ModelConfig.from_dict({'name': 'lstm', 'n_features': 5, 'seq_length': 60}), r"no field\(s\) 'seq_length'"),
])
def test_bad_options_give_clear_errors(call, match):
    with pytest.raises(ModelConfigError, match=match): call()


def test_bad_inputs_give_clear_errors():
    model = create_model('transformer', 5, seq_len=60)
    with pytest.raises(ValueError, match=r'expected x of shape \[batch, seq_len, 5\], got \[2, 60, 4\]'):
        model(torch.randn(2, 60, 4))
    with pytest.raises(ValueError, match='longer than the learned position table'):
        model(torch.randn(2, 61, 5))
    assert create_model('transformer', 5, seq_len=60, positions='sinusoidal')(torch.randn(2, 90, 5)).shape == (2, 7)
    assert create_model('enhanced_transformer', 5, seq_len=60)(torch.randn(2, 90, 5)).shape == (2, 7)   # RoPE grows


# ---------------------------------------------------------------------------------------------- per-layer RNN widths

@pytest.mark.parametrize('name, rnn', [('lstm', nn.LSTM), ('gru', nn.GRU)])
def test_stacked_rnn_computes_what_torch_computes(sample, name, rnn):
    "Equal widths: StackedRNN with nn.LSTM's / nn.GRU's weights gives its outputs; names and shapes are the same."
    x = sample[0][:6]
    set_seed(3)
    ref = rnn(N_FEATURES, 24, 3, batch_first=True, dropout=0.3).eval()
    stacked = StackedRNN(name.upper(), N_FEATURES, [24, 24, 24], dropout=0.3).eval()
    assert [(n, p.shape) for n, p in stacked.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    stacked.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad(): torch.testing.assert_close(stacked(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)
    stacked.train()   # dropout between layers only, as nn.LSTM does
    assert not torch.equal(stacked(x)[0], ref(x)[0])


def test_uneven_hidden_sizes_keep_parameter_names_and_uniform_ones_keep_torch_modules():
    uniform, listed, uneven = (create_model('lstm', N_FEATURES, hidden_size=h) for h in (32, [32, 32], [32, 9]))
    assert type(uniform.backbone.rnn) is nn.LSTM and type(listed.backbone.rnn) is nn.LSTM
    assert type(uneven.backbone.rnn) is StackedRNN
    assert [n for n, _ in uneven.named_parameters()] == [n for n, _ in uniform.named_parameters()]
    assert uneven.backbone.rnn.weight_ih_l1.shape == (4 * 9, 32) and uneven.head.fc1.in_features == 9
    assert uneven.backbone.d_out == 9
