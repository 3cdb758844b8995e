/**
 * GPT-2 on WebGPU: parameters on the device, and the forward and backward passes recorded as plans
 * that read like the model (llm.c's `gpt2_forward` / `gpt2_backward`).
 *
 * Shapes: B sequences of T positions, width C, H heads, vocabulary V. Activations are [B*T, C] rows.
 * @module
 */
import { type Gpu, GpuCapacityError, Plan, type TensorView } from "../shaders/gpu.ts";
import { type GPT2Config, validateConfig } from "./config.ts";
import { numel, type ParamSpec, paramTable } from "./params.ts";
import { biasBackward, matmul } from "../shaders/matmul.ts";
import { layernormBackward, layernormForward } from "../shaders/layernorm.ts";
import { residualForward } from "../shaders/residual.ts";
import { geluBackward, geluForward } from "../shaders/gelu.ts";
import { attentionBackward, attentionForward } from "../shaders/attention.ts";
import { crossEntropyBackward, crossEntropyForward } from "../shaders/crossentropy.ts";
import { embeddingBackward, embeddingForward, EmbeddingGroups } from "../shaders/embedding.ts";
import { gatherRows, kvStore } from "../shaders/kvcache.ts";
import { Rng } from "./random.ts";

/** A slice of the token embedding: rows [v0, v1) of wte, small enough for one binding. */
export interface WteChunk {
  view: TensorView;
  v0: number;
  v1: number;
}

/** A parameter tensor on the device; wte is stored as several chunks, every other tensor as one. */
export interface DeviceParam {
  spec: ParamSpec;
  /** The tensor's parts, in row order (one part unless it had to be split). */
  parts: WteChunk[];
}

/**
 * Rows per part so that each part fits one storage binding; parts are balanced, and every part but the
 * last has a multiple of 4 rows where the limit allows, so that part boundaries stay 16-byte aligned
 * inside the logits rows (the LM head's vec4 matmuls need it).
 */
export function splitRows(rows: number, rowElements: number, maxBindingBytes: number): number[] {
  const maxRows = Math.floor(maxBindingBytes / (rowElements * 4));
  if (maxRows < 1) {
    throw new GpuCapacityError(
      `one row of ${rowElements} floats (${
        rowElements * 4
      } bytes) exceeds the binding limit ${maxBindingBytes}`,
    );
  }
  const n = Math.ceil(rows / maxRows);
  const balanced = Math.ceil(rows / n);
  const rounded = Math.ceil(balanced / 4) * 4;
  const per = rounded <= maxRows ? rounded : balanced;
  const out: number[] = [];
  for (let r = 0; r < rows; r += per) out.push(Math.min(per, rows - r));
  return out;
}

