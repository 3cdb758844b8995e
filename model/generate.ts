/**
 * KV-cached batched generation on the GPU. Per batch: one prefill of all contexts (right-padded; every
 * layer's keys and values stored in a per-layer cache), then one recorded decode step per new token that
 * embeds the last token at its own position, reads the cache, samples on the GPU and appends the token to
 * a history. Steps are encoded several to a submission and the next submission is queued before the
 * history of the previous one is read, so the GPU does not wait on the CPU; only token ids come back.
 *
 * A {@link Generator} keeps the batch's buffers and recorded plans while the shape stays the same: the
 * decode state by (sequences, cache length, new tokens, sampling settings), the prefill by its padded
 * context length (rounded up by {@link bucket} so batches of similar length share it). A shape
 * change frees the old state, its plans' uniform blocks included.
 * @module
 */
import { GpuCapacityError, type GpuLimits, Plan, type TensorView } from "../shaders/gpu.ts";
import { tune } from "../shaders/tune.ts";
import type { GPT2Config } from "./config.ts";
import { blockForward, blockWeights, type GPT2, lmHeadForward, Workspace } from "./gpt2.ts";
import { activationFloats, activationTable } from "./activations.ts";
import { layernormForward } from "../shaders/layernorm.ts";
import { attentionDecode } from "../shaders/attention.ts";
import { advance, copyColumns, embedAt, increment, kvStore } from "../shaders/kvcache.ts";
import { sample, type SamplingParams } from "../shaders/sampling.ts";
import { castToHalf, halfWords } from "../shaders/f16.ts";

/** Generation settings. */
export interface GenerateOptions {
  /** New tokens per context, at most (>= 1). */
  maxTokens: number;
  /** End-of-sequence is suppressed until this many tokens exist (default 0). */
  minTokens?: number;
  /** 0 = greedy (default 1). */
  temperature?: number;
  /** Nucleus mass in (0, 1] (default 1: off). */
  topP?: number;
  /** Keep the k most likely tokens; 0 = off (default). */
  topK?: number;
  /** RNG seed (taken modulo 2^32; default 0). */
  seed?: number;
  /** Defaults to the model's eos token. */
  eosId?: number;
  /** Most sequences per GPU batch (default 64); fewer when the adapter's limits or `memoryBytes` say so. */
  batchSize?: number;
  /**
   * Size the cache for contexts of up to this many tokens even if the given ones are shorter (never
   * less than the longest given), so calls with different contexts keep one shape and its buffers.
   */
  maxContextTokens?: number;
  /** Device memory one batch may use for its cache, prefill activations and scratch (default 1 GiB). */
  memoryBytes?: number;
  /** Called with the number of new tokens produced so far, across all batches (stopped rows count whole). */
  onProgress?: (tokensDone: number, tokensTotal: number) => void;
  /**
   * Debug hook: each step's logits [nSeq, V] before sampling; row j belongs to `contexts[seqIndices[j]]`,
   * and step k's logits predict new token k. Setting it makes every step a round trip to the CPU (meant
   * for tests); without it the logits never leave the GPU.
   */
  onStepLogits?: (step: number, logits: Float32Array, seqIndices: number[]) => void;
}

/** One continuation: the new token ids (without the stop token) and why it ended. */
export interface Generation {
  tokens: number[];
  finishReason: "length" | "stop";
}

/** Decode steps encoded per submission between reads of the history. */
const STEPS_PER_SUBMIT = 16;

/** Padded context lengths past 8 are multiples of this (capped by the model's positions), so shapes repeat. */
export const CONTEXT_BUCKET = 8;

/** Default of {@link GenerateOptions.memoryBytes}. */
const DEFAULT_MEMORY_BYTES = 1 << 30;

/** Batch shape chosen for a generation run. */
export interface BatchPlan {
  /** Sequences per batch. */
  batchSize: number;
  /** Cache positions per sequence: the padded longest context plus the new tokens. */
  maxT: number;
  /** Bytes of device memory one sequence needs (cache, prefill activations, step scratch). */
  bytesPerSequence: number;
}

/**
 * The padded prefill length for a longest context of n tokens: a power of two up to CONTEXT_BUCKET, then
 * a multiple of it (so short contexts are not padded several times over), never past `cap` (>= n).
 */
export function bucket(n: number, cap: number): number {
  const up = n <= CONTEXT_BUCKET
    ? 2 ** Math.ceil(Math.log2(n))
    : Math.ceil(n / CONTEXT_BUCKET) * CONTEXT_BUCKET;
  return Math.min(up, cap);
}

