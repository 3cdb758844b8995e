#!/usr/bin/python3
"""PyTorch reference for fine-tuning the tiny GPT-2 with the BabyLM pipeline's classification head.

Run with Debian's python: `/usr/bin/python3 tests/make_finetune_fixture.py`. Reads the tiny model that
tests/make_fixtures.py wrote (tests/fixtures/gpt2_tiny/model.safetensors) and writes only
tests/fixtures/gpt2_tiny/finetune.safetensors; the other fixture files are left as they are.

The model, in float64 from the float32 weights (the pipeline's ModelForSequenceClassification over
GPT2Model, whose last hidden state is after ln_f):
  h = ln_f(GPT-2 blocks(wte[ids] + wpe[pos]))   with the padding mask below
  z = h[b, pool_b];  head(z) = W5 drop(LN(gelu(W1 LN(z) + b1))) + b5,  LN without affine (eps 1e-5),
  gelu the exact erf form (nn.GELU()),  loss = mean cross-entropy.
Left padding ("left" case, 3 labels): sequence b's tokens are ids[b, ks_b:], pool_b = T-1, position
ids t - ks_b (0 on the padding), and key j is visible to query i iff j <= i and (j >= ks_b or i < ks_b).
"absolute": the same batch with positions 0..T-1 (transformers 4.51 without position ids).
"first": right padding, pool_b = 0 (the 2025 default); the padding is after the text, so causality
alone hides it.

Train mode uses the engine's counter-based dropout masks (make_fixtures.dropout_bits) at DROPOUT_SEED:
GPT-2's four sites at DROPOUT_RATES and the head's dropout at site 3L+1 (row b, column c) at HEAD_DROPOUT,
keyed by the optimiser step (1, 2, 3: the step being taken).
  left.ids [3,9] (I32), left.key_start [3] (I32), left.labels [3] (I32)
  head.<name> the head's initial weights, the pipeline's state-dict names ([out, in] weights)
  left.logits, absolute.logits, first.logits [3,3]: eval mode
  left.train.loss [1], left.train.grad.<name> (every transformer parameter and head tensor): train mode at
    step 1
  left.adamw.lrs [3], left.adamw.losses [3], left.adamw3.<name>: three steps of torch.optim.AdamW, one
    parameter group with weight decay 0.01 on every tensor, no clipping, at the pipeline's schedule for 3
    steps with 1 warm-up step (lr 0 first), peak ADAMW_LR.
"""

import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

DROPOUT_SEED = 777
DROPOUT_RATES = {"embd": 0.1, "attn": 0.2, "resid": 0.15}
HEAD_DROPOUT = 0.25
NUM_LABELS = 3
ADAMW_LR, BETAS, EPS, WEIGHT_DECAY, STEPS, WARMUP = 1e-2, (0.9, 0.999), 1e-8, 0.01, 3, 1
HEAD_NAMES = [
    "classifier.nonlinearity.1.weight",
    "classifier.nonlinearity.1.bias",
    "classifier.nonlinearity.5.weight",
    "classifier.nonlinearity.5.bias",
]


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[8 + n + a : 8 + n + b]), dtype=torch.float32)
        out[name] = t.view(info["shape"]).double()
    return out


