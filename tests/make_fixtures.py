#!/usr/bin/python3
"""PyTorch reference fixtures for the WebGPU GPT-2: a tiny random model and the values it must produce.

Run with Debian's python (which has python3-torch): `/usr/bin/python3 tests/make_fixtures.py`.
Deterministic: the same files, byte for byte, on every run. Writes `tests/fixtures/gpt2_tiny/`:

  config.json         GPT2Config as transformers' `save_pretrained` writes it (sorted keys, indent 2).
  model.safetensors   the weights as `GPT2LMHeadModel.save_pretrained` writes them: `transformer.`-prefixed
                      names, float32, no `lm_head.weight` (tied to wte), no `attn.bias` buffers.
  reference.safetensors   the values below (float32; token ids I32).

The model is Hugging Face's GPT2LMHeadModel math written out in plain PyTorch, computed in float64 from
the float32-rounded weights in model.safetensors (eval mode: no dropout, except in the dropout case):

  x      = wte[ids] + wpe[0..T-1]
  block: a = ln_1(x); qkv = a @ c_attn.weight + c_attn.bias        (Conv1D weights are [in, out])
         q, k, v = split(qkv, C); heads: view(B, T, H, hd)          (head h = columns h*hd .. h*hd+hd-1)
         att = softmax(q k^T / sqrt(hd), causal); y = att v; x += y @ attn.c_proj.weight + bias
         m = ln_2(x); x += gelu(m @ c_fc.weight + bias) @ mlp.c_proj.weight + bias
         gelu(u) = 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3)))   ("gelu_new")
  logits = ln_f(x) @ wte^T;  LayerNorm(z) = (z - mean) / sqrt(biased var + 1e-5) * weight + bias
  logp[b, t] = log_softmax(logits[b, t])[targets[b, t]]

LM case (`lm.*`), B=2, T=12:
  lm.inputs, lm.targets (I32 [2,12]): targets are the inputs shifted by one; row 1 ends in EOS padding.
  lm.mask [2,12]: 1 except the padding positions at the end of row 1.
  lm.logits [2,12,61]; lm.logp [2,12]
  lm.loss [1] = -(sum mask * logp) / sum mask
  lm.grad.<name> = d lm.loss / d <name> for every parameter (<name> without `transformer.`).
  lm.adamw.losses [3]: lm.loss before each of 3 optimizer steps on the same batch; lm.adamw3.<name>: the
  weights after them. Each step is torch.nn.utils.clip_grad_norm_(params, 1.0) then torch.optim.AdamW:
    n = sqrt(sum of all squared grads); g *= min(1, 1 / (n + 1e-6))
    p *= 1 - lr * wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
  with lr 1e-2, b1 0.9, b2 0.999, eps 1e-8, wd 0.1 on 2-D weights (wte, wpe, Conv1D weights), 0 on biases
  and LayerNorm parameters.

SimPO case (`simpo.*`): P=2 pairs, 4 sequences of T=12 inputs; rows 0,1 chosen, rows 2,3 rejected, pair i
is (i, P+i), and the rows of a pair share their prompt. Each row's tokens are
[BOS] + prompt + completion + [EOS], padded with EOS to T+1 tokens; inputs = tokens[:-1],
targets = tokens[1:]. BOS = EOS = 60, so the masks are given by position, not by token:
  simpo.lm_mask[b, t] = 1 if t < (unpadded token count of row b) - 1   (input t is not padding)
  simpo.comp_mask[b, t] = lm_mask[b, t] with t < len(prompt_b) cleared  (predictions of completion
                          tokens and of the final EOS)
  simpo.logp [4,12]
  simpo.rewards[b] = beta * (sum_t comp_mask * logp) / (sum_t comp_mask),  beta = 2
  simpo.loss_simpo = -mean_i log sigmoid(rewards[i] - rewards[P+i] - gamma),  gamma = 1
  simpo.loss_lm = -(sum over chosen rows of lm_mask * logp) / (sum over chosen rows of lm_mask)
  simpo.loss = loss_simpo + 0.2 * loss_lm
  simpo.grad.<name> = d simpo.loss / d <name>.

Generation case (`gen.*`): greedy continuations for the KV-cached decoder. The model above is nearly
uniform (its greedy continuation repeats one token), so this case has weights of its own with the same
config, drawn from a generator seeded SEED + 1 (the cases above keep their bytes): wte N(0, 1), wpe
N(0, 0.5), every other matrix N(0, 0.5), LayerNorm and biases as above. Then the next token depends on the
context through attention, and a cache bug changes the continuation.
  gen.weight.<name>: those weights (float32)
  gen.contexts [3,8] (I32): three contexts of 2, 5 and 8 tokens, [BOS] + random non-EOS tokens, EOS-padded
  gen.context_lengths [3] (I32)
  gen.greedy [3,8] (I32): t_k = argmax_v logits(context + t_0 .. t_{k-1})[last, v], GEN_NEW = 8 steps,
                          one full float64 forward pass per step; a plain argmax over the whole vocabulary
                          (EOS included, not stopped at), so a decoder that stops at EOS must match up to
                          and including the first EOS.
  gen.margin [1]: the smallest gap between the best and second-best logit over all 24 steps; asserted
                  above 1e-3 so float32 rounding cannot change any argmax.

Dropout case, in its own file `dropout.safetensors` (so the files above keep their bytes): the LM and SimPO
batches above through the model in train mode, GPT-2's four dropout modules applied with the masks of the
engine's counter-based generator (dropout_bits, the same function as shaders/dropout.ts) at seed
DROPOUT_SEED, optimiser step DROPOUT_STEP and the rates DROPOUT_RATES (metadata `settings`):
  drop.lm.logits [2,12,61], drop.lm.loss [1], drop.lm.grad.<name>
  drop.simpo.logp [4,12], drop.simpo.loss [1] (SimPO + 0.2 LM), drop.simpo.grad.<name>
"""

