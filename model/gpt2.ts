/**
 * GPT-2 on WebGPU: parameters on the device, and the forward and backward passes recorded as plans
 * that read like the model (llm.c's `gpt2_forward` / `gpt2_backward`).
 *
 * Shapes: B sequences of T positions, width C, H heads, vocabulary V. Activations are [B*T, C] rows.
 * @module
 */
import { type Gpu, GpuCapacityError, Plan, type TensorView } from "../shaders/gpu.ts";
import { type DropoutRates, type GPT2Config, validateConfig } from "./config.ts";
import { numel, type ParamSpec, paramTable } from "./params.ts";
import { type ActivationSpec, activationTable, logitsChunk } from "./activations.ts";
import { linearBackward, linearForward, matmul } from "../shaders/matmul.ts";
import { layernormBackward, layernormForward } from "../shaders/layernorm.ts";
import { residualForward } from "../shaders/residual.ts";
import {
  DROPOUT_SITE,
  dropoutCopy,
  dropoutInPlace,
  type DropoutKey,
  dropoutResidual,
} from "../shaders/dropout.ts";
import { geluBackward, geluForward } from "../shaders/gelu.ts";
import { attentionBackward, attentionForward } from "../shaders/attention.ts";
import { crossEntropyBackward, crossEntropyForward } from "../shaders/crossentropy.ts";
import { embeddingBackward, embeddingForward, EmbeddingGroups } from "../shaders/embedding.ts";
import { gatherRows, kvStore } from "../shaders/kvcache.ts";
import { Rng } from "./random.ts";
import {
  type BlockHalfWeights,
  checkHalfSums,
  HalfWeights,
  type Precision,
  type PrecisionOptions,
} from "./precision.ts";
import { castToHalf } from "../shaders/f16.ts";

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
  /** The f16 copies of the matmul weights under precision f16 ({@link usePrecision}). */
  half?: HalfWeights;

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
    this.half?.cast.run();
  }

  /** The precision of the matmul operands (model/precision.ts). */
  get precision(): Precision {
    return this.half ? "f16" : "f32";
  }

  /** f16 arithmetic in the blocks' linear layers ({@link PrecisionOptions.halfSums}). */
  get halfSums(): boolean {
    return this.half?.halfSums ?? false;
  }

  /**
   * Run the matmuls in `precision` from now on: f16 makes the weights' f16 copies (throws naming the
   * feature and the adapter without `shader-f16`); `options.halfSums` (f16 only, else an error) adds
   * f16 arithmetic in the blocks' linear layers. Call it before making workspaces, trainers, scorers
   * or generators: they record their plans for the precision in force when they are made.
   */
  usePrecision(precision: Precision, options: PrecisionOptions = {}): this {
    const halfSums = options.halfSums ?? false;
    checkHalfSums(precision, halfSums, "usePrecision");
    if (precision === "f32") {
      this.half?.destroy();
      this.half = undefined;
      return this;
    }
    if (!this.half) {
      this.half = new HalfWeights(this);
      this.half.cast.run();
    }
    this.half.halfSums = halfSums;
    return this;
  }

  /** Download all weights (for checkpoints). */
  async getWeights(): Promise<Map<string, Float32Array>> {
    return await readAll(this.gpu, this.params);
  }

  /** Free the parameter buffers; the model is unusable afterwards. */
  destroy(): void {
    for (const p of this.params) for (const part of p.parts) this.gpu.free(part.view);
    this.half?.destroy();
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

/** One block's tensors by the paper's boxes: ln_1, attention (c_attn, c_proj), ln_2, MLP (c_fc, c_proj). */
interface BlockOf<LN, Linear> {
  ln1: LN;
  attn: Linear;
  attnProj: Linear;
  ln2: LN;
  fc: Linear;
  fcProj: Linear;
}
/** A block's parameters: LayerNorm weight and bias, linear layers y = x W + b. */
export type BlockWeights = BlockOf<
  { weight: TensorView; bias: TensorView },
  { W: TensorView; b: TensorView }
>;
/** A block's parameter gradients, boxed as {@link BlockWeights}. */
export type BlockGrads = BlockOf<
  { dweight: TensorView; dbias: TensorView },
  { dW: TensorView; db: TensorView }
>;

/** Block l's boxes from a parameter-shaped set, each box's (weight, bias) views named by `ln` or `linear`. */
function blockOf<LN, Linear>(
  view: (name: string) => TensorView,
  l: number,
  ln: (weight: TensorView, bias: TensorView) => LN,
  linear: (weight: TensorView, bias: TensorView) => Linear,
): BlockOf<LN, Linear> {
  const pair = (box: string) => [view(`h.${l}.${box}.weight`), view(`h.${l}.${box}.bias`)] as const;
  return {
    ln1: ln(...pair("ln_1")),
    attn: linear(...pair("attn.c_attn")),
    attnProj: linear(...pair("attn.c_proj")),
    ln2: ln(...pair("ln_2")),
    fc: linear(...pair("mlp.c_fc")),
    fcProj: linear(...pair("mlp.c_proj")),
  };
}

/** Block l's parameters of `model`. */
export function blockWeights(model: GPT2, l: number): BlockWeights {
  return blockOf((name) => model.view(name), l, (weight, bias) => ({ weight, bias }), (W, b) => ({ W, b }));
}

/** Block l's parameter gradients in `grads`. */
export function blockGrads(grads: Map<string, DeviceParam>, l: number): BlockGrads {
  const view = (name: string) => grads.get(name)!.parts[0].view;
  return blockOf(view, l, (dweight, dbias) => ({ dweight, dbias }), (dW, db) => ({ dW, db }));
}

/**
 * What one block writes. Training keeps each block's own set for backward; decoding passes the same
 * views to every block (ln1 = ln2, attproj = fcproj), since nothing reads them later.
 */
export interface BlockActivations {
  ln1: TensorView;
  ln1Mean: TensorView;
  ln1Rstd: TensorView;
  qkv: TensorView;
  atty: TensorView;
  attproj: TensorView;
  res2: TensorView;
  ln2: TensorView;
  ln2Mean: TensorView;
  ln2Rstd: TensorView;
  fch: TensorView;
  /** GELU's output; an f16 tensor (the MLP projection's operand) under precision f16. */
  gelu: TensorView;
  fcproj: TensorView;
  /** x + attention + MLP: the next block's input. Must not be x itself. */
  out: TensorView;
}

/**
 * A training block's activations from an activation table's allocation (model/activations.ts): the
 * layer's own tensors `layer`, and from the whole-model ones `shared` the scratch no layer keeps its own
 * of (`proj`, the output of both projections, and `gelu`).
 */
export function blockActivations(
  layer: Record<string, TensorView>,
  shared: Map<string, TensorView>,
): BlockActivations {
  const proj = shared.get("proj")!;
  return {
    ln1: layer.ln1,
    ln1Mean: layer.ln1Mean,
    ln1Rstd: layer.ln1Rstd,
    qkv: layer.qkv,
    atty: layer.atty,
    attproj: proj,
    res2: layer.res2,
    ln2: layer.ln2,
    ln2Mean: layer.ln2Mean,
    ln2Rstd: layer.ln2Rstd,
    fch: layer.fch,
    // Under f16 the table has no f32 gelu: GELU writes its output, an f16 matmul operand, into x16.
    gelu: shared.get("gelu") ?? shared.get("x16")!,
    fcproj: proj,
    out: layer.out,
  };
}

/** Precision f16 for one block: its f16 weights and the f16 scratch its matmuls read. */
export interface BlockHalf {
  W: BlockHalfWeights;
  /** A linear's input in f16, at least N * 4C halves. */
  x16: TensorView;
  /** Backward: a linear's output gradient in f16, at least N * 4C halves. */
  dy16?: TensorView;
  /** f16 arithmetic for the linears' y = x W and dx = dy W^T (model/precision.ts); dW keeps f32 sums. */
  halfSums?: boolean;
}

/**
 * Training-mode dropout (transformers' train mode): the per-step key, the rates, and the mask sites of
 * the embedding output and of each block (shaders/dropout.ts). Only a training workspace has one.
 */
export interface ModelDropout {
  key: DropoutKey;
  rates: DropoutRates;
}

/** The elementwise dropout of `site` over N rows of width C at `rate`, or none at rate 0. */
function dropSpec(d: ModelDropout | undefined, rate: number, site: number, N: number, C: number) {
  return d && rate > 0 ? { key: d.key, site, rate, rows: N, cols: C } : undefined;
}

/** The attention-probability dropout of block `layer`, or none. */
export function attentionDropout(d: ModelDropout | undefined, layer: number) {
  return d && d.rates.attnPdrop > 0
    ? { key: d.key, site: DROPOUT_SITE.attn(layer), rate: d.rates.attnPdrop }
    : undefined;
}

/**
 * Record one transformer block over N rows of width C (nanoGPT's Block):
 * res2 = x + attn(ln_1(x)), out = res2 + mlp(ln_2(res2)). `attention` records atty from qkv. With
 * `dropout`, both branches are dropped before their residual adds (resid_pdrop, block `layer`'s sites).
 */
export function blockForward(
  plan: Plan,
  { w, x, a, N, C, eps, attention, dropout, layer = 0, half }: {
    w: BlockWeights;
    x: TensorView;
    a: BlockActivations;
    N: number;
    C: number;
    eps: number;
    attention: () => void;
    dropout?: ModelDropout;
    layer?: number;
    /** Precision f16: the block's f16 weights and scratch for the linears' f16 inputs (N * 4C halves). */
    half?: BlockHalf;
  },
): void {
  const halfSums = half?.halfSums;
  const h = (W16: TensorView | undefined) => half && { W16: W16!, x16: half.x16, halfSums };
  // f16: the LayerNorms write their outputs as the next linear's f16 operand (a.ln1, a.ln2 are f16).
  const lnOut = (ln: TensorView, W16: TensorView | undefined) =>
    half && { W16: W16!, x16: ln, xHalf: true, halfSums };
  const lnHalf = !!half;
  const rate = dropout?.rates.residPdrop ?? 0;
  const attnDrop = dropSpec(dropout, rate, DROPOUT_SITE.attnResid(layer), N, C);
  const mlpDrop = dropSpec(dropout, rate, DROPOUT_SITE.mlpResid(layer), N, C);
  const ln1 = { out: a.ln1, mean: a.ln1Mean, rstd: a.ln1Rstd, inp: x, ...w.ln1, N, C, eps, half: lnHalf };
  layernormForward(plan, ln1);
  linearForward(plan, {
    y: a.qkv,
    x: a.ln1,
    ...w.attn,
    rows: N,
    inC: C,
    outC: 3 * C,
    half: lnOut(a.ln1, half?.W.attn),
  });
  attention();
  linearForward(plan, {
    y: a.attproj,
    x: a.atty,
    ...w.attnProj,
    rows: N,
    inC: C,
    outC: C,
    half: h(half?.W.attnProj),
  });
  if (attnDrop) dropoutResidual(plan, a.res2, x, a.attproj, attnDrop);
  else residualForward(plan, { out: a.res2, a: x, b: a.attproj, n: N * C });
  const ln2 = {
    out: a.ln2,
    mean: a.ln2Mean,
    rstd: a.ln2Rstd,
    inp: a.res2,
    ...w.ln2,
    N,
    C,
    eps,
    half: lnHalf,
  };
  layernormForward(plan, ln2);
  linearForward(plan, {
    y: a.fch,
    x: a.ln2,
    ...w.fc,
    rows: N,
    inC: C,
    outC: 4 * C,
    half: lnOut(a.ln2, half?.W.fc),
  });
  // f16: GELU writes its output as the projection's f16 operand (a.gelu is then an f16 tensor).
  geluForward(plan, { out: a.gelu, inp: a.fch, n: N * 4 * C, half: !!half });
  linearForward(plan, {
    y: a.fcproj,
    x: a.gelu,
    ...w.fcProj,
    rows: N,
    inC: 4 * C,
    outC: C,
    half: half && { W16: half.W.fcProj, x16: a.gelu, xHalf: true, halfSums },
  });
  if (mlpDrop) dropoutResidual(plan, a.out, a.res2, a.fcproj, mlpDrop);
  else residualForward(plan, { out: a.out, a: a.res2, b: a.fcproj, n: N * C });
}

/**
 * logits[0:R, :] = x[r0:r0+R] · wte^T (the tied LM head), one matmul per wte chunk; row stride `ld`.
 * With `half` the matmuls read x16 (x's f16 copy, cast by the caller) and wte's f16 chunks instead.
 */
export function lmHeadForward(
  plan: Plan,
  { logits, x, wte, R, C, ld, r0 = 0, half }: {
    logits: TensorView;
    x: TensorView;
    wte: WteChunk[];
    R: number;
    C: number;
    ld: number;
    r0?: number;
    half?: { wte: WteChunk[]; x16: TensorView };
  },
): void {
  (half?.wte ?? wte).forEach((chunk) => {
    matmul(plan, {
      out: logits,
      a: half?.x16 ?? x,
      b: chunk.view,
      half: !!half,
      M: R,
      N: chunk.v1 - chunk.v0,
      K: C,
      transB: true,
      aOffset: r0 * C,
      ldc: ld,
      cOffset: chunk.v0,
    });
  });
}

/**
 * The tied LM head's backward for logits rows r0..r0+R: dx[r0:r0+R] = dlogits · wte (overwritten) and
 * dwte += dlogits^T · x[r0:r0+R], one matmul pair per wte chunk; dlogits row stride `ld`.
 */
function lmHeadBackward(
  plan: Plan,
  { dx, dwte, dlogits, x, wte, R, C, ld, r0, half }: {
    dx: TensorView;
    dwte: WteChunk[];
    dlogits: TensorView;
    x: TensorView;
    wte: WteChunk[];
    R: number;
    C: number;
    ld: number;
    r0: number;
    /** Read f16 copies: wte's chunks, x16 (x's, cast by the caller), dlogits16 (cast here). */
    half?: { wte: WteChunk[]; x16: TensorView; dlogits16: TensorView };
  },
): void {
  if (half) castToHalf(plan, { out: half.dlogits16, inp: dlogits, n: R * ld });
  (half?.wte ?? wte).forEach((chunk, i) => {
    const K = chunk.v1 - chunk.v0;
    const a = { a: half?.dlogits16 ?? dlogits, lda: ld, aOffset: chunk.v0, half: !!half };
    matmul(plan, { out: dx, ...a, b: chunk.view, M: R, N: C, K, cOffset: r0 * C, accumulate: i > 0 });
    matmul(plan, {
      out: dwte[i].view,
      ...a,
      b: half?.x16 ?? x,
      M: K,
      N: C,
      K: R,
      transA: true,
      bOffset: r0 * C,
      accumulate: true,
    });
  });
}

/** Options for {@link Workspace}. */
export interface WorkspaceOptions {
  /** Rows of logits computed at once; default: as many as fit `logitsBudgetBytes` and one binding. */
  logitsRows?: number;
  /** Default `DEFAULT_LOGITS_BUDGET_BYTES` of activations.ts. */
  logitsBudgetBytes?: number;
  /** Parameter gradients to accumulate into; with them the workspace records backward too. */
  grads?: DeviceParam[];
  /**
   * Prefill for KV-cached generation: store every layer's keys and values into these caches
   * ([B, maxT, C] each, positions from 0), skip the loss, and gather each sequence's row at
   * `lastIndex[b]` after the final LayerNorm into {@link Workspace.last}.
   */
  /**
   * Training mode: drop at GPT-2's four sites with these rates and key (with `grads` only; scoring and
   * generation workspaces never drop). Backward regenerates the same masks.
   */
  dropout?: ModelDropout;
  prefill?: {
    caches: { k: TensorView; v: TensorView }[];
    maxT: number;
    zeros: TensorView;
    lastIndex: TensorView;
  };
}

/** A block's kept activations, as the activation table names them. */
type LayerActs = Record<string, TensorView>;

/**
 * Device memory for one batch shape (B, T): every tensor of the {@link activationTable}, and the
 * recorded forward and backward plans. Made once per shape and reused every step.
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
  readonly completionMask: TensorView;
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
  /** The whole-model tensors of the activation table, by name. */
  #t = new Map<string, TensorView>();
  #layers: LayerActs[] = [];
  #dropout?: ModelDropout;

  constructor(model: GPT2, B: number, T: number, options: WorkspaceOptions = {}) {
    const { gpu, config } = model;
    if (T > config.nPositions) {
      throw new Error(`sequence length ${T} exceeds the model's ${config.nPositions} positions`);
    }
    if (!(B >= 1 && T >= 1)) throw new Error(`batch shape must be positive, got B=${B} T=${T}`);
    this.model = model;
    this.B = B;
    this.T = T;
    const N = B * T;
    const logits = logitsChunk(config, N, gpu.limits.maxStorageBufferBindingSize, {
      rows: options.logitsRows,
      budgetBytes: options.logitsBudgetBytes,
      prefill: !!options.prefill,
    });
    this.logitsRows = logits.rows;
    this.logitsStride = logits.stride;
    const table = activationTable(config, B, T, {
      training: !!options.grads,
      prefill: !!options.prefill,
      logits,
      half: !!model.half,
    });
    const alloc = (spec: ActivationSpec, label: string) => {
      const view = gpu.tensor(numel(spec.shape), label);
      this.#owned.push(view);
      return view;
    };
    for (const spec of table.model) {
      // The token groups are EmbeddingGroups' own buffers, made with it below.
      if (!spec.name.startsWith("tokenGroups.")) this.#t.set(spec.name, alloc(spec, spec.name));
    }
    for (let l = 0; l < table.nLayer; l++) {
      this.#layers.push(Object.fromEntries(table.layer.map((s) => [s.name, alloc(s, `l${l}.${s.name}`)])));
    }
    const t = (name: string) => this.#t.get(name)!;
    this.tokens = t("tokens");
    this.targets = t("targets");
    this.lp = t("lp");
    this.logitsLse = t("logitsLse");
    this.g = t("g");
    this.lmMask = t("lmMask");
    this.completionMask = t("completionMask");
    this.last = this.#t.get("last");
    this.forward = new Plan(gpu);
    if (options.grads && !options.prefill) this.#dropout = options.dropout;
    this.#recordForward(this.forward, options.prefill);
    if (options.grads) {
      this.grads = options.grads;
      this.embeddingGroups = new EmbeddingGroups(gpu, N);
      this.backward = new Plan(gpu);
      this.#recordBackward(this.backward);
    }
  }

  /** Upload a batch: inputs and targets [B*T] (rows b*T+t). Also regroups tokens for embedding backward. */
  setBatch(
    inputs: Uint32Array,
    targets: Uint32Array,
    lmMask?: Float32Array,
    completionMask?: Float32Array,
  ): void {
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
    if (completionMask) gpu.write(this.completionMask, completionMask);
    this.embeddingGroups?.upload(inputs);
  }

  #blockActs(l: number): BlockActivations {
    return blockActivations(this.#layers[l], this.#t);
  }

  /** Block l's f16 weights, scratch and arithmetic under precision f16. */
  #blockHalf(l: number): BlockHalf | undefined {
    const half = this.model.half;
    return half &&
      { W: half.blocks[l], x16: this.#t.get("x16")!, dy16: this.#t.get("dy16"), halfSums: half.halfSums };
  }

  /** The LM head's f16 operands (lnf's copy in x16) under precision f16; its sums stay f32 under halfSums. */
  #headHalf(): { wte: WteChunk[]; x16: TensorView } | undefined {
    const half = this.model.half;
    return half && { wte: half.wte, x16: this.#t.get("x16")! };
  }

  /** Block l's input: the embeddings for the first block, else the previous block's output. */
  #blockInput(l: number): TensorView {
    return l > 0 ? this.#layers[l - 1].out : this.#t.get("encoded")!;
  }

  /** Record the forward pass: embeddings, blocks, final LayerNorm, and ln p(target) per row into lp. */
  #recordForward(plan: Plan, prefill?: WorkspaceOptions["prefill"]): void {
    const m = this.model;
    const { nEmbd: C, nHead: H, nLayer: L, vocabSize: V, layerNormEpsilon: eps } = m.config;
    const { B, T } = this;
    const N = B * T;
    const t = (name: string) => this.#t.get(name)!;
    const wte = m.byName.get("wte.weight")!.parts;
    embeddingForward(plan, {
      out: t("encoded"),
      tokens: this.tokens,
      wte,
      wpe: m.view("wpe.weight"),
      B,
      T,
      C,
    });
    const embdDrop = dropSpec(this.#dropout, this.#dropout?.rates.embdPdrop ?? 0, DROPOUT_SITE.embd, N, C);
    if (embdDrop) dropoutInPlace(plan, t("encoded"), embdDrop);
    for (let l = 0; l < L; l++) {
      const a = this.#blockActs(l);
      const attention = () => {
        if (prefill) {
          const { k, v } = prefill.caches[l];
          kvStore(plan, {
            kCache: k,
            vCache: v,
            qkv: a.qkv,
            base: prefill.zeros,
            nSeq: B,
            rows: T,
            C,
            maxT: prefill.maxT,
          });
        }
        attentionForward(plan, {
          y: a.atty,
          lse: this.#layers[l].attLse,
          qkv: a.qkv,
          B,
          T,
          C,
          H,
          dropout: attentionDropout(this.#dropout, l),
        });
      };
      blockForward(plan, {
        w: blockWeights(m, l),
        x: this.#blockInput(l),
        a,
        N,
        C,
        eps,
        attention,
        dropout: this.#dropout,
        layer: l,
        half: this.#blockHalf(l),
      });
    }
    const lnf = { weight: m.view("ln_f.weight"), bias: m.view("ln_f.bias") };
    layernormForward(plan, {
      out: t("lnf"),
      mean: t("lnfMean"),
      rstd: t("lnfRstd"),
      inp: this.#blockInput(L),
      ...lnf,
      N,
      C,
      eps,
    });
    if (prefill) {
      gatherRows(plan, { out: this.last!, x: t("lnf"), idx: prefill.lastIndex, nSeq: B, T, C });
      return;
    }
    const chunk = {
      logits: t("logits"),
      targets: this.targets,
      lse: this.logitsLse,
      V,
      ld: this.logitsStride,
    };
    const half = this.#headHalf();
    if (half) castToHalf(plan, { out: half.x16, inp: t("lnf"), n: N * C });
    for (let r0 = 0; r0 < N; r0 += this.logitsRows) {
      const R = Math.min(this.logitsRows, N - r0);
      lmHeadForward(plan, { logits: chunk.logits, x: t("lnf"), wte, R, C, ld: this.logitsStride, r0, half });
      crossEntropyForward(plan, { ...chunk, lp: this.lp, R, rowOffset: r0 });
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
    const { nEmbd: C, nHead: H, nLayer: L, vocabSize: V } = m.config;
    const { B, T } = this;
    const N = B * T;
    const t = (name: string) => this.#t.get(name)!;
    const dresidual = t("dresidual"), dlnf = t("dlnf"), logits = t("logits"), lnf = t("lnf");
    // Head: dlogits = g (onehot - softmax), then dlnf and dwte.
    const ld = this.logitsStride;
    const wte = m.byName.get("wte.weight")!.parts;
    const dwte = grads.get("wte.weight")!.parts;
    const half = this.#headHalf();
    // lnf's f16 copy for the head's matmuls (the blocks' backward overwrites x16 later).
    if (half) castToHalf(plan, { out: half.x16, inp: lnf, n: N * C });
    const headHalf = half && { ...half, dlogits16: t("dlogits16") };
    for (let r0 = 0; r0 < N; r0 += this.logitsRows) {
      const R = Math.min(this.logitsRows, N - r0);
      // With one chunk the forward pass left the logits in place; otherwise recompute them.
      if (this.logitsRows < N) lmHeadForward(plan, { logits, x: lnf, wte, R, C, ld, r0, half });
      crossEntropyBackward(plan, {
        logits,
        lse: this.logitsLse,
        targets: this.targets,
        g: this.g,
        R,
        V,
        rowOffset: r0,
        ld,
      });
      lmHeadBackward(plan, { dx: dlnf, dwte, dlogits: logits, x: lnf, wte, R, C, ld, r0, half: headHalf });
    }
    layernormBackward(plan, {
      dinp: dresidual,
      dweight: G("ln_f.weight"),
      dbias: G("ln_f.bias"),
      dout: dlnf,
      inp: this.#blockInput(L),
      weight: m.view("ln_f.weight"),
      mean: t("lnfMean"),
      rstd: t("lnfRstd"),
      N,
      C,
    });
    for (let l = L - 1; l >= 0; l--) {
      blockBackward(plan, {
        w: blockWeights(m, l),
        g: blockGrads(grads, l),
        x: this.#blockInput(l),
        a: this.#blockActs(l),
        attLse: this.#layers[l].attLse,
        d: { dresidual, dlinearIn: t("dlinearIn"), dqkv: t("dqkv"), dgelu: t("dgelu"), dfch: t("dfch") },
        B,
        T,
        C,
        H,
        dropout: this.#dropout,
        layer: l,
        half: this.#blockHalf(l),
      });
    }
    // The embedding output was dropped in place: its gradient is masked the same way.
    const embdDrop = dropSpec(this.#dropout, this.#dropout?.rates.embdPdrop ?? 0, DROPOUT_SITE.embd, N, C);
    if (embdDrop) dropoutInPlace(plan, dresidual, embdDrop);
    embeddingBackward(plan, {
      dwte,
      dwpe: G("wpe.weight"),
      dout: dresidual,
      groups: this.embeddingGroups!,
      B,
      T,
      C,
    });
  }

  /** Free every buffer and uniform block this workspace allocated (not the shared gradients). */
  destroy(): void {
    for (const v of this.#owned) this.model.gpu.free(v);
    this.#owned = [];
    this.embeddingGroups?.destroy();
    this.forward.destroy();
    this.backward?.destroy();
  }

  /** Clear the residual-stream gradient, which backward accumulates into (the caller clears the parameter gradients). */
  encodeClear(encoder: GPUCommandEncoder): void {
    const dresidual = this.#t.get("dresidual");
    if (dresidual) encoder.clearBuffer(dresidual.buffer);
  }
}

/**
 * Record one block's backward (llm.c's per-layer gpt2_backward), given dresidual = dLoss/d(out):
 * parameter gradients accumulate; dresidual becomes dLoss/dx (the skip paths pass it through, the
 * LayerNorms add theirs). gelu (scratch) is recomputed from fch. With `dropout`, each branch gets the
 * residual gradient masked as its forward output was (the mask regenerated, never stored).
 */
export function blockBackward(
  plan: Plan,
  { w, g, x, a, attLse, d, B, T, C, H, dropout, layer, keyStart, half }: {
    w: BlockWeights;
    g: BlockGrads;
    x: TensorView;
    a: BlockActivations;
    attLse: TensorView;
    d: {
      dresidual: TensorView;
      dlinearIn: TensorView;
      dqkv: TensorView;
      dgelu: TensorView;
      dfch: TensorView;
    };
    B: number;
    T: number;
    C: number;
    H: number;
    dropout?: ModelDropout;
    layer: number;
    /** The forward attention's padding mask (shaders/attention.ts), if it had one. */
    keyStart?: TensorView;
    /** Precision f16 (dy16 required): the linears' matmuls read f16 copies. */
    half?: BlockHalf;
  },
): void {
  const N = B * T;
  const halfSums = half?.halfSums;
  const h = (W16: TensorView | undefined) => half && { W16: W16!, x16: half.x16, dy16: half.dy16!, halfSums };
  // f16: the kept LayerNorm outputs are already the linears' f16 operands.
  const lnIn = (ln: TensorView, W16: TensorView | undefined) =>
    half && { W16: W16!, x16: ln, dy16: half.dy16!, xHalf: true, halfSums };
  const { dresidual, dqkv, dgelu, dfch } = d;
  // The C-wide linear inputs' gradients, one buffer in turn.
  const dln2 = d.dlinearIn, datty = d.dlinearIn, dln1 = d.dlinearIn;
  const rate = dropout?.rates.residPdrop ?? 0;
  const attnDrop = dropSpec(dropout, rate, DROPOUT_SITE.attnResid(layer), N, C);
  const mlpDrop = dropSpec(dropout, rate, DROPOUT_SITE.mlpResid(layer), N, C);
  // A dropped branch's output gradient: in dlinearIn before the MLP's first linear backward writes it,
  // in dgelu (free again) before the attention projection's.
  if (mlpDrop) dropoutCopy(plan, d.dlinearIn, dresidual, mlpDrop);
  const dfcproj = mlpDrop ? d.dlinearIn : dresidual;
  // MLP: out = res2 + gelu(ln2 · Wfc + bfc) · Wproj + bproj.
  geluForward(plan, { out: a.gelu, inp: a.fch, n: N * 4 * C, half: !!half });
  linearBackward(plan, {
    dx: dgelu,
    ...g.fcProj,
    dy: dfcproj,
    x: a.gelu,
    W: w.fcProj.W,
    rows: N,
    inC: 4 * C,
    outC: C,
    half: half && { W16: half.W.fcProj, x16: a.gelu, dy16: half.dy16!, xHalf: true, halfSums },
  });
  geluBackward(plan, { dinp: dfch, inp: a.fch, dout: dgelu, n: N * 4 * C });
  linearBackward(plan, {
    dx: dln2,
    ...g.fc,
    dy: dfch,
    x: a.ln2,
    W: w.fc.W,
    rows: N,
    inC: C,
    outC: 4 * C,
    half: lnIn(a.ln2, half?.W.fc),
  });
  layernormBackward(plan, {
    dinp: dresidual,
    ...g.ln2,
    dout: dln2,
    inp: a.res2,
    weight: w.ln2.weight,
    mean: a.ln2Mean,
    rstd: a.ln2Rstd,
    N,
    C,
  });
  // Attention: res2 = x + atty · Wproj + bproj.
  if (attnDrop) dropoutCopy(plan, dgelu, dresidual, attnDrop);
  linearBackward(plan, {
    dx: datty,
    ...g.attnProj,
    dy: attnDrop ? dgelu : dresidual,
    x: a.atty,
    W: w.attnProj.W,
    rows: N,
    inC: C,
    outC: C,
    half: h(half?.W.attnProj),
  });
  attentionBackward(plan, {
    dqkv,
    dy: datty,
    qkv: a.qkv,
    y: a.atty,
    lse: attLse,
    B,
    T,
    C,
    H,
    dropout: attentionDropout(dropout, layer),
    keyStart,
  });
  linearBackward(plan, {
    dx: dln1,
    ...g.attn,
    dy: dqkv,
    x: a.ln1,
    W: w.attn.W,
    rows: N,
    inC: C,
    outC: 3 * C,
    half: lnIn(a.ln1, half?.W.attn),
  });
  layernormBackward(plan, {
    dinp: dresidual,
    ...g.ln1,
    dout: dln1,
    inp: x,
    weight: w.ln1.weight,
    mean: a.ln1Mean,
    rstd: a.ln1Rstd,
    N,
    C,
  });
}