def head_init(gen, C, L):
    """nn.Linear's default draws (uniform in +-1/sqrt(in)), float32-rounded."""
    bound = 1 / math.sqrt(C)
    u = lambda *shape: ((torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)  # noqa: E731
    return {HEAD_NAMES[0]: u(C, C), HEAD_NAMES[1]: u(C), HEAD_NAMES[2]: u(L, C), HEAD_NAMES[3]: u(L)}


def head_mask(step, B, C):
    site = 3 * mf.CONFIG["n_layer"] + 1
    threshold = math.ceil(HEAD_DROPOUT * 2**32)
    keep = [[mf.dropout_bits(DROPOUT_SEED, step, site, b, c) >= threshold for c in range(C)] for b in range(B)]
    return torch.tensor(keep, dtype=torch.float64) / (1 - HEAD_DROPOUT)


def classify(p, ids, key_start, pool, positions, step=None):
    """Logits [B, L]; train mode (dropout at `step`) when step is given."""
    B, T = ids.shape
    C, H = mf.CONFIG["n_embd"], mf.CONFIG["n_head"]
    hd = C // H
    drop = mf.dropout_masks(DROPOUT_SEED, step, DROPOUT_RATES) if step is not None else None

    def dropped(u, site, shape):
        return u if drop is None else u * drop(site, shape)

    t = torch.arange(T)
    ks = key_start.view(B, 1)
    pos = (t.view(1, T) - ks).clamp(min=0) if positions == "sequence" else t.view(1, T).expand(B, T)
    x = dropped(p["wte.weight"][ids] + p["wpe.weight"][pos], 0, (B, T, C))
    i, j = t.view(1, T, 1), t.view(1, 1, T)
    ksb = ks.view(B, 1, 1)
    visible = (j <= i) & ((j >= ksb) | (i < ksb))
    for l in range(mf.CONFIG["n_layer"]):
        g = lambda n: p[f"h.{l}.{n}"]  # noqa: E731
        a = mf.layer_norm(x, g("ln_1.weight"), g("ln_1.bias"))
        qkv = a @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
        q, k, v = (u.view(B, T, H, hd).transpose(1, 2) for u in qkv.split(C, dim=2))
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(~visible.view(B, 1, T, T), float("-inf")).softmax(dim=-1)
        att = dropped(att, 3 * l + 1, (B, H, T, T))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + dropped(y @ g("attn.c_proj.weight") + g("attn.c_proj.bias"), 3 * l + 2, (B, T, C))
        m = mf.layer_norm(x, g("ln_2.weight"), g("ln_2.bias"))
        h = mf.gelu_new(m @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias"))
        x = x + dropped(h @ g("mlp.c_proj.weight") + g("mlp.c_proj.bias"), 3 * l + 3, (B, T, C))
    x = mf.layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    z = x[torch.arange(B), pool]
    ln = lambda u: torch.nn.functional.layer_norm(u, (C,), eps=1e-5)  # noqa: E731
    h1 = torch.nn.functional.gelu(ln(z) @ p[HEAD_NAMES[0]].t() + p[HEAD_NAMES[1]])
    h2 = ln(h1)
    if step is not None:
        h2 = h2 * head_mask(step, B, C)
    return h2 @ p[HEAD_NAMES[2]].t() + p[HEAD_NAMES[3]]


def lr_at(k):
    """The pipeline's cosine_schedule_with_warmup factor at scheduler step k (min factor 0.1)."""
    if k < WARMUP:
        return k / max(1, WARMUP)
    progress = (k - WARMUP) / max(1, STEPS - WARMUP)
    return max(0.1, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main():
    torch.set_num_threads(1)
    base = os.path.join(mf.OUT, "model.safetensors")
    p = {k.removeprefix("transformer."): v.requires_grad_(True) for k, v in read_safetensors(base).items()}
    gen = torch.Generator().manual_seed(mf.SEED + 14)
    C, V, eos = mf.CONFIG["n_embd"], mf.CONFIG["vocab_size"], mf.CONFIG["eos"]
    head = head_init(gen, C, NUM_LABELS)
    for k, v in head.items():
        p[k] = v.float().double().requires_grad_(True)
    B, T = 3, 9
    lengths = [9, 5, 2]
    key_start = torch.tensor([T - n for n in lengths])
    ids = torch.randint(0, V - 1, (B, T), generator=gen)
    right = ids.clone()
    for b, n in enumerate(lengths):
        ids[b, : T - n] = eos
        right[b, :n] = ids[b, T - n :]
        right[b, n:] = eos
    labels = torch.tensor([2, 0, 1])
    last = torch.full((B,), T - 1)
    ref = {"left.ids": ids, "left.key_start": key_start, "left.labels": labels, "first.ids": right}
    ref.update({"head." + k: v for k, v in head.items()})
    with torch.no_grad():
        ref["left.logits"] = classify(p, ids, key_start, last, "sequence")
        ref["absolute.logits"] = classify(p, ids, key_start, last, "absolute")
        ref["first.logits"] = classify(p, right, torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long), "sequence")
    ce = torch.nn.functional.cross_entropy
    loss = ce(classify(p, ids, key_start, last, "sequence", step=1), labels)
    ref["left.train.loss"] = loss.reshape(1)
    ref.update({"left.train.grad." + k: g for k, g in mf.grads(p, loss).items()})

    q = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
    opt = torch.optim.AdamW(list(q.values()), lr=ADAMW_LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    lrs, losses = [], []
    for k in range(STEPS):
        lr = ADAMW_LR * lr_at(k)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        step_loss = ce(classify(q, ids, key_start, last, "sequence", step=k + 1), labels)
        step_loss.backward()
        opt.step()
        lrs.append(lr)
        losses.append(step_loss.item())
    ref["left.adamw.lrs"] = torch.tensor(lrs, dtype=torch.float64)
    ref["left.adamw.losses"] = torch.tensor(losses, dtype=torch.float64)
    ref.update({"left.adamw3." + k: v for k, v in q.items()})
    settings = {
        "dropout": {"seed": DROPOUT_SEED, "rates": DROPOUT_RATES, "head": HEAD_DROPOUT},
        "num_labels": NUM_LABELS,
        "adamw": {"lr": ADAMW_LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY, "steps": STEPS,
                  "warmup": WARMUP},
    }
    path = os.path.join(mf.OUT, "finetune.safetensors")
    mf.write_safetensors(path, ref, {"format": "pt", "settings": json.dumps(settings, sort_keys=True)})
    print(f"train loss {loss.item():.6f}  adamw losses {[round(x, 6) for x in losses]}  lrs {lrs}")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