import json
import math
import os
import struct

import torch

CONFIG = dict(n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=61, eos=60, bos=60)
SEED = 20250
LR, BETAS, EPS, WEIGHT_DECAY, MAX_NORM, ADAMW_STEPS = 1e-2, (0.9, 0.999), 1e-8, 0.1, 1.0, 3
SIMPO_BETA, SIMPO_GAMMA, LM_WEIGHT = 2.0, 1.0, 0.2
GEN_CONTEXT_LENGTHS, GEN_NEW = (2, 5, 8), 8
DROPOUT_SEED, DROPOUT_STEP = 4242, 3
# Unequal rates, so a site given another site's rate changes the numbers.
DROPOUT_RATES = {"embd": 0.1, "attn": 0.2, "resid": 0.15}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gpt2_tiny")


def hf_config_json():
    """The config.json transformers writes for this GPT2Config (GPT2LMHeadModel.save_pretrained)."""
    c = CONFIG
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": c["bos"],
        "embd_pdrop": 0.1,
        "eos_token_id": c["eos"],
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_embd": c["n_embd"],
        "n_head": c["n_head"],
        "n_inner": None,
        "n_layer": c["n_layer"],
        "n_positions": c["n_positions"],
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.46.3",
        "use_cache": True,
        "vocab_size": c["vocab_size"],
    }