/**
 * Plan the batch size from the adapter's limits: every per-batch tensor (a layer's k or v cache
 * [n, maxT, C], the logits [n, V], the prefill's widest activation [n*T, 4C]) must fit one storage
 * binding, and the whole batch must fit `memoryBytes`. Throws GpuCapacityError if one sequence does not.
 */
export function planBatches(
  config: GPT2Config,
  limits: Pick<GpuLimits, "maxStorageBufferBindingSize">,
  nContexts: number,
  longestContext: number,
  maxNew: number,
  options: { batchSize?: number; memoryBytes?: number; half?: boolean } = {},
): BatchPlan {
  const { nEmbd: C, nLayer: L, nHead: H, vocabSize: V } = config;
  const Tctx = bucket(longestContext, config.nPositions - maxNew);
  const maxT = Tctx + maxNew;
  // Floats per sequence: k and v caches of every layer; the step's rows (x, res2, ln, proj, q, y: 6C;
  // qkv: 3C; fch, gelu: 8C; under f16 gelu is x16, 2C), logits, history and 9 per-sequence counters;
  // the prefill workspace.
  const prefill = activationTable(config, 1, Tctx, {
    training: false,
    prefill: true,
    logits: { rows: 0, stride: 0 },
    half: options.half,
  });
  const rows = options.half ? 15 * C : 17 * C;
  const floats = 2 * L * maxT * C + rows + V + maxNew + 9 + activationFloats(prefill);
  const bytesPerSequence = 4 * floats;
  const widest = 4 * Math.max(maxT * C, V, Tctx * 4 * C, H * Tctx);
  const memory = options.memoryBytes ?? DEFAULT_MEMORY_BYTES;
  const byBinding = Math.floor(limits.maxStorageBufferBindingSize / widest);
  const byMemory = Math.floor(memory / bytesPerSequence);
  if (byBinding < 1 || byMemory < 1) {
    throw new GpuCapacityError(
      `generation: one sequence of ${maxT} positions needs ${bytesPerSequence} bytes (memory budget ` +
        `${memory}) and a ${widest}-byte binding (adapter limit ${limits.maxStorageBufferBindingSize})`,
    );
  }
  const batchSize = Math.max(1, Math.min(options.batchSize ?? 64, byBinding, byMemory, nContexts));
  return { batchSize, maxT, bytesPerSequence };
}

/** Check the options and contexts; returns the sampling settings. Errors name the bad value. */
function checkInputs(config: GPT2Config, contexts: number[][], options: GenerateOptions): SamplingParams {
  const maxNew = options.maxTokens;
  if (!(Number.isInteger(maxNew) && maxNew >= 1)) {
    throw new Error(`maxTokens must be an integer >= 1, got ${maxNew}`);
  }
  const minTokens = options.minTokens ?? 0;
  if (!(Number.isInteger(minTokens) && minTokens >= 0 && minTokens <= maxNew)) {
    throw new Error(`minTokens must be an integer in [0, maxTokens=${maxNew}], got ${minTokens}`);
  }
  const V = config.vocabSize;
  const s: SamplingParams = {
    temperature: options.temperature ?? 1,
    topP: options.topP ?? 1,
    topK: options.topK ?? 0,
    minTokens,
    eosId: options.eosId ?? config.eosTokenId,
    seed: (options.seed ?? 0) >>> 0,
  };
  if (!(s.temperature >= 0 && Number.isFinite(s.temperature))) {
    throw new Error(`temperature must be a finite number >= 0, got ${s.temperature}`);
  }
  if (!(s.topP > 0 && s.topP <= 1)) throw new Error(`topP must be in (0, 1], got ${s.topP}`);
  if (!(Number.isInteger(s.topK) && s.topK >= 0)) {
    throw new Error(`topK must be an integer >= 0, got ${s.topK}`);
  }
  if (!(Number.isInteger(s.eosId) && s.eosId >= 0 && s.eosId < V)) {
    throw new Error(`eosId must be a token id in [0, ${V}), got ${s.eosId}`);
  }
  const mc = options.maxContextTokens;
  if (mc !== undefined && !(Number.isInteger(mc) && mc >= 1 && mc + maxNew <= config.nPositions)) {
    throw new Error(
      `maxContextTokens must be an integer in [1, ${config.nPositions - maxNew}] (positions - maxTokens), ` +
        `got ${mc}`,
    );
  }
  if (options.seed !== undefined && !Number.isInteger(options.seed)) {
    throw new Error(`seed must be an integer, got ${options.seed}`);
  }
  contexts.forEach((c, i) => {
    if (c.length === 0) throw new Error(`context ${i} is empty (prepend BOS)`);
    if (c.length + maxNew > config.nPositions) {
      throw new Error(
        `context ${i} has ${c.length} tokens; with maxTokens ${maxNew} it exceeds the model's ` +
          `${config.nPositions} positions`,
      );
    }
    c.forEach((t, j) => {
      if (!(Number.isInteger(t) && t >= 0 && t < V)) {
        throw new Error(`context ${i}, position ${j}: token ${t} is not an id in [0, ${V})`);
      }
    });
  });
  return s;
}