/** Allocate a set of tensors shaped like the parameter table (parameters, gradients, moments). */
export function allocParams(gpu: Gpu, config: GPT2Config, label: string): DeviceParam[] {
  return paramTable(config).map((spec) => {
    if (spec.shape.length === 2) {
      const [rows, cols] = spec.shape;
      const sizes = splitRows(rows, cols, gpu.limits.maxStorageBufferBindingSize);
      let v0 = 0;
      const parts = sizes.map((n, i) => {
        const view = gpu.tensor(n * cols, `${label}.${spec.name}${sizes.length > 1 ? `#${i}` : ""}`);
        const part = { view, v0, v1: v0 + n };
        v0 += n;
        return part;
      });
      return { spec, parts };
    }
    return { spec, parts: [{ view: gpu.tensor(numel(spec.shape), `${label}.${spec.name}`), v0: 0, v1: 1 }] };
  });
}

/**
 * GPT-2 weights initialised as Hugging Face does (normal 0.02; residual projections 0.02/sqrt(2L);
 * LayerNorm weight 1, biases 0), from a seed.
 */
export function initWeights(config: GPT2Config, seed: number): Map<string, Float32Array> {
  const r = new Rng(seed);
  const out = new Map<string, Float32Array>();
  for (const spec of paramTable(config)) {
    const a = new Float32Array(numel(spec.shape));
    if (spec.name.includes("ln_") && spec.name.endsWith(".weight")) a.fill(1);
    else if (spec.shape.length === 2) {
      const std = spec.name.endsWith("c_proj.weight") ? 0.02 / Math.sqrt(2 * config.nLayer) : 0.02;
      for (let i = 0; i < a.length; i++) a[i] = std * r.normal();
    }
    out.set(spec.name, a);
  }
  return out;
}

/** A GPT-2 model whose parameters live on the GPU. */
export class GPT2 {
  readonly gpu: Gpu;
  readonly config: GPT2Config;
  readonly params: DeviceParam[];
  readonly byName: Map<string, DeviceParam>;

  private constructor(gpu: Gpu, config: GPT2Config) {
    this.gpu = gpu;
    this.config = validateConfig(config);
    this.params = allocParams(gpu, config, "param");
    this.byName = new Map(this.params.map((p) => [p.spec.name, p]));
  }

  /** Make a model on `gpu` with `weights` (names as {@link paramTable}) or a seeded initialisation. */
  static create(gpu: Gpu, config: GPT2Config, weights?: Map<string, Float32Array>, seed = 0): GPT2 {
    const m = new GPT2(gpu, config);
    m.setWeights(weights ?? initWeights(config, seed));
    return m;
  }

  /** Upload weights; every tensor of the table must be present with the right size. */
  setWeights(weights: Map<string, Float32Array>): void {
    for (const p of this.params) {
      const w = weights.get(p.spec.name);
      if (!w) throw new Error(`weights: missing tensor ${p.spec.name}`);
      if (w.length !== numel(p.spec.shape)) {
        throw new Error(`weights: ${p.spec.name} has ${w.length} values, expected shape [${p.spec.shape}]`);
      }
      writeParts(this.gpu, p, w);
    }
  }

  /** Download all weights (for checkpoints). */
  async getWeights(): Promise<Map<string, Float32Array>> {
    return await readAll(this.gpu, this.params);
  }

  /** Free the parameter buffers; the model is unusable afterwards. */
  destroy(): void {
    for (const p of this.params) for (const part of p.parts) this.gpu.free(part.view);
  }

  /** The parameter's single view; throws for split tensors. */
  view(name: string): TensorView {
    const p = this.byName.get(name);
    if (!p) throw new Error(`no parameter ${name}`);
    if (p.parts.length !== 1) throw new Error(`parameter ${name} is split; use its parts`);
    return p.parts[0].view;
  }
}

/** Write a full tensor into its parts. */
export function writeParts(gpu: Gpu, p: DeviceParam, data: Float32Array): void {
  const cols = p.spec.shape.length === 2 ? p.spec.shape[1] : 0;
  if (p.parts.length === 1) gpu.write(p.parts[0].view, data);
  else for (const part of p.parts) gpu.write(part.view, data.subarray(part.v0 * cols, part.v1 * cols));
}

/** Read every tensor of a parameter-shaped set back to the CPU. */
export async function readAll(gpu: Gpu, set: DeviceParam[]): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const p of set) {
    const whole = new Float32Array(numel(p.spec.shape));
    let at = 0;
    for (const part of p.parts) {
      const data = await gpu.read(part.view);
      whole.set(data, at);
      at += data.length;
    }
    out.set(p.spec.name, whole);
  }
  return out;
}

/** Per-layer activations kept from forward for backward. */
interface LayerActs {
  ln1: TensorView;
  ln1Mean: TensorView;
  ln1Rstd: TensorView;
  qkv: TensorView;
  atty: TensorView;
  lse: TensorView;
  res2: TensorView;
  ln2: TensorView;
  ln2Mean: TensorView;
  ln2Rstd: TensorView;
  fch: TensorView;
  /** The layer's output (the next layer's input). */
  out: TensorView;
}

/** Options for {@link Workspace}. */
export interface WorkspaceOptions {
  /** Rows of logits computed at once; default: as many as fit `logitsBudgetBytes` and one binding. */
  logitsRows?: number;
  logitsBudgetBytes?: number;
  /** Parameter gradients to accumulate into; with them the workspace records backward too. */
  grads?: DeviceParam[];
  /**
   * Prefill for KV-cached generation: store every layer's keys and values into these caches
   * ([B, maxT, C] each, positions from 0), skip the loss, and gather each sequence's row at
   * `lastIndex[b]` after the final LayerNorm into {@link Workspace.last}.
   */
  prefill?: {
    caches: { k: TensorView; v: TensorView }[];
    maxT: number;
    zeros: TensorView;
    lastIndex: TensorView;
  };
}