def param_shapes():
    """(name, shape, decay) in the order of model/params.ts, names without `transformer.`."""
    C, V = CONFIG["n_embd"], CONFIG["vocab_size"]
    t = [("wte.weight", [V, C], True), ("wpe.weight", [CONFIG["n_positions"], C], True)]
    for l in range(CONFIG["n_layer"]):
        p = f"h.{l}."
        t += [
            (p + "ln_1.weight", [C], False),
            (p + "ln_1.bias", [C], False),
            (p + "attn.c_attn.weight", [C, 3 * C], True),
            (p + "attn.c_attn.bias", [3 * C], False),
            (p + "attn.c_proj.weight", [C, C], True),
            (p + "attn.c_proj.bias", [C], False),
            (p + "ln_2.weight", [C], False),
            (p + "ln_2.bias", [C], False),
            (p + "mlp.c_fc.weight", [C, 4 * C], True),
            (p + "mlp.c_fc.bias", [4 * C], False),
            (p + "mlp.c_proj.weight", [4 * C, C], True),
            (p + "mlp.c_proj.bias", [C], False),
        ]
    return t + [("ln_f.weight", [C], False), ("ln_f.bias", [C], False)]


def init_params(gen):
    """Matrices N(0, 0.02) (GPT-2's initializer_range), except c_attn N(0, 0.3): at 0.02 attention is
    nearly uniform and the q/k gradients come out 1e4 times smaller than the others, too small for an
    f32 comparison to see a bug. LayerNorm weights 1 + N(0, 0.2); LayerNorm and linear biases N(0, 0.2),
    so that every gradient, biases included, is far from trivial. Rounded to float32, held in float64."""
    params = {}
    for name, shape, _ in param_shapes():
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        if name.endswith("c_attn.weight"):
            v = 0.3 * z
        elif name.endswith(".weight") and len(shape) == 2:
            v = 0.02 * z
        elif ".ln_" in name or name.startswith("ln_f"):
            v = (1.0 + 0.2 * z) if name.endswith(".weight") else 0.2 * z
        else:
            v = 0.2 * z
        params[name] = v.float().double().requires_grad_(True)
    return params


def gelu_new(u):
    return 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u.pow(3))))


def layer_norm(x, w, b):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5)


