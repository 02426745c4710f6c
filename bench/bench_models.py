#!/usr/bin/env python
"""CPU training throughput of every model in the zoo at its default size, and MLA against standard attention.

    python bench/bench_models.py [--batch 64] [--seq-len 60] [--n-features 45] [--warmup 3] [--repeat 10] [--threads N]

For each model: parameters, and forward+backward samples/s on random `[batch, seq_len, n_features]` inputs with
the regression head (median of `repeat` timed steps after `warmup` untimed ones, in the same process).

MLA against multi-head attention (MHA) at equal `d_model`, for the enhanced transformer's default size and its
`base` preset: K/V-cache values per token and layer (MHA caches K and V of every head, `2 * n_heads * head_dim`;
MLA caches the latent and the shared rope key, `kv_lora_rank + qk_rope_dim`), the same in float32 bytes,
parameters, and the latency of one attention module (forward, and forward+backward). `mla_kv_cache_ratio` is
MHA bytes / MLA bytes at the default size. Prints one JSON object.
"""
import argparse, json, platform, statistics, time

import torch
import torch.nn.functional as F

from quantnb.core import set_seed
from quantnb.models.core import count_parameters, create_model, list_models, model_options
from quantnb.models.enhanced import MultiHeadLatentAttention, precompute_freqs_cis
from quantnb.models.transformer import MultiHeadSelfAttention


def median_seconds(fn, warmup: int, repeat: int) -> float:
    for _ in range(warmup): fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return statistics.median(times)


def model_throughput(name, args) -> dict:
    set_seed(0, deterministic=False)   # deterministic kernels would slow the LSTMs
    model = create_model(name, args.n_features, seq_len=args.seq_len).train()
    x = torch.randn(args.batch, args.seq_len, args.n_features)
    y = torch.randn(args.batch, model.config.horizon)

    def step():
        model.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y) + 0.01 * model.aux_loss()
        loss.backward()

    sec = median_seconds(step, args.warmup, args.repeat)
    return {'parameters': count_parameters(model), 'ms_per_step': round(sec * 1e3, 2),
            'samples_per_s': round(args.batch / sec, 1)}


def attention_comparison(options: dict, args) -> dict:
    "MLA with `options` against standard MHA with the same d_model and n_heads (head_dim = d_model / n_heads)."
    d, H = options['d_model'], options['n_heads']
    head_dim = d // H
    set_seed(0, deterministic=False)
    mha = MultiHeadSelfAttention(d, H, head_dim)
    mla = MultiHeadLatentAttention(d, H, options['qk_nope_dim'], options['qk_rope_dim'], options['v_dim'],
                                   options['kv_lora_rank'])
    x = torch.randn(args.batch, args.seq_len, d, requires_grad=True)
    freqs = precompute_freqs_cis(options['qk_rope_dim'], args.seq_len)
    runs = {'mha': lambda: mha(x), 'mla': lambda: mla(x, freqs)}
    out = {}
    for name, fn in runs.items():
        module = mha if name == 'mha' else mla
        def fwd():
            with torch.no_grad(): fn()
        def fwd_bwd():
            module.zero_grad(set_to_none=True); fn().sum().backward()
        values = 2 * H * head_dim if name == 'mha' else options['kv_lora_rank'] + options['qk_rope_dim']
        out[name] = {'kv_cache_values_per_token_layer': values, 'kv_cache_bytes_per_token_layer': values * 4,
                     'parameters': count_parameters(module),
                     'forward_ms': round(median_seconds(fwd, args.warmup, args.repeat) * 1e3, 3),
                     'forward_backward_ms': round(median_seconds(fwd_bwd, args.warmup, args.repeat) * 1e3, 3)}
    per_token = {k: out[k]['kv_cache_bytes_per_token_layer'] for k in ('mha', 'mla')}
    out['kv_cache_ratio'] = round(per_token['mha'] / per_token['mla'], 3)
    out['d_model'], out['n_heads'] = d, H
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--seq-len', type=int, default=60)
    p.add_argument('--n-features', type=int, default=45)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeat', type=int, default=10)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)

    models = {name: model_throughput(name, args) for name in list_models()}
    attention = {'default': attention_comparison(model_options('enhanced_transformer'), args),
                 'base': attention_comparison(model_options('enhanced_transformer', 'base'), args)}
    print(json.dumps({
        'input_shape': [args.batch, args.seq_len, args.n_features], 'warmup': args.warmup, 'repeat': args.repeat,
        'torch': torch.__version__, 'threads': torch.get_num_threads(), 'machine': platform.machine(),
        'models': models,
        'attention': attention,
        'mla_kv_cache_ratio': attention['default']['kv_cache_ratio'],
    }, indent=2))


if __name__ == '__main__':
    main()