/**
 * Device memory for one batch shape (B, T): inputs, activations, the logits chunk, backward scratch,
 * and the recorded forward and backward plans. Made once per shape and reused every step.
 */
export class Workspace {
  readonly model: GPT2;
  readonly B: number;
  readonly T: number;
  readonly tokens: TensorView;
  readonly targets: TensorView;
  /** ln p(target) per row [B*T], written by forward. */
  readonly lp: TensorView;
  readonly logitsLse: TensorView;
  /** dLoss/dlp per row [B*T]; the loss kernels write it before backward. */
  readonly g: TensorView;
  /** Loss masks per row [B*T] (f32 0/1): LM positions and completion positions. */
  readonly lmMask: TensorView;
  readonly compMask: TensorView;
  readonly grads?: DeviceParam[];
  readonly forward: Plan;
  readonly backward?: Plan;
  readonly embeddingGroups?: EmbeddingGroups;
  readonly logitsRows: number;
  /**
   * Row stride of the logits chunk: V rounded up to a multiple of 4, so that the LM head's backward
   * matmuls read dlogits as 16-byte vectors (the padding columns are never read as logits).
   */
  readonly logitsStride: number;
  /** With `prefill`: the final-LayerNorm row of each sequence's last context position [B, C]. */
  readonly last?: TensorView;

  #owned: TensorView[] = [];
  #encoded: TensorView;
  #acts: LayerActs[] = [];
  #lnf!: TensorView;
  #lnfMean!: TensorView;
  #lnfRstd!: TensorView;
  #logits: TensorView;
  #scratchC!: TensorView;
  #attproj: TensorView;
  #gelu: TensorView;
  #dres?: TensorView;
  #dC?: TensorView;
  #dqkv?: TensorView;
  #d4a?: TensorView;
  #d4b?: TensorView;
  #dlnf?: TensorView;