/**
 * Continue each context with a model; a {@link Generator} made for this call and freed after it.
 * The random stream of context i depends only on (seed, firstId + i, step), so a sequence gets the
 * same tokens in any batch and in any call with the same firstId + i.
 */
export async function generate(
  model: GPT2,
  contexts: number[][],
  options: GenerateOptions,
  firstId = 0,
): Promise<Generation[]> {
  const g = new Generator(model);
  try {
    return await g.generate(contexts, options, firstId);
  } finally {
    g.destroy();
  }
}

/** Buffers and plans of one prefill shape: the workspace and the first step (head on its last rows). */
interface PrefillState {
  Tctx: number;
  ws: Workspace;
  /** logits = last · wte^T. */
  firstLogits: Plan;
  /** firstLogits then pick. */
  firstStep: Plan;
}

/** Buffers and plans of one decode shape (nSeq, maxT, maxNew, sampling settings). */
interface DecodeState {
  key: string;
  nSeq: number;
  maxT: number;
  maxNew: number;
  caches: { k: TensorView; v: TensorView }[];
  zeros: TensorView;
  pos: TensorView;
  lens: TensorView;
  lastIndex: TensorView;
  ids: TensorView;
  counts: TensorView;
  step: TensorView;
  history: TensorView;
  logits: TensorView;
  /** One token through every block, reading the cache, up to the logits. */
  decodeLogits: Plan;
  /** Sample, append to the history, advance positions, step += 1. */
  pick: Plan;
  /** decodeLogits then pick. */
  decodeStep: Plan;
  owned: TensorView[];
  prefill?: PrefillState;
  /** Precision f16: the f16 copy of a linear's or the LM head's input rows (nSeq * 4C halves). */
  x16?: TensorView;
}

/**
 * KV-cached generation with one model. Keeps the last batch shape's buffers and plans, so a long run of
 * equal shapes allocates once; call {@link Generator.destroy} to free them.
 */
export class Generator {
  readonly model: GPT2;
  #state?: DecodeState;

  constructor(model: GPT2) {
    this.model = model;
  }

