/**
 * KV-cached batched generation on the GPU: one prefill of all contexts (right-padded, each sequence's
 * keys and values stored in a per-layer cache), then one recorded decode step per new token that reads
 * the cache, samples on the GPU and appends to a token history. Steps are encoded several to a
 * submission; only the history comes back, a few times per batch.
 * @module
 */
import { Plan, type TensorView } from "./gpu.ts";
import type { GPT2 } from "./gpt2.ts";
import { Workspace } from "./gpt2.ts";
import { matmul } from "../shaders/matmul.ts";
import { layernormForward } from "../shaders/layernorm.ts";
import { residualForward } from "../shaders/residual.ts";
import { geluForward } from "../shaders/gelu.ts";
import { attentionDecode } from "../shaders/attention.ts";
import { advance, copyColumns, embedAt, increment, kvStore } from "../shaders/kvcache.ts";
import { sample, type SamplingParams } from "../shaders/sampling.ts";

/** Generation settings. */
export interface GenerateOptions {
  maxTokens: number;
  /** End-of-sequence is suppressed until this many tokens exist (default 0). */
  minTokens?: number;
  /** 0 = greedy (default 1). */
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  /** Defaults to the model's eos token. */
  eosId?: number;
  /** Sequences per GPU batch; default: as many as the adapter's limits and 64 allow. */
  batchSize?: number;
  /** Called with the number of new tokens produced so far, across all batches. */
  onProgress?: (tokensDone: number, tokensTotal: number) => void;
}

/** One continuation: the new token ids (without the stop token) and why it ended. */
export interface Generation {
  tokens: number[];
  finishReason: "length" | "stop";
}

/** Steps encoded per submission between reads of the history. */
const STEPS_PER_SUBMIT = 16;

/**
 * Continue each context. The random stream of context i depends only on (seed, firstId + i, step),
 * so a sequence gets the same tokens in any batch.
 */
export async function generate(
  model: GPT2,
  contexts: number[][],
  options: GenerateOptions,
  firstId = 0,
): Promise<Generation[]> {
  const { config, gpu } = model;
  const maxNew = options.maxTokens;
  if (!(Number.isInteger(maxNew) && maxNew >= 1)) throw new Error(`maxTokens must be >= 1, got ${maxNew}`);
  const minTokens = options.minTokens ?? 0;
  if (!(Number.isInteger(minTokens) && minTokens >= 0 && minTokens <= maxNew)) {
    throw new Error(`minTokens must be an integer in [0, maxTokens=${maxNew}], got ${minTokens}`);
  }
  contexts.forEach((c, i) => {
    if (c.length === 0) throw new Error(`context ${i} is empty (prepend BOS)`);
    if (c.length + maxNew > config.nPositions) {
      throw new Error(
        `context ${i} has ${c.length} tokens; with maxTokens ${maxNew} it exceeds the model's ` +
          `${config.nPositions} positions`,
      );
    }
  });
  const sampling: SamplingParams = {
    temperature: options.temperature ?? 1,
    topP: options.topP ?? 1,
    topK: options.topK ?? 0,
    minTokens,
    eosId: options.eosId ?? config.eosTokenId,
    seed: options.seed ?? 0,
  };
  // Longest first, so each batch pads little.
  const order = contexts.map((_, i) => i).sort((a, b) => contexts[b].length - contexts[a].length || a - b);
  const results = new Array<Generation>(contexts.length);
  const maxLen = contexts.reduce((m, c) => Math.max(m, c.length), 1);
  const perSeqBytes = (maxLen + maxNew) * config.nEmbd * 4;
  const byBinding = Math.floor(
    gpu.limits.maxStorageBufferBindingSize / Math.max(perSeqBytes, config.vocabSize * 4),
  );
  const batchSize = Math.max(1, Math.min(options.batchSize ?? 64, byBinding, contexts.length));
  let done = 0;
  for (let b0 = 0; b0 < order.length; b0 += batchSize) {
    const idx = order.slice(b0, b0 + batchSize);
    const batch = idx.map((i) => contexts[i]);
    const out = await generateBatch(model, batch, idx.map((i) => firstId + i), maxNew, sampling, (n) => {
      options.onProgress?.(done + n, contexts.length * maxNew);
    });
    done += batch.length * maxNew;
    idx.forEach((i, j) => (results[i] = out[j]));
  }
  return results;
}