  constructor(model: GPT2, B: number, T: number, options: WorkspaceOptions = {}) {
    const { gpu, config } = model;
    const { nEmbd: C, nHead: H, vocabSize: V, nLayer: L } = config;
    if (T > config.nPositions) {
      throw new Error(`sequence length ${T} exceeds the model's ${config.nPositions} positions`);
    }
    if (!(B >= 1 && T >= 1)) throw new Error(`batch shape must be positive, got B=${B} T=${T}`);
    this.model = model;
    this.B = B;
    this.T = T;
    const N = B * T;
    const t = (n: number, label: string) => {
      const view = gpu.tensor(n, label);
      this.#owned.push(view);
      return view;
    };
    this.tokens = t(N, "tokens");
    this.targets = t(N, "targets");
    this.lp = t(N, "lp");
    this.logitsLse = t(N, "lse");
    this.g = t(N, "g");
    this.lmMask = t(N, "lmMask");
    this.compMask = t(N, "compMask");
    this.#encoded = t(N * C, "encoded");
    for (let l = 0; l < L; l++) {
      this.#acts.push({
        ln1: t(N * C, `l${l}.ln1`),
        ln1Mean: t(N, `l${l}.ln1Mean`),
        ln1Rstd: t(N, `l${l}.ln1Rstd`),
        qkv: t(N * 3 * C, `l${l}.qkv`),
        atty: t(N * C, `l${l}.atty`),
        lse: t(B * H * T, `l${l}.attLse`),
        res2: t(N * C, `l${l}.res2`),
        ln2: t(N * C, `l${l}.ln2`),
        ln2Mean: t(N, `l${l}.ln2Mean`),
        ln2Rstd: t(N, `l${l}.ln2Rstd`),
        fch: t(N * 4 * C, `l${l}.fch`),
        out: t(N * C, `l${l}.out`),
      });
    }
    this.#lnf = t(N * C, "lnf");
    this.#lnfMean = t(N, "lnfMean");
    this.#lnfRstd = t(N, "lnfRstd");
    this.#attproj = t(N * C, "attproj");
    this.#gelu = t(N * 4 * C, "gelu");
    const budget = options.logitsBudgetBytes ?? 64 * 1024 * 1024;
    const ld = this.logitsStride = Math.ceil(V / 4) * 4;
    const fit = Math.floor(Math.min(budget, gpu.limits.maxStorageBufferBindingSize) / (ld * 4));
    this.logitsRows = options.prefill ? 0 : Math.max(1, Math.min(N, options.logitsRows ?? fit));
    this.#logits = t(Math.max(1, this.logitsRows * ld), "logits");
    if (options.prefill) this.last = t(B * C, "last");
    this.forward = new Plan(gpu);
    this.#recordForward(this.forward, options.prefill);
    if (options.grads) {
      this.grads = options.grads;
      this.#dres = t(N * C, "dres");
      this.#dC = t(N * C, "dC");
      this.#dqkv = t(N * 3 * C, "dqkv");
      this.#d4a = t(N * 4 * C, "d4a");
      this.#d4b = t(N * 4 * C, "d4b");
      this.#dlnf = t(N * C, "dlnf");
      this.embeddingGroups = new EmbeddingGroups(gpu, N);
      this.backward = new Plan(gpu);
      this.#recordBackward(this.backward);
    }
  }

  /** Upload a batch: inputs and targets [B*T] (rows b*T+t). Also regroups tokens for embedding backward. */
  setBatch(inputs: Uint32Array, targets: Uint32Array, lmMask?: Float32Array, compMask?: Float32Array): void {
    const N = this.B * this.T;
    if (inputs.length !== N || targets.length !== N) {
      throw new Error(`batch must have ${N} inputs and targets, got ${inputs.length} and ${targets.length}`);
    }
    const V = this.model.config.vocabSize;
    for (let i = 0; i < N; i++) {
      if (inputs[i] >= V || targets[i] >= V) {
        throw new Error(
          `token id ${Math.max(inputs[i], targets[i])} at position ${i} is outside the vocabulary (${V})`,
        );
      }
    }
    const gpu = this.model.gpu;
    gpu.write(this.tokens, inputs);
    gpu.write(this.targets, targets);
    if (lmMask) gpu.write(this.lmMask, lmMask);
    if (compMask) gpu.write(this.compMask, compMask);
    this.embeddingGroups?.upload(inputs);
  }

  /** Record the forward pass: embeddings, blocks, final LayerNorm, and ln p(target) per row into lp. */
  #recordForward(plan: Plan, prefill?: WorkspaceOptions["prefill"]): void {
    const m = this.model;
    const { nEmbd: C, nHead: H, nLayer: L, layerNormEpsilon: eps } = m.config;
    const { B, T } = this;
    const N = B * T;
    const P = (name: string) => m.view(name);
    embeddingForward(
      plan,
      this.#encoded,
      this.tokens,
      m.byName.get("wte.weight")!.parts,
      P("wpe.weight"),
      B,
      T,
      C,
    );
    let x = this.#encoded;
    for (let l = 0; l < L; l++) {
      const a = this.#acts[l];
      const h = `h.${l}.`;
      layernormForward(
        plan,
        a.ln1,
        a.ln1Mean,
        a.ln1Rstd,
        x,
        P(h + "ln_1.weight"),
        P(h + "ln_1.bias"),
        N,
        C,
        eps,
      );
      matmul(plan, {
        out: a.qkv,
        a: a.ln1,
        b: P(h + "attn.c_attn.weight"),
        bias: P(h + "attn.c_attn.bias"),
        M: N,
        N: 3 * C,
        K: C,
      });
      if (prefill) {
        const cache = prefill.caches[l];
        kvStore(plan, cache.k, cache.v, a.qkv, prefill.zeros, B, T, C, prefill.maxT);
      }
      attentionForward(plan, a.atty, a.lse, a.qkv, B, T, C, H);
      matmul(plan, {
        out: this.#attproj,
        a: a.atty,
        b: P(h + "attn.c_proj.weight"),
        bias: P(h + "attn.c_proj.bias"),
        M: N,
        N: C,
        K: C,
      });
      residualForward(plan, a.res2, x, this.#attproj, N * C);
      layernormForward(
        plan,
        a.ln2,
        a.ln2Mean,
        a.ln2Rstd,
        a.res2,
        P(h + "ln_2.weight"),
        P(h + "ln_2.bias"),
        N,
        C,
        eps,
      );
      matmul(plan, {
        out: a.fch,
        a: a.ln2,
        b: P(h + "mlp.c_fc.weight"),
        bias: P(h + "mlp.c_fc.bias"),
        M: N,
        N: 4 * C,
        K: C,
      });
      geluForward(plan, this.#gelu, a.fch, N * 4 * C);
      matmul(plan, {
        out: this.#attproj,
        a: this.#gelu,
        b: P(h + "mlp.c_proj.weight"),
        bias: P(h + "mlp.c_proj.bias"),
        M: N,
        N: C,
        K: 4 * C,
      });
      residualForward(plan, a.out, a.res2, this.#attproj, N * C);
      x = a.out;
    }
    layernormForward(
      plan,
      this.#lnf,
      this.#lnfMean,
      this.#lnfRstd,
      x,
      P("ln_f.weight"),
      P("ln_f.bias"),
      N,
      C,
      eps,
    );
    if (prefill) {
      gatherRows(plan, this.last!, this.#lnf, prefill.lastIndex, B, T, C);
      return;
    }
    for (let r0 = 0; r0 < N; r0 += this.logitsRows) {
      const R = Math.min(this.logitsRows, N - r0);
      this.#recordLogits(plan, r0, R);
      crossEntropyForward(
        plan,
        this.lp,
        this.logitsLse,
        this.#logits,
        this.targets,
        R,
        m.config.vocabSize,
        r0,
        this.logitsStride,
      );
    }
  }

  /** logits[0:R, :] = lnf[r0:r0+R] · wte^T, one matmul per wte chunk. */
  #recordLogits(plan: Plan, r0: number, R: number): void {
    const { nEmbd: C } = this.model.config;
    for (const chunk of this.model.byName.get("wte.weight")!.parts) {
      matmul(plan, {
        out: this.#logits,
        a: this.#lnf,
        b: chunk.view,
        M: R,
        N: chunk.v1 - chunk.v0,
        K: C,
        transB: true,
        aOffset: r0 * C,
        ldc: this.logitsStride,
        cOffset: chunk.v0,
      });
    }
  }

  /**
   * Record the backward pass from g = dLoss/dlp (written by the loss kernels) to every parameter
   * gradient (accumulated; the caller clears them first).
   */
  #recordBackward(plan: Plan): void {
    const m = this.model;
    const grads = new Map(this.grads!.map((p) => [p.spec.name, p]));
    const G = (name: string) => grads.get(name)!.parts[0].view;
    const P = (name: string) => m.view(name);
    const { nEmbd: C, nHead: H, nLayer: L, vocabSize: V } = m.config;
    const { B, T } = this;
    const N = B * T;
    const dres = this.#dres!, dC = this.#dC!, dqkv = this.#dqkv!, d4a = this.#d4a!, d4b = this.#d4b!;
    const dlnf = this.#dlnf!;
    // Head: dlogits = g (onehot - softmax); dlnf = dlogits · wte; dwte += dlogits^T · lnf.
    const single = this.logitsRows >= N;
    const ld = this.logitsStride;
    for (let r0 = 0; r0 < N; r0 += this.logitsRows) {
      const R = Math.min(this.logitsRows, N - r0);
      // With one chunk the forward pass left the logits in place; otherwise recompute them.
      if (!single) this.#recordLogits(plan, r0, R);
      crossEntropyBackward(plan, this.#logits, this.logitsLse, this.targets, this.g, R, V, r0, ld);
      const wte = m.byName.get("wte.weight")!.parts;
      const dwte = grads.get("wte.weight")!.parts;
      wte.forEach((chunk, i) => {
        matmul(plan, {
          out: dlnf,
          a: this.#logits,
          b: chunk.view,
          M: R,
          N: C,
          K: chunk.v1 - chunk.v0,
          lda: ld,
          aOffset: chunk.v0,
          cOffset: r0 * C,
          accumulate: i > 0,
        });
        matmul(plan, {
          out: dwte[i].view,
          a: this.#logits,
          b: this.#lnf,
          M: chunk.v1 - chunk.v0,
          N: C,
          K: R,
          transA: true,
          lda: ld,
          aOffset: chunk.v0,
          bOffset: r0 * C,
          accumulate: true,
        });
      });
    }
    const xL = L > 0 ? this.#acts[L - 1].out : this.#encoded;
    layernormBackward(
      plan,
      dres,
      G("ln_f.weight"),
      G("ln_f.bias"),
      dlnf,
      xL,
      P("ln_f.weight"),
      this.#lnfMean,
      this.#lnfRstd,
      N,
      C,
    );
    for (let l = L - 1; l >= 0; l--) {
      const a = this.#acts[l];
      const h = `h.${l}.`;
      const x = l > 0 ? this.#acts[l - 1].out : this.#encoded;
      // MLP: out = res2 + gelu(ln2 · Wfc + bfc) · Wproj + bproj.
      geluForward(plan, d4b, a.fch, N * 4 * C);
      matmul(plan, {
        out: G(h + "mlp.c_proj.weight"),
        a: d4b,
        b: dres,
        M: 4 * C,
        N: C,
        K: N,
        transA: true,
        accumulate: true,
      });
      biasBackward(plan, G(h + "mlp.c_proj.bias"), dres, N, C);
      matmul(plan, { out: d4a, a: dres, b: P(h + "mlp.c_proj.weight"), M: N, N: 4 * C, K: C, transB: true });
      geluBackward(plan, d4b, a.fch, d4a, N * 4 * C);
      matmul(plan, {
        out: G(h + "mlp.c_fc.weight"),
        a: a.ln2,
        b: d4b,
        M: C,
        N: 4 * C,
        K: N,
        transA: true,
        accumulate: true,
      });
      biasBackward(plan, G(h + "mlp.c_fc.bias"), d4b, N, 4 * C);
      matmul(plan, { out: dC, a: d4b, b: P(h + "mlp.c_fc.weight"), M: N, N: C, K: 4 * C, transB: true });
      layernormBackward(
        plan,
        dres,
        G(h + "ln_2.weight"),
        G(h + "ln_2.bias"),
        dC,
        a.res2,
        P(h + "ln_2.weight"),
        a.ln2Mean,
        a.ln2Rstd,
        N,
        C,
      );
      // Attention: res2 = x + atty · Wproj + bproj.
      matmul(plan, {
        out: G(h + "attn.c_proj.weight"),
        a: a.atty,
        b: dres,
        M: C,
        N: C,
        K: N,
        transA: true,
        accumulate: true,
      });
      biasBackward(plan, G(h + "attn.c_proj.bias"), dres, N, C);
      matmul(plan, { out: dC, a: dres, b: P(h + "attn.c_proj.weight"), M: N, N: C, K: C, transB: true });
      attentionBackward(plan, dqkv, dC, a.qkv, a.atty, a.lse, B, T, C, H);
      matmul(plan, {
        out: G(h + "attn.c_attn.weight"),
        a: a.ln1,
        b: dqkv,
        M: C,
        N: 3 * C,
        K: N,
        transA: true,
        accumulate: true,
      });
      biasBackward(plan, G(h + "attn.c_attn.bias"), dqkv, N, 3 * C);
      matmul(plan, { out: dC, a: dqkv, b: P(h + "attn.c_attn.weight"), M: N, N: C, K: 3 * C, transB: true });
      layernormBackward(
        plan,
        dres,
        G(h + "ln_1.weight"),
        G(h + "ln_1.bias"),
        dC,
        x,
        P(h + "ln_1.weight"),
        a.ln1Mean,
        a.ln1Rstd,
        N,
        C,
      );
    }
    embeddingBackward(
      plan,
      grads.get("wte.weight")!.parts,
      G("wpe.weight"),
      dres,
      this.embeddingGroups!,
      B,
      T,
      C,
    );
  }

  /** Free every buffer this workspace allocated (not the shared gradients). */
  destroy(): void {
    for (const v of this.#owned) this.model.gpu.free(v);
    this.#owned = [];
  }

  /** Clear dres, which backward accumulates into (the caller clears the parameter gradients). */
  encodeClear(encoder: GPUCommandEncoder): void {
    if (this.#dres) encoder.clearBuffer(this.#dres.buffer);
  }

  /** Total bytes of this workspace's activations and scratch (for memory reports). */
  static activationFloats(config: GPT2Config, B: number, T: number, training: boolean): number {
    const { nEmbd: C, nHead: H, nLayer: L } = config;
    const N = B * T;
    const perLayer = 13 * N * C + 4 * N + B * H * T;
    const fwd = 5 * N + N * C + L * perLayer + 3 * N * C + 2 * N + N * 4 * C;
    return training ? fwd + 10 * N * C + 2 * N * 4 * C : fwd;
  }
}