def forward(p, ids, drop=None):
    """GPT2LMHeadModel logits [B, T, V] for token ids [B, T]. With `drop` (train mode), each of GPT-2's
    four dropout modules multiplies by drop(site, shape), a mask already scaled by 1/(1-p) (see
    dropout_masks); without it, eval mode."""
    B, T = ids.shape
    C, H = CONFIG["n_embd"], CONFIG["n_head"]
    hd = C // H

    def dropped(u, site, shape):
        return u if drop is None else u * drop(site, shape)

    def residual(x, u, w, b, site):
        # Without dropout, eval mode's own association (the bytes of the eval-mode fixtures).
        return x + u @ w + b if drop is None else x + (u @ w + b) * drop(site, (B, T, C))

    x = dropped(p["wte.weight"][ids] + p["wpe.weight"][torch.arange(T)], 0, (B, T, C))
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(CONFIG["n_layer"]):
        g = lambda n: p[f"h.{l}.{n}"]  # noqa: E731
        a = layer_norm(x, g("ln_1.weight"), g("ln_1.bias"))
        qkv = a @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
        q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in qkv.split(C, dim=2))
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        att = dropped(att.masked_fill(~causal, float("-inf")).softmax(dim=-1), 3 * l + 1, (B, H, T, T))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = residual(x, y, g("attn.c_proj.weight"), g("attn.c_proj.bias"), 3 * l + 2)
        m = layer_norm(x, g("ln_2.weight"), g("ln_2.bias"))
        h = gelu_new(m @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias"))
        x = residual(x, h, g("mlp.c_proj.weight"), g("mlp.c_proj.bias"), 3 * l + 3)
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    return x @ p["wte.weight"].t()


U32 = 0xFFFFFFFF


def mix32(x):
    """The dropout generator's mixing function on u32 (shaders/dropout.ts states the whole generator)."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & U32
    x ^= x >> 15
    x = (x * 0x735A2D97) & U32
    return x ^ (x >> 15)


def dropout_bits(seed, step, site, row, col):
    stream = mix32(mix32(mix32((seed ^ 0x9E3779B9) & U32) ^ step) ^ site)
    return mix32(mix32(stream ^ row) ^ col)


def dropout_masks(seed, step, rates):
    """drop(site, shape) for forward(): keep iff bits >= ceil(p * 2^32), kept elements scaled by 1/(1-p).
    Site 0 is the embedding output and 3l+2, 3l+3 the two residual branches of layer l ([B, T, C]: row
    b*T + t, column c); 3l+1 the attention probabilities ([B, H, T, T]: row (b*H + h)*T + i, column j)."""

    def drop(site, shape):
        kind = "embd" if site == 0 else ("attn" if site % 3 == 1 else "resid")
        p = rates[kind]
        threshold = math.ceil(p * 2**32)
        cols = shape[-1]
        rows = math.prod(shape[:-1])
        keep = [
            [dropout_bits(seed, step, site, r, c) >= threshold for c in range(cols)] for r in range(rows)
        ]
        return torch.tensor(keep, dtype=torch.float64).view(shape) * (1.0 / (1.0 - p))

    return drop


def target_logp(logits, targets):
    return logits.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def lm_loss(logp, mask):
    return -(mask * logp).sum() / mask.sum()


def grads(p, loss):
    gs = torch.autograd.grad(loss, list(p.values()))
    return dict(zip(p.keys(), gs))


def lm_batch(gen):
    """Two rows of 13 random tokens (no EOS); row 1 keeps 9 real inputs, then EOS padding."""
    T, eos = 12, CONFIG["eos"]
    toks = torch.randint(0, eos, (2, T + 1), generator=gen)
    toks[1, 10:] = eos
    inputs, targets = toks[:, :-1], toks[:, 1:]
    mask = torch.ones(2, T, dtype=torch.float64)
    mask[1, 9:] = 0.0
    return inputs.contiguous(), targets.contiguous(), mask


def simpo_batch(gen):
    """Rows [BOS] + prompt + completion + [EOS], EOS-padded; returns inputs, targets, lm_mask, comp_mask."""
    T, eos, bos = 12, CONFIG["eos"], CONFIG["bos"]
    # (prompt length, completion length) per row: rows 0,1 chosen, 2,3 rejected; row i and 2+i share a
    # prompt. Row 1 fills all 13 tokens; the others end in 1 to 3 padding tokens.
    lengths = [(3, 5), (5, 6), (3, 7), (5, 4)]
    prompts = [torch.randint(0, eos, (n,), generator=gen) for n in (3, 5)]
    toks = torch.full((4, T + 1), eos, dtype=torch.int64)
    lm_mask = torch.zeros(4, T, dtype=torch.float64)
    comp_mask = torch.zeros(4, T, dtype=torch.float64)
    for b, (np_, nc) in enumerate(lengths):
        prompt = prompts[b % 2]
        assert len(prompt) == np_
        comp = torch.randint(0, eos, (nc,), generator=gen)
        row = torch.cat([torch.tensor([bos]), prompt, comp, torch.tensor([eos])])
        toks[b, : len(row)] = row
        lm_mask[b, : len(row) - 1] = 1.0
        comp_mask[b, np_ : len(row) - 1] = 1.0
    return toks[:, :-1].contiguous(), toks[:, 1:].contiguous(), lm_mask, comp_mask


def simpo_losses(p, inputs, targets, lm_mask, comp_mask):
    P = inputs.shape[0] // 2
    logp = target_logp(forward(p, inputs), targets)
    rewards = SIMPO_BETA * (comp_mask * logp).sum(-1) / comp_mask.sum(-1)
    loss_simpo = -torch.nn.functional.logsigmoid(rewards[:P] - rewards[P:] - SIMPO_GAMMA).mean()
    loss_lm = lm_loss(logp[:P], lm_mask[:P])
    return logp, rewards, loss_simpo, loss_lm, loss_simpo + LM_WEIGHT * loss_lm


def adamw_run(p, inputs, targets, mask):
    """ADAMW_STEPS of clip + torch.optim.AdamW on copies of p; returns (losses, final params)."""
    q = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
    decay = {name for name, _, d in param_shapes() if d}
    opt = torch.optim.AdamW(
        [
            {"params": [q[k] for k in q if k in decay], "weight_decay": WEIGHT_DECAY},
            {"params": [q[k] for k in q if k not in decay], "weight_decay": 0.0},
        ],
        lr=LR, betas=BETAS, eps=EPS,
    )
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad()
        loss = lm_loss(target_logp(forward(q, inputs), targets), mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(q.values()), MAX_NORM)
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64), q


def gen_params(gen):
    """The generation case's weights (see the module doc), rounded to float32, held in float64."""
    params = {}
    for name, shape, _ in param_shapes():
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        if name == "wte.weight":
            v = z
        elif len(shape) == 2:
            v = 0.5 * z
        elif ".ln_" in name or name.startswith("ln_f"):
            v = (1.0 + 0.2 * z) if name.endswith(".weight") else 0.2 * z
        else:
            v = 0.2 * z
        params[name] = v.float().double()
    return params


def greedy_case():
    """The generation case: weights, contexts, their lengths, greedy continuations, smallest top-2 gap."""
    gen = torch.Generator().manual_seed(SEED + 1)
    p = gen_params(gen)
    eos, bos = CONFIG["eos"], CONFIG["bos"]
    n_ctx = max(GEN_CONTEXT_LENGTHS)
    contexts = torch.full((len(GEN_CONTEXT_LENGTHS), n_ctx), eos, dtype=torch.int64)
    greedy = torch.zeros(len(GEN_CONTEXT_LENGTHS), GEN_NEW, dtype=torch.int64)
    margin = math.inf
    with torch.no_grad():
        for b, n in enumerate(GEN_CONTEXT_LENGTHS):
            ids = [bos] + torch.randint(0, eos, (n - 1,), generator=gen).tolist()
            contexts[b, :n] = torch.tensor(ids)
            for k in range(GEN_NEW):
                last = forward(p, torch.tensor([ids]))[0, -1]
                top2 = last.topk(2).values
                margin = min(margin, (top2[0] - top2[1]).item())
                ids.append(int(last.argmax()))
                greedy[b, k] = ids[-1]
    assert margin > 1e-3, f"greedy margin {margin} too small for a float32 comparison"
    lengths = torch.tensor(GEN_CONTEXT_LENGTHS, dtype=torch.int64)
    return p, contexts, lengths, greedy, torch.tensor([margin], dtype=torch.float64)


def write_safetensors(path, tensors, metadata):
    """Safetensors: u64 LE header length, JSON header (dtype, shape, data_offsets relative to the data
    section; `__metadata__` string map), padded with spaces to a multiple of 8, then raw LE data."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        dtype, t = ("I32", t.to(torch.int32)) if not t.is_floating_point() else ("F32", t.to(torch.float32))
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(SEED)
    p = init_params(gen)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "config.json"), "w") as f:
        f.write(json.dumps(hf_config_json(), indent=2, sort_keys=True) + "\n")
    write_safetensors(
        os.path.join(OUT, "model.safetensors"),
        {"transformer." + k: v for k, v in p.items()},
        {"format": "pt"},
    )

    ref = {}
    inputs, targets, mask = lm_batch(gen)
    logits = forward(p, inputs)
    logp = target_logp(logits, targets)
    loss = lm_loss(logp, mask)
    ref.update({"lm.inputs": inputs, "lm.targets": targets, "lm.mask": mask, "lm.logits": logits})
    ref.update({"lm.logp": logp, "lm.loss": loss.reshape(1)})
    ref.update({"lm.grad." + k: g for k, g in grads(p, loss).items()})
    losses, q = adamw_run(p, inputs, targets, mask)
    assert abs(losses[0].item() - loss.item()) < 1e-12
    ref["lm.adamw.losses"] = losses
    ref.update({"lm.adamw3." + k: v for k, v in q.items()})

    s_inputs, s_targets, lm_mask, comp_mask = simpo_batch(gen)
    s_logp, rewards, loss_simpo, loss_lm, total = simpo_losses(p, s_inputs, s_targets, lm_mask, comp_mask)
    ref.update({"simpo.inputs": s_inputs, "simpo.targets": s_targets})
    ref.update({"simpo.lm_mask": lm_mask, "simpo.comp_mask": comp_mask, "simpo.logp": s_logp})
    ref.update({"simpo.rewards": rewards, "simpo.loss_simpo": loss_simpo.reshape(1)})
    ref.update({"simpo.loss_lm": loss_lm.reshape(1), "simpo.loss": total.reshape(1)})
    ref.update({"simpo.grad." + k: g for k, g in grads(p, total).items()})

    g_params, contexts, lengths, greedy, margin = greedy_case()
    ref.update({"gen.weight." + k: v for k, v in g_params.items()})
    ref.update({"gen.contexts": contexts, "gen.context_lengths": lengths, "gen.greedy": greedy})
    ref["gen.margin"] = margin

    settings = {
        "seed": SEED,
        "adamw": {"lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY,
                  "max_norm": MAX_NORM, "steps": ADAMW_STEPS},
        "simpo": {"beta": SIMPO_BETA, "gamma": SIMPO_GAMMA, "lm_weight": LM_WEIGHT},
        "gen": {"context_lengths": list(GEN_CONTEXT_LENGTHS), "new_tokens": GEN_NEW},
    }
    write_safetensors(
        os.path.join(OUT, "reference.safetensors"),
        ref,
        {"format": "pt", "settings": json.dumps(settings, sort_keys=True)},
    )
    drop = dropout_masks(DROPOUT_SEED, DROPOUT_STEP, DROPOUT_RATES)
    dref = {}
    d_logits = forward(p, inputs, drop)
    d_loss = lm_loss(target_logp(d_logits, targets), mask)
    dref.update({"drop.lm.logits": d_logits, "drop.lm.loss": d_loss.reshape(1)})
    dref.update({"drop.lm.grad." + k: g for k, g in grads(p, d_loss).items()})
    P = s_inputs.shape[0] // 2
    d_slogp = target_logp(forward(p, s_inputs, drop), s_targets)
    d_rewards = SIMPO_BETA * (comp_mask * d_slogp).sum(-1) / comp_mask.sum(-1)
    d_simpo = -torch.nn.functional.logsigmoid(d_rewards[:P] - d_rewards[P:] - SIMPO_GAMMA).mean()
    d_total = d_simpo + LM_WEIGHT * lm_loss(d_slogp[:P], lm_mask[:P])
    dref.update({"drop.simpo.logp": d_slogp, "drop.simpo.loss": d_total.reshape(1)})
    dref.update({"drop.simpo.grad." + k: g for k, g in grads(p, d_total).items()})
    d_settings = {"seed": DROPOUT_SEED, "step": DROPOUT_STEP, "rates": DROPOUT_RATES}
    write_safetensors(
        os.path.join(OUT, "dropout.safetensors"),
        dref,
        {"format": "pt", "settings": json.dumps(d_settings, sort_keys=True)},
    )
    print(f"lm.loss {loss.item():.6f}  adamw losses {[round(x, 6) for x in losses.tolist()]}")
    print(f"simpo.loss {total.item():.6f} (simpo {loss_simpo.item():.6f}, lm {loss_lm.item():.6f})")
    print(f"rewards {[round(x, 6) for x in rewards.tolist()]}")
    print(f"greedy {greedy.tolist()} (smallest top-2 gap {margin.item():.3g})")
    print(f"dropout: lm.loss {d_loss.item():.6f}  simpo.loss {d_total.item():.6f}")
    for f in ("config.json", "model.safetensors", "reference.safetensors", "dropout.safetensors"):
        print(f"wrote {os.path.join(OUT, f)} ({os.path.getsize(os.path.join(OUT, f))} bytes)")


if __name__ == "__main__":
    main()