  /**
   * Continue each context (token ids, non-empty, BOS included if wanted) by up to `maxTokens` tokens.
   * Contexts are sorted longest first and cut into batches; results come back in input order.
   */
  async generate(contexts: number[][], options: GenerateOptions, firstId = 0): Promise<Generation[]> {
    const { config, gpu } = this.model;
    const s = checkInputs(config, contexts, options);
    if (contexts.length === 0) return [];
    const maxNew = options.maxTokens;
    const order = contexts.map((_, i) => i).sort((a, b) => contexts[b].length - contexts[a].length || a - b);
    const longest = Math.max(contexts[order[0]].length, options.maxContextTokens ?? 0);
    const { batchSize, maxT } = planBatches(config, gpu.limits, contexts.length, longest, maxNew, {
      ...options,
      half: !!this.model.half,
    });
    const results = new Array<Generation>(contexts.length);
    const total = contexts.length * maxNew;
    let done = 0;
    for (let b0 = 0; b0 < order.length; b0 += batchSize) {
      const idx = order.slice(b0, b0 + batchSize);
      const out = await this.#batch(
        idx.map((i) => contexts[i]),
        idx,
        idx.map((i) => firstId + i),
        maxT,
        maxNew,
        s,
        options,
        (n) => options.onProgress?.(done + n, total),
      );
      done += idx.length * maxNew;
      idx.forEach((i, j) => (results[i] = out[j]));
    }
    return results;
  }

  /** Free every buffer and plan (uniform blocks included) this generator holds. */
  destroy(): void {
    if (this.#state) this.#freeDecode(this.#state);
    this.#state = undefined;
  }

  /** One batch (sorted longest first): prefill, then decode until every row stopped or maxNew tokens. */
  async #batch(
    contexts: number[][],
    seqIndices: number[],
    seqIds: number[],
    maxT: number,
    maxNew: number,
    s: SamplingParams,
    options: GenerateOptions,
    progress: (tokens: number) => void,
  ): Promise<Generation[]> {
    const { gpu, config } = this.model;
    const nSeq = contexts.length;
    const Tctx = bucket(contexts[0].length, maxT - maxNew);
    const st = this.#decodeState(nSeq, maxT, maxNew, s);
    const pre = this.#prefillState(st, Tctx);

    // Right-padded contexts; padding is never attended to (causal) and decode overwrites its cache rows.
    const inputs = new Uint32Array(nSeq * Tctx).fill(s.eosId);
    contexts.forEach((c, i) => inputs.set(c, i * Tctx));
    pre.ws.setBatch(inputs, inputs);
    const last = Uint32Array.from(contexts, (c) => c.length - 1);
    gpu.write(st.lastIndex, last);
    gpu.write(st.pos, last);
    gpu.write(st.lens, Uint32Array.from(contexts, (c) => c.length));
    gpu.write(st.ids, Uint32Array.from(seqIds, (v) => v >>> 0));
    await tune(gpu);

    const device = gpu.device;
    const begin = () => {
      const enc = device.createCommandEncoder();
      for (const v of [st.counts, st.step, st.history]) enc.clearBuffer(v.buffer);
      pre.ws.forward.encode(enc);
      return enc;
    };
    const readHistory = () => gpu.readU32(st.history, 0, nSeq * maxNew);
    let made: number;
    if (options.onStepLogits) {
      const hook = options.onStepLogits;
      const enc = begin();
      pre.firstLogits.encode(enc);
      device.queue.submit([enc.finish()]);
      for (made = 0; made < maxNew; made++) {
        if (made > 0) st.decodeLogits.run();
        hook(made, await gpu.read(st.logits, 0, nSeq * config.vocabSize), seqIndices);
        st.pick.run();
        progress(nSeq * (made + 1));
      }
    } else {
      // Submit a chunk, then queue the read of its history and the next chunk before waiting on the read.
      let enc = begin();
      pre.firstStep.encode(enc);
      made = 1;
      let n = Math.min(STEPS_PER_SUBMIT - 1, maxNew - made);
      for (let i = 0; i < n; i++) st.decodeStep.encode(enc);
      device.queue.submit([enc.finish()]);
      made += n;
      while (made < maxNew) {
        const read = readHistory();
        const seen = made;
        n = Math.min(STEPS_PER_SUBMIT, maxNew - made);
        enc = device.createCommandEncoder();
        for (let i = 0; i < n; i++) st.decodeStep.encode(enc);
        device.queue.submit([enc.finish()]);
        made += n;
        const hist = await read;
        progress(nSeq * seen);
        // Every row has stopped: the chunk in flight only extends rows past their EOS.
        if (allStopped(hist, nSeq, maxNew, seen, s.eosId)) break;
      }
    }
    const hist = await readHistory();
    progress(nSeq * maxNew);
    return contexts.map((_, i) => {
      const row = Array.from(hist.subarray(i * maxNew, i * maxNew + made));
      const stop = row.indexOf(s.eosId);
      return stop >= 0
        ? { tokens: row.slice(0, stop), finishReason: "stop" }
        : { tokens: row, finishReason: "length" };
    });
  }

  /** The decode state for this shape and sampling: the held one, or a new one (freeing the old). */
  #decodeState(nSeq: number, maxT: number, maxNew: number, s: SamplingParams): DecodeState {
    const key = JSON.stringify([nSeq, maxT, maxNew, s]);
    if (this.#state?.key === key) return this.#state;
    this.destroy();
    const model = this.model;
    const { config, gpu } = model;
    const { nEmbd: C, nHead: H, nLayer: L, vocabSize: V, layerNormEpsilon: eps } = config;
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
    const st = {
      key,
      nSeq,
      maxT,
      maxNew,
      caches,
      zeros: t(nSeq, "zeros"),
      pos: t(nSeq, "pos"),
      lens: t(nSeq, "lens"),
      lastIndex: t(nSeq, "lastIndex"),
      ids: t(nSeq, "seqIds"),
      counts: t(nSeq, "counts"),
      step: t(1, "step"),
      history: t(nSeq * maxNew, "history"),
      logits: t(nSeq * V, "logits"),
      decodeLogits: new Plan(gpu),
      pick: new Plan(gpu),
      decodeStep: new Plan(gpu),
      owned,
      x16: model.half ? t(halfWords(nSeq * 4 * C), "x16") : undefined,
    };
    const tok = t(nSeq, "tok");
    const x = t(nSeq * C, "x"),
      res2 = t(nSeq * C, "res2"),
      ln = t(nSeq * C, "ln"),
      proj = t(nSeq * C, "proj");
    const mean = t(nSeq, "mean"), rstd = t(nSeq, "rstd");
    const qkv = t(nSeq * 3 * C, "qkv"), q = t(nSeq * C, "q"), y = t(nSeq * C, "y");
    // Under f16 GELU writes its output in f16 into x16 (blockForward).
    const fch = t(nSeq * 4 * C, "fch"), gelu = st.x16 ?? t(nSeq * 4 * C, "gelu");
    const wte = model.byName.get("wte.weight")!.parts;
    const { ids, counts, step, history, pos, lens } = st;

    sample(st.pick, { tokens: tok, counts, logits: st.logits, seqIds: ids, step, nSeq, V, settings: s });
    advance(st.pick, { history, pos, lens, tokens: tok, step, nSeq, maxNew });
    increment(st.pick, step);

    // One decode step: the last sampled token at its position (pos = length - 1 after advance). Every
    // block reads x and leaves its output in x (via res2), so the same rows serve all blocks.
    const d = st.decodeLogits;
    embedAt(d, { out: x, tokens: tok, pos, wte, wpe: model.view("wpe.weight"), nSeq, C });
    const a = { ln1: ln, ln1Mean: mean, ln1Rstd: rstd, qkv, atty: y, attproj: proj, res2 };
    const acts = { ...a, ln2: ln, ln2Mean: mean, ln2Rstd: rstd, fch, gelu, fcproj: proj, out: x };
    for (let l = 0; l < L; l++) {
      const { k, v } = caches[l];
      const attention = () => {
        kvStore(d, { kCache: k, vCache: v, qkv, base: pos, nSeq, rows: 1, C, maxT });
        copyColumns(d, { out: q, x: qkv, rows: nSeq, C, ld: 3 * C, offset: 0 });
        attentionDecode(d, { y, q, kCache: k, vCache: v, lengths: lens, nSeq, C, H, maxT });
      };
      const half = model.half && { W: model.half.blocks[l], x16: st.x16!, halfSums: model.half.halfSums };
      blockForward(d, { w: blockWeights(model, l), x, a: acts, N: nSeq, C, eps, attention, half });
    }
    const lnf = { weight: model.view("ln_f.weight"), bias: model.view("ln_f.bias") };
    // Under f16 every LayerNorm here writes ln in f16, the next matmul's operand (the LM head's too).
    layernormForward(d, { out: ln, mean, rstd, inp: x, ...lnf, N: nSeq, C, eps, half: !!model.half });
    const half = model.half && { wte: model.half.wte, x16: ln };
    lmHeadForward(d, { logits: st.logits, x: ln, wte, R: nSeq, C, ld: V, half });
    st.decodeStep.append(d);
    st.decodeStep.append(st.pick);
    this.#state = st;
    return st;
  }

  /** The prefill state for padded length Tctx within `st`: the held one, or a new one (freeing the old). */
  #prefillState(st: DecodeState, Tctx: number): PrefillState {
    if (st.prefill?.Tctx === Tctx) return st.prefill;
    if (st.prefill) this.#freePrefill(st.prefill);
    const gpu = this.model.gpu;
    const prefill = { caches: st.caches, maxT: st.maxT, zeros: st.zeros, lastIndex: st.lastIndex };
    const ws = new Workspace(this.model, st.nSeq, Tctx, { prefill });
    const firstLogits = new Plan(gpu);
    const { nEmbd: C, vocabSize: V } = this.model.config;
    const wte = this.model.byName.get("wte.weight")!.parts;
    const half = this.model.half && { wte: this.model.half.wte, x16: st.x16! };
    if (half) castToHalf(firstLogits, { out: half.x16, inp: ws.last!, n: st.nSeq * C });
    lmHeadForward(firstLogits, { logits: st.logits, x: ws.last!, wte, R: st.nSeq, C, ld: V, half });
    const firstStep = new Plan(gpu);
    firstStep.append(firstLogits);
    firstStep.append(st.pick);
    st.prefill = { Tctx, ws, firstLogits, firstStep };
    return st.prefill;
  }

  #freePrefill(p: PrefillState): void {
    p.ws.destroy();
    p.firstLogits.destroy();
  }

  #freeDecode(st: DecodeState): void {
    if (st.prefill) this.#freePrefill(st.prefill);
    st.decodeLogits.destroy();
    st.pick.destroy();
    for (const v of st.owned) this.model.gpu.free(v);
  }
}
/** True when every sequence has emitted end-of-sequence within its first `made` tokens. */
function allStopped(hist: Uint32Array, nSeq: number, maxNew: number, made: number, eos: number): boolean {
  for (let i = 0; i < nSeq; i++) {
    if (!hist.subarray(i * maxNew, i * maxNew + made).includes(eos)) return false;
  }
  return true;
}