async function generateBatch(
  model: GPT2,
  contexts: number[][],
  seqIds: number[],
  maxNew: number,
  s: SamplingParams,
  progress: (tokens: number) => void,
): Promise<Generation[]> {
  const { config, gpu } = model;
  const { nEmbd: C, nHead: H, nLayer: L, vocabSize: V, layerNormEpsilon: eps } = config;
  const nSeq = contexts.length;
  const Tctx = Math.max(...contexts.map((c) => c.length));
  const maxT = Tctx + maxNew;
  const owned: TensorView[] = [];
  const t = (n: number, label: string) => {
    const v = gpu.tensor(n, label);
    owned.push(v);
    return v;
  };
  const caches = Array.from(
    { length: L },
    (_, l) => ({ k: t(nSeq * maxT * C, `kcache${l}`), v: t(nSeq * maxT * C, `vcache${l}`) }),
  );
  const zeros = t(nSeq, "zeros");
  const pos = t(nSeq, "pos");
  const lens = t(nSeq, "lens");
  const tok = t(nSeq, "tok");
  const counts = t(nSeq, "counts");
  const ids = t(nSeq, "seqIds");
  const step = t(1, "step");
  const history = t(nSeq * maxNew, "history");
  const logits = t(nSeq * V, "logits");
  const x = t(nSeq * C, "x"), res2 = t(nSeq * C, "res2"), ln = t(nSeq * C, "ln"), proj = t(nSeq * C, "proj");
  const mean = t(nSeq, "mean"), rstd = t(nSeq, "rstd");
  const qkv = t(nSeq * 3 * C, "qkv"), q = t(nSeq * C, "q"), y = t(nSeq * C, "y");
  const fch = t(nSeq * 4 * C, "fch"), gelu = t(nSeq * 4 * C, "gelu");

  // Prefill: right-padded contexts; padding is never attended to (causal) and is overwritten by decode.
  const inputs = new Uint32Array(nSeq * Tctx).fill(s.eosId);
  contexts.forEach((c, i) => inputs.set(c, i * Tctx));
  const last = Uint32Array.from(contexts, (c) => c.length - 1);
  const lastIndex = t(nSeq, "lastIndex");
  gpu.write(lastIndex, last);
  gpu.write(pos, last);
  gpu.write(lens, Uint32Array.from(contexts, (c) => c.length));
  gpu.write(ids, Uint32Array.from(seqIds, (v) => v >>> 0));
  const ws = new Workspace(model, nSeq, Tctx, { prefill: { caches, maxT, zeros, lastIndex } });
  ws.setBatch(inputs, inputs);

  const wte = model.byName.get("wte.weight")!.parts;
  const P = (name: string) => model.view(name);
  const head = (plan: Plan, rows: TensorView) => {
    for (const chunk of wte) {
      matmul(plan, {
        out: logits,
        a: rows,
        b: chunk.view,
        M: nSeq,
        N: chunk.v1 - chunk.v0,
        K: C,
        transB: true,
        ldc: V,
        cOffset: chunk.v0,
      });
    }
    sample(plan, tok, counts, logits, ids, step, nSeq, V, s);
    advance(plan, history, pos, lens, tok, step, nSeq, maxNew);
    increment(plan, step);
  };
  const first = new Plan(gpu);
  head(first, ws.last!);

  // One decode step: the last sampled token at its position, through every block, reading the cache.
  const decode = new Plan(gpu);
  embedAt(decode, x, tok, pos, wte, P("wpe.weight"), nSeq, C);
  for (let l = 0; l < L; l++) {
    const h = `h.${l}.`;
    layernormForward(decode, ln, mean, rstd, x, P(h + "ln_1.weight"), P(h + "ln_1.bias"), nSeq, C, eps);
    matmul(decode, {
      out: qkv,
      a: ln,
      b: P(h + "attn.c_attn.weight"),
      bias: P(h + "attn.c_attn.bias"),
      M: nSeq,
      N: 3 * C,
      K: C,
    });
    kvStore(decode, caches[l].k, caches[l].v, qkv, pos, nSeq, 1, C, maxT);
    copyColumns(decode, q, qkv, nSeq, C, 3 * C, 0);
    attentionDecode(decode, y, q, caches[l].k, caches[l].v, lens, nSeq, C, H, maxT);
    matmul(decode, {
      out: proj,
      a: y,
      b: P(h + "attn.c_proj.weight"),
      bias: P(h + "attn.c_proj.bias"),
      M: nSeq,
      N: C,
      K: C,
    });
    residualForward(decode, res2, x, proj, nSeq * C);
    layernormForward(decode, ln, mean, rstd, res2, P(h + "ln_2.weight"), P(h + "ln_2.bias"), nSeq, C, eps);
    matmul(decode, {
      out: fch,
      a: ln,
      b: P(h + "mlp.c_fc.weight"),
      bias: P(h + "mlp.c_fc.bias"),
      M: nSeq,
      N: 4 * C,
      K: C,
    });
    geluForward(decode, gelu, fch, nSeq * 4 * C);
    matmul(decode, {
      out: proj,
      a: gelu,
      b: P(h + "mlp.c_proj.weight"),
      bias: P(h + "mlp.c_proj.bias"),
      M: nSeq,
      N: C,
      K: 4 * C,
    });
    residualForward(decode, x, res2, proj, nSeq * C);
  }
  layernormForward(decode, ln, mean, rstd, x, P("ln_f.weight"), P("ln_f.bias"), nSeq, C, eps);
  head(decode, ln);

  try {
    const device = gpu.device;
    let enc = device.createCommandEncoder();
    ws.forward.encode(enc);
    first.encode(enc);
    let made = 1;
    let finished = false;
    while (made < maxNew && !finished) {
      const n = Math.min(STEPS_PER_SUBMIT, maxNew - made);
      for (let i = 0; i < n; i++) decode.encode(enc);
      device.queue.submit([enc.finish()]);
      made += n;
      enc = device.createCommandEncoder();
      if (made < maxNew) {
        const hist = await gpu.readU32(history, 0, nSeq * maxNew);
        finished = allStopped(hist, nSeq, maxNew, made, s.eosId);
        progress(nSeq * made);
      }
    }
    device.queue.submit([enc.finish()]);
    const hist = await gpu.readU32(history, 0, nSeq * maxNew);
    progress(nSeq * maxNew);
    return contexts.map((_, i) => {
      const row = Array.from(hist.subarray(i * maxNew, i * maxNew + made));
      const stop = row.indexOf(s.eosId);
      return stop >= 0
        ? { tokens: row.slice(0, stop), finishReason: "stop" }
        : { tokens: row, finishReason: "length" };
    });
  } finally {
    ws.destroy();
    for (const v of owned) gpu.free(v);
  }
}

/** True when every sequence has emitted end-of-sequence within its first `made` tokens. */
function allStopped(hist: Uint32Array, nSeq: number, maxNew: number, made: number, eos: number): boolean {
  for (let i = 0; i < nSeq; i++) {
    if (!hist.subarray(i * maxNew, i * maxNew + made).includes(eos)) return false;
  }
  return true;
}
