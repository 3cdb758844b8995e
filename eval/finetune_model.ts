/**
 * GPT-2 with the BabyLM pipeline's classification head, trained end to end on the GPU
 * (evaluation_pipeline/finetune/classifier_model.py): the transformer's final hidden states (after
 * ln_f), one row per sequence (the first token, or the last of a left-padded batch), then
 * LayerNorm (no affine) -> Linear(C, C) -> GELU (erf) -> LayerNorm (no affine) -> dropout -> Linear(C, L).
 *
 * Left padding: sequence b's text starts at keyStart[b]; attention hides the padding from it
 * (shaders/attention.ts `keyStart`), and its positions count from there (`positions: "sequence"`), or, as
 * transformers 4.51's GPT-2 does when given no position ids, run 0..T-1 whatever the padding
 * (`"absolute"`), so an example's logits then depend on how much it was padded in its batch.
 *
 * In train mode the transformer drops at its config's rates (transformers' `model.train()`) and the head
 * at its own rate; masks are keyed by (seed, step) as the engine's (shaders/dropout.ts). AdamW has one
 * parameter group: every tensor decays, biases and LayerNorms included, and nothing is clipped.
 *
 * Under precision f16 (the model's, model/precision.ts) the transformer's matmuls read f16 operands as in
 * training, with the trainer's dynamic loss scaling (model/scaler.ts) and its one-submission step
 * (model/trainer.ts): the loss gradient is multiplied by the scale; the gradient norm computes, on the
 * GPU, the unscale factor and whether the gradients overflowed; AdamW then skips the whole update (model
 * and head) on an overflow, or unscales and writes the f16 weight copies as it updates, and the CPU learns
 * the outcome from the step's one read. The head (two small linears on B rows) stays f32, as do the
 * master weights, AdamW, the LayerNorms and the loss.
 * @module
 */
import { Plan, type TensorView } from "../shaders/gpu.ts";
import { scaleBy } from "../shaders/f16.ts";
import {
  allocParams,
  attentionDropout,
  blockActivations,
  blockBackward,
  blockForward,
  blockGrads,
  type BlockHalf,
  blockWeights,
  type DeviceParam,
  type GPT2,
  type ModelDropout,
  readAll,
} from "../model/gpt2.ts";
import { activationTable } from "../model/activations.ts";
import { numel } from "../model/params.ts";
import type { DropoutRates } from "../model/config.ts";
import { Rng } from "../model/random.ts";
import { LossScaler, type ScalerOptions } from "../model/scaler.ts";
import { linearBackward, linearForward } from "../shaders/matmul.ts";
import { layernormBackward, layernormForward } from "../shaders/layernorm.ts";
import { attentionForward } from "../shaders/attention.ts";
import { DROPOUT_SITE, dropoutInPlace, DropoutKey } from "../shaders/dropout.ts";
import { embeddingBackward, embeddingForward, EmbeddingGroups } from "../shaders/embedding.ts";
import { embedAt, gatherRows } from "../shaders/kvcache.ts";
import { adamwStep, packStepParams } from "../shaders/adamw.ts";
import { GradNorm, NORM_LENGTH } from "../shaders/reduce.ts";
import { tune } from "../shaders/tune.ts";
import {
  classificationLoss,
  classifierDropoutSite,
  geluErfBackward,
  geluErfForward,
  positionBackward,
  scatterRows,
} from "../shaders/classifier.ts";

/** Which row of each sequence the head reads. */
export type Pooling = "first" | "last";
/** Position ids under left padding: from each text's first token, or 0..T-1 (transformers 4.51). */
export type Positions = "sequence" | "absolute";

/** The head's tensors, in the pipeline's state-dict names; linear weights in PyTorch's [out, in] layout. */
export const HEAD_TENSORS = {
  denseWeight: "classifier.nonlinearity.1.weight",
  denseBias: "classifier.nonlinearity.1.bias",
  outWeight: "classifier.nonlinearity.5.weight",
  outBias: "classifier.nonlinearity.5.bias",
} as const;

/** The head's weights, linear layers in the engine's [in, out] layout (y = x W + b). */
export interface HeadWeights {
  denseW: Float32Array;
  denseB: Float32Array;
  outW: Float32Array;
  outB: Float32Array;
}

/**
 * A fresh head as PyTorch initialises `nn.Linear` (weight and bias uniform in ±1/sqrt(in)), from a seed
 * (the project's generator, not torch's, so the draws differ from the pipeline's).
 */
export function initHead(C: number, L: number, seed: number): HeadWeights {
  const r = new Rng(seed);
  const u = (n: number) => {
    const a = new Float32Array(n), bound = 1 / Math.sqrt(C);
    for (let i = 0; i < n; i++) a[i] = (2 * r.float() - 1) * bound;
    return a;
  };
  return { denseW: u(C * C), denseB: u(C), outW: u(C * L), outB: u(L) };
}

/** Transpose a row-major [rows, cols] matrix. */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j];
  return out;
}

/** The head as the pipeline's state dict names it, with shapes ([out, in] weights). */
export function headStateDict(
  h: HeadWeights,
  C: number,
  L: number,
): Map<string, { shape: number[]; data: Float32Array }> {
  return new Map([
    [HEAD_TENSORS.denseWeight, { shape: [C, C], data: transpose(h.denseW, C, C) }],
    [HEAD_TENSORS.denseBias, { shape: [C], data: h.denseB }],
    [HEAD_TENSORS.outWeight, { shape: [L, C], data: transpose(h.outW, C, L) }],
    [HEAD_TENSORS.outBias, { shape: [L], data: h.outB }],
  ]);
}

/** AdamW of the fine-tuning (PyTorch semantics; no clipping). */
export interface FinetuneAdamW {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** Options of a {@link Classifier}. */
export interface ClassifierOptions {
  numLabels: number;
  /** The head's dropout rate (the pipeline's `classifier_dropout`, 0.1). */
  classifierDropout: number;
  /** The head's LayerNorm epsilon (`classifier_layer_norm_eps`, 1e-5). */
  headEps: number;
  /** The transformer's train-mode dropout rates (its config's). */
  transformerDropout: DropoutRates;
  /** Seed of the dropout masks. */
  seed: number;
  adamw: FinetuneAdamW;
  pooling: Pooling;
  positions: Positions;
  /**
   * Largest micro-batch (sequences) and sequence length the workspace holds; a larger training batch runs
   * in parts whose gradients add up to the whole batch's.
   */
  maxB: number;
  maxT: number;
  head: HeadWeights;
  /** Dynamic loss scaling under precision f16; GradScaler's defaults when absent. */
  scaler?: ScalerOptions;
}

/** One batch: B sequences padded to T (rows b*T + t); left padding when pooling the last token. */
export interface ClassifierBatch {
  B: number;
  T: number;
  tokens: Uint32Array;
  /** First real position of each sequence (0 for right padding). */
  keyStart: Uint32Array;
  /** Labels (training only). */
  labels?: Uint32Array;
}

/** What one optimiser step did. */
export interface ClassifierStep {
  /** Mean loss of the batch. */
  loss: number;
  /** Train-mode logits [B, L]. */
  logits: Float32Array;
  /** Precision f16: the loss scale the step ran at, and whether its gradients overflowed (no update). */
  lossScale?: number;
  skipped?: boolean;
}

/** Most recorded plans kept (one per batch shape and mode); shapes vary with each batch's longest text. */
const MAX_PLANS = 48;

/** The head's parameter tensors in optimiser order, as (name, shape) of the device tensors. */
function headSpecs(C: number, L: number) {
  return [
    { name: "denseW", n: C * C },
    { name: "denseB", n: C },
    { name: "outW", n: C * L },
    { name: "outB", n: L },
  ] as const;
}

/** The GPU classifier: the model's parameters, the head, their gradients and AdamW moments, a workspace. */
export class Classifier {
  readonly model: GPT2;
  readonly options: ClassifierOptions;
  /** AdamW steps taken (under f16, skipped steps not counted). */
  step = 0;
  readonly grads: DeviceParam[];
  /** The loss scale under precision f16 (the model's precision when the classifier was made). */
  readonly scaler?: LossScaler;
  /** Precision f16: [s, 1 / s] for the loss scale s, read by the loss plans and the gradient norm. */
  #scaleFactor?: TensorView;
  #m: DeviceParam[];
  #v: DeviceParam[];
  #head: Record<string, TensorView> = {};
  #headGrad: Record<string, TensorView> = {};
  #headM: TensorView[] = [];
  #headV: TensorView[] = [];
  #owned: TensorView[] = [];
  #t = new Map<string, TensorView>();
  #layers: Record<string, TensorView>[] = [];
  #groups: EmbeddingGroups;
  #key: DropoutKey;
  #stepParams: TensorView;
  #norm: GradNorm;
  /** The gradient norm, then AdamW (which under f16 reads the norm's skip flag on the GPU). */
  #optimizer: Plan;
  /**
   * What a training part's one read returns: its logits ([maxB, L]), its rows' losses (maxB) and, after
   * the optimiser, a copy of the norm buffer ({@link NORM_LENGTH}).
   */
  #readout: TensorView;
  #plans = new Map<string, Plan>();
  /** Buffers backward accumulates into, cleared before each step. */
  #accumulated: TensorView[];

  constructor(model: GPT2, options: ClassifierOptions) {
    const { gpu, config } = model;
    const { nEmbd: C } = config;
    const L = options.numLabels;
    if (!(Number.isInteger(L) && L >= 2)) throw new Error(`numLabels must be an integer >= 2, got ${L}`);
    if (options.maxT > config.nPositions) {
      throw new Error(`sequence length ${options.maxT} exceeds the model's ${config.nPositions} positions`);
    }
    this.model = model;
    this.options = options;
    const { maxB: B, maxT: T } = options;
    const N = B * T;
    const alloc = (n: number, label: string) => {
      const v = gpu.tensor(n, label);
      this.#owned.push(v);
      return v;
    };
    const table = activationTable(config, B, T, {
      training: true,
      prefill: false,
      logits: { rows: 0, stride: 4 },
      half: !!model.half,
    });
    const wanted = new Set([
      "tokens",
      "encoded",
      "lnf",
      "lnfMean",
      "lnfRstd",
      "proj",
      "gelu",
      "dresidual",
      "dlnf",
      "dlinearIn",
      "dqkv",
      "dgelu",
      "dfch",
      // Precision f16: the matmuls' f16 operands (gelu is absent then: GELU writes into x16).
      "x16",
      "dy16",
    ]);
    for (const s of table.model) if (wanted.has(s.name)) this.#t.set(s.name, alloc(numel(s.shape), s.name));
    for (let l = 0; l < table.nLayer; l++) {
      this.#layers.push(
        Object.fromEntries(table.layer.map((s) => [s.name, alloc(numel(s.shape), `l${l}.${s.name}`)])),
      );
    }
    // The classification batch and the head's activations.
    for (
      const [name, n] of [
        ["positions", N],
        ["keyStart", B],
        ["poolIndex", B],
        ["labels", B],
        ["pooled", B * C],
        ["h1", B * C],
        ["h1Mean", B],
        ["h1Rstd", B],
        ["z1", B * C],
        ["g1", B * C],
        ["h2", B * C],
        ["h2Mean", B],
        ["h2Rstd", B],
        ["logits", B * L],
        ["rowLoss", B],
        ["dlogits", B * L],
        ["dh2", B * C],
        ["dg1", B * C],
        ["dz1", B * C],
        ["dh1", B * C],
        ["dpooled", B * C],
        ["ones", C],
        ["zeros", C],
        ["lnScratchW", C],
        ["lnScratchB", C],
      ] as const
    ) this.#t.set(name, alloc(n, name));
    gpu.write(this.#t.get("ones")!, new Float32Array(C).fill(1));
    gpu.write(this.#t.get("zeros")!, new Float32Array(C));
    this.#groups = new EmbeddingGroups(gpu, N);
    this.#key = new DropoutKey(gpu, options.seed);

    this.grads = allocParams(gpu, config, "ft.grad");
    this.#m = allocParams(gpu, config, "ft.adam.m");
    this.#v = allocParams(gpu, config, "ft.adam.v");
    for (const { name, n } of headSpecs(C, L)) {
      this.#head[name] = alloc(n, `head.${name}`);
      this.#headGrad[name] = alloc(n, `head.d${name}`);
      this.#headM.push(alloc(n, `head.m.${name}`));
      this.#headV.push(alloc(n, `head.v.${name}`));
    }
    this.setHead(options.head);
    this.#stepParams = alloc(16, "ft.adamw.step");
    const gradViews = [
      ...this.grads.flatMap((p) => p.parts.map((part) => part.view)),
      ...Object.values(this.#headGrad),
    ];
    this.#readout = alloc(B * (L + 1) + NORM_LENGTH, "ft.readout");
    if (model.half) {
      this.scaler = new LossScaler(options.scaler);
      this.#scaleFactor = alloc(2, "ft.loss_scale");
    }
    this.#optimizer = new Plan(gpu);
    this.#norm = new GradNorm(this.#optimizer, gradViews, 0, { lossScale: this.#scaleFactor });
    model.params.forEach((p, i) => {
      p.parts.forEach((part, j) => {
        adamwStep(this.#optimizer, {
          param: part.view,
          grad: this.grads[i].parts[j].view,
          m: this.#m[i].parts[j].view,
          v: this.#v[i].parts[j].view,
          stepParams: this.#stepParams,
          norm: this.#norm.output,
          decay: true,
          half: model.half?.copyOf(part.view),
        });
      });
    });
    // The head has no f16 copy (its linears run in f32), and skips with the model on an overflow.
    headSpecs(C, L).forEach(({ name }, i) => {
      adamwStep(this.#optimizer, {
        param: this.#head[name],
        grad: this.#headGrad[name],
        m: this.#headM[i],
        v: this.#headV[i],
        stepParams: this.#stepParams,
        norm: this.#norm.output,
        decay: true,
      });
    });
    const t = (name: string) => this.#t.get(name)!;
    this.#accumulated = [t("dresidual"), t("dg1"), t("dpooled")];
  }

  /** Upload head weights. */
  setHead(h: HeadWeights): void {
    const { nEmbd: C } = this.model.config;
    const L = this.options.numLabels;
    const want = { denseW: C * C, denseB: C, outW: C * L, outB: L };
    for (const [name, n] of Object.entries(want)) {
      const data = h[name as keyof HeadWeights];
      if (data.length !== n) throw new Error(`head tensor ${name} has ${data.length} values, expected ${n}`);
      this.model.gpu.write(this.#head[name], data);
    }
  }

  /** Download the head's weights. */
  async getHead(): Promise<HeadWeights> {
    const gpu = this.model.gpu;
    return {
      denseW: await gpu.read(this.#head.denseW),
      denseB: await gpu.read(this.#head.denseB),
      outW: await gpu.read(this.#head.outW),
      outB: await gpu.read(this.#head.outB),
    };
  }

  /** The gradients of the last {@link computeGradients} (transformer by name, then the head's). */
  async getGradients(): Promise<{ model: Map<string, Float32Array>; head: HeadWeights }> {
    const gpu = this.model.gpu;
    return {
      model: await readAll(gpu, this.grads),
      head: {
        denseW: await gpu.read(this.#headGrad.denseW),
        denseB: await gpu.read(this.#headGrad.denseB),
        outW: await gpu.read(this.#headGrad.outW),
        outB: await gpu.read(this.#headGrad.outB),
      },
    };
  }

  /** Free everything this classifier allocated (not the model's weights). */
  destroy(): void {
    const gpu = this.model.gpu;
    for (const set of [this.grads, this.#m, this.#v]) {
      for (const p of set) for (const part of p.parts) gpu.free(part.view);
    }
    for (const v of this.#owned) gpu.free(v);
    this.#owned = [];
    for (const plan of this.#plans.values()) plan.destroy();
    this.#plans.clear();
    this.#optimizer.destroy();
    gpu.free(this.#norm.partials);
    gpu.free(this.#norm.output);
    this.#groups.destroy();
    this.#key.destroy();
  }

  #upload(batch: ClassifierBatch): void {
    const { B, T, tokens, keyStart } = batch;
    const { maxB, maxT, pooling } = this.options;
    if (!(B >= 1 && B <= maxB && T >= 1 && T <= maxT)) {
      throw new Error(`batch ${B}x${T} is outside the classifier's workspace ${maxB}x${maxT}`);
    }
    if (tokens.length !== B * T || keyStart.length !== B) {
      throw new Error(`batch ${B}x${T}: ${tokens.length} tokens and ${keyStart.length} starts`);
    }
    const V = this.model.config.vocabSize;
    for (let i = 0; i < tokens.length; i++) {
      if (tokens[i] >= V) {
        throw new Error(`token id ${tokens[i]} at position ${i} is outside the vocabulary (${V})`);
      }
    }
    const positions = new Uint32Array(B * T);
    for (let b = 0; b < B; b++) {
      if (!(keyStart[b] < T)) {
        throw new Error(`sequence ${b} has no tokens (starts at ${keyStart[b]} of ${T})`);
      }
      for (let t = 0; t < T; t++) positions[b * T + t] = Math.max(0, t - keyStart[b]);
    }
    const gpu = this.model.gpu;
    const t = (name: string) => this.#t.get(name)!;
    gpu.write(t("tokens"), tokens);
    gpu.write(t("keyStart"), keyStart);
    gpu.write(t("positions"), positions);
    gpu.write(t("poolIndex"), new Uint32Array(B).fill(pooling === "last" ? T - 1 : 0));
    if (batch.labels) {
      for (const y of batch.labels) {
        if (!(y < this.options.numLabels)) {
          throw new Error(`label ${y} is outside 0..${this.options.numLabels - 1}`);
        }
      }
      gpu.write(t("labels"), batch.labels);
    }
    this.#groups.upload(tokens);
  }

  /** The plan of a B x T part: eval mode, or train mode for a batch of `total` examples. */
  #plan(B: number, T: number, train: boolean, total = B): Plan {
    const key = `${B}x${T}:${train ? `train/${total}` : "eval"}`;
    let plan = this.#plans.get(key);
    if (plan) {
      this.#plans.delete(key);
      this.#plans.set(key, plan);
      return plan;
    }
    while (this.#plans.size >= MAX_PLANS) {
      const [old, p] = this.#plans.entries().next().value!;
      p.destroy();
      this.#plans.delete(old);
    }
    plan = new Plan(this.model.gpu);
    const dropout = train ? this.#modelDropout() : undefined;
    this.#recordForward(plan, B, T, dropout, train);
    if (train) {
      const t = (name: string) => this.#t.get(name)!;
      classificationLoss(plan, {
        loss: t("rowLoss"),
        dlogits: t("dlogits"),
        logits: t("logits"),
        labels: t("labels"),
        B,
        L: this.options.numLabels,
        total,
      });
      // The loss scale (f16) multiplies the gradient only; the recorded loss stays unscaled.
      if (this.#scaleFactor) {
        scaleBy(plan, { x: t("dlogits"), factor: this.#scaleFactor, n: B * this.options.numLabels });
      }
      this.#recordBackward(plan, B, T, dropout);
    }
    this.#plans.set(key, plan);
    return plan;
  }

  #modelDropout(): ModelDropout | undefined {
    const r = this.options.transformerDropout;
    return r.embdPdrop > 0 || r.attnPdrop > 0 || r.residPdrop > 0 ? { key: this.#key, rates: r } : undefined;
  }

  /** Whether attention needs the padding mask: only left-padded batches have padding before the text. */
  get #masked(): boolean {
    return this.options.pooling === "last";
  }

  #headDropout(B: number) {
    const rate = this.options.classifierDropout;
    const site = classifierDropoutSite(this.model.config.nLayer);
    return rate > 0 ? { key: this.#key, site, rate, rows: B, cols: this.model.config.nEmbd } : undefined;
  }

  #recordForward(plan: Plan, B: number, T: number, dropout: ModelDropout | undefined, train: boolean): void {
    const m = this.model;
    const { nEmbd: C, nHead: H, nLayer: L, layerNormEpsilon: eps } = m.config;
    const N = B * T;
    const t = (name: string) => this.#t.get(name)!;
    const wte = m.byName.get("wte.weight")!.parts;
    if (this.options.positions === "sequence" && this.#masked) {
      embedAt(plan, {
        out: t("encoded"),
        tokens: t("tokens"),
        pos: t("positions"),
        wte,
        wpe: m.view("wpe.weight"),
        nSeq: N,
        C,
      });
    } else {
      embeddingForward(plan, {
        out: t("encoded"),
        tokens: t("tokens"),
        wte,
        wpe: m.view("wpe.weight"),
        B,
        T,
        C,
      });
    }
    if (dropout && dropout.rates.embdPdrop > 0) {
      dropoutInPlace(plan, t("encoded"), {
        key: dropout.key,
        site: DROPOUT_SITE.embd,
        rate: dropout.rates.embdPdrop,
        rows: N,
        cols: C,
      });
    }
    const keyStart = this.#masked ? t("keyStart") : undefined;
    for (let l = 0; l < L; l++) {
      const a = this.#blockActs(l);
      blockForward(plan, {
        w: blockWeights(m, l),
        x: this.#blockInput(l),
        a,
        N,
        C,
        eps,
        attention: () =>
          attentionForward(plan, {
            y: a.atty,
            lse: this.#layers[l].attLse,
            qkv: a.qkv,
            B,
            T,
            C,
            H,
            dropout: attentionDropout(dropout, l),
            keyStart,
          }),
        dropout,
        layer: l,
        half: this.#blockHalf(l),
      });
    }
    layernormForward(plan, {
      out: t("lnf"),
      mean: t("lnfMean"),
      rstd: t("lnfRstd"),
      inp: this.#blockInput(L),
      weight: m.view("ln_f.weight"),
      bias: m.view("ln_f.bias"),
      N,
      C,
      eps,
    });
    gatherRows(plan, { out: t("pooled"), x: t("lnf"), idx: t("poolIndex"), nSeq: B, T, C });
    const hd = this.#head, heps = this.options.headEps, noAffine = { weight: t("ones"), bias: t("zeros") };
    layernormForward(plan, {
      out: t("h1"),
      mean: t("h1Mean"),
      rstd: t("h1Rstd"),
      inp: t("pooled"),
      ...noAffine,
      N: B,
      C,
      eps: heps,
    });
    linearForward(plan, { y: t("z1"), x: t("h1"), W: hd.denseW, b: hd.denseB, rows: B, inC: C, outC: C });
    geluErfForward(plan, { out: t("g1"), inp: t("z1"), n: B * C });
    layernormForward(plan, {
      out: t("h2"),
      mean: t("h2Mean"),
      rstd: t("h2Rstd"),
      inp: t("g1"),
      ...noAffine,
      N: B,
      C,
      eps: heps,
    });
    const drop = train ? this.#headDropout(B) : undefined;
    if (drop) dropoutInPlace(plan, t("h2"), drop);
    linearForward(plan, {
      y: t("logits"),
      x: t("h2"),
      W: hd.outW,
      b: hd.outB,
      rows: B,
      inC: C,
      outC: this.options.numLabels,
    });
  }

  #recordBackward(plan: Plan, B: number, T: number, dropout: ModelDropout | undefined): void {
    const m = this.model;
    const { nEmbd: C, nHead: H, nLayer: L } = m.config;
    const N = B * T;
    const t = (name: string) => this.#t.get(name)!;
    const hd = this.#head, hg = this.#headGrad;
    const scratch = { dweight: t("lnScratchW"), dbias: t("lnScratchB"), weight: t("ones") };
    linearBackward(plan, {
      dx: t("dh2"),
      dW: hg.outW,
      db: hg.outB,
      dy: t("dlogits"),
      x: t("h2"),
      W: hd.outW,
      rows: B,
      inC: C,
      outC: this.options.numLabels,
    });
    const drop = this.#headDropout(B);
    if (drop) dropoutInPlace(plan, t("dh2"), drop);
    layernormBackward(plan, {
      dinp: t("dg1"),
      ...scratch,
      dout: t("dh2"),
      inp: t("g1"),
      mean: t("h2Mean"),
      rstd: t("h2Rstd"),
      N: B,
      C,
    });
    geluErfBackward(plan, { dinp: t("dz1"), inp: t("z1"), dout: t("dg1"), n: B * C });
    linearBackward(plan, {
      dx: t("dh1"),
      dW: hg.denseW,
      db: hg.denseB,
      dy: t("dz1"),
      x: t("h1"),
      W: hd.denseW,
      rows: B,
      inC: C,
      outC: C,
    });
    layernormBackward(plan, {
      dinp: t("dpooled"),
      ...scratch,
      dout: t("dh1"),
      inp: t("pooled"),
      mean: t("h1Mean"),
      rstd: t("h1Rstd"),
      N: B,
      C,
    });
    scatterRows(plan, { out: t("dlnf"), x: t("dpooled"), idx: t("poolIndex"), B, T, C });
    const grads = new Map(this.grads.map((p) => [p.spec.name, p]));
    const G = (name: string) => grads.get(name)!.parts[0].view;
    const dresidual = t("dresidual");
    layernormBackward(plan, {
      dinp: dresidual,
      dweight: G("ln_f.weight"),
      dbias: G("ln_f.bias"),
      dout: t("dlnf"),
      inp: this.#blockInput(L),
      weight: m.view("ln_f.weight"),
      mean: t("lnfMean"),
      rstd: t("lnfRstd"),
      N,
      C,
    });
    const keyStart = this.#masked ? t("keyStart") : undefined;
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
        dropout,
        layer: l,
        keyStart,
        half: this.#blockHalf(l),
      });
    }
    if (dropout && dropout.rates.embdPdrop > 0) {
      dropoutInPlace(plan, dresidual, {
        key: dropout.key,
        site: DROPOUT_SITE.embd,
        rate: dropout.rates.embdPdrop,
        rows: N,
        cols: C,
      });
    }
    const shifted = this.options.positions === "sequence" && this.#masked;
    embeddingBackward(plan, {
      dwte: grads.get("wte.weight")!.parts,
      dwpe: shifted ? undefined : G("wpe.weight"),
      dout: dresidual,
      groups: this.#groups,
      B,
      T,
      C,
    });
    if (shifted) {
      positionBackward(plan, { dwpe: G("wpe.weight"), dout: dresidual, start: t("keyStart"), B, T, C });
    }
  }

  #blockActs(l: number) {
    return blockActivations(this.#layers[l], this.#t);
  }

  /** Block l's f16 weights, scratch and arithmetic (the model's halfSums) under precision f16. */
  #blockHalf(l: number): BlockHalf | undefined {
    const half = this.model.half;
    const dy16 = this.#t.get("dy16")!;
    return half && { W: half.blocks[l], x16: this.#t.get("x16")!, dy16, halfSums: half.halfSums };
  }

  #blockInput(l: number): TensorView {
    return l > 0 ? this.#layers[l - 1].out : this.#t.get("encoded")!;
  }

  /** Encode clearing the gradients and the accumulated activation gradients. */
  #encodeClear(enc: GPUCommandEncoder): void {
    for (const p of this.grads) for (const part of p.parts) enc.clearBuffer(part.view.buffer);
    for (const v of [...Object.values(this.#headGrad), ...this.#accumulated]) enc.clearBuffer(v.buffer);
  }

  /**
   * Encode copying a training part's logits and row losses (of `n` rows) and, with `norm`, the gradient
   * norm's [norm, coefficient, skip] into the readout buffer, so that one read returns them all.
   */
  #encodeReadout(enc: GPUCommandEncoder, n: number, norm: boolean): void {
    const { maxB, numLabels: L } = this.options;
    const ro = this.#readout;
    const copy = (from: TensorView, at: number, count: number) =>
      enc.copyBufferToBuffer(from.buffer, from.offset, ro.buffer, ro.offset + 4 * at, 4 * count);
    copy(this.#t.get("logits")!, 0, n * L);
    copy(this.#t.get("rowLoss")!, maxB * L, n);
    if (norm) copy(this.#norm.output, maxB * (L + 1), NORM_LENGTH);
  }

  /**
   * Forward, loss and backward of a labelled batch into the cleared gradients, in micro-batches of at most
   * `maxB` examples when it is larger (each part's loss a share of the whole batch's mean, so the
   * gradients are the batch's). Dropout masks are keyed by `step`, part m of a split batch by
   * step + m * 2^24 so that parts never share masks. Then `after` (the optimiser) in the last submission,
   * whose read also returns the gradient norm's skip flag (0 without `after`).
   */
  async #accumulate(
    batch: ClassifierBatch,
    step: number,
    after?: Plan,
  ): Promise<{ loss: number; logits: Float32Array; skip: number }> {
    if (!batch.labels) throw new Error("a training batch needs labels");
    const { B, T } = batch;
    const { maxB, numLabels: L } = this.options;
    const gpu = this.model.gpu;
    const logits = new Float32Array(B * L);
    let lossSum = 0, skip = 0;
    for (let b0 = 0, m = 0; b0 < B; b0 += maxB, m++) {
      const n = Math.min(maxB, B - b0);
      this.#upload({
        B: n,
        T,
        tokens: batch.tokens.subarray(b0 * T, (b0 + n) * T),
        keyStart: batch.keyStart.subarray(b0, b0 + n),
        labels: batch.labels.subarray(b0, b0 + n),
      });
      this.#key.setStep((step + m * 2 ** 24) >>> 0);
      const plan = this.#plan(n, T, true, B);
      // A freshly recorded plan's matmuls take their tuned kernels (shaders/tune.ts) before it first runs.
      await tune(gpu);
      const enc = gpu.device.createCommandEncoder();
      if (m === 0) this.#encodeClear(enc);
      else for (const v of this.#accumulated) enc.clearBuffer(v.buffer);
      plan.encode(enc);
      const last = after !== undefined && b0 + n >= B;
      if (last) after.encode(enc);
      this.#encodeReadout(enc, n, last);
      gpu.device.queue.submit([enc.finish()]);
      const r = await gpu.read(this.#readout);
      for (const x of r.subarray(maxB * L, maxB * L + n)) lossSum += x;
      logits.set(r.subarray(0, n * L), b0 * L);
      if (last) skip = r[maxB * (L + 1) + 2];
    }
    return { loss: lossSum / B, logits, skip };
  }

  /**
   * Forward, loss and backward at the masks of the next step, without updating (for gradient checks);
   * under f16 unscaled, so the gradients are the batch's own.
   */
  async computeGradients(batch: ClassifierBatch): Promise<{ loss: number; logits: Float32Array }> {
    if (this.#scaleFactor) this.model.gpu.write(this.#scaleFactor, Float32Array.of(1, 1));
    const { loss, logits } = await this.#accumulate(batch, this.step + 1);
    return { loss, logits };
  }

  /**
   * One AdamW step on a labelled batch at learning rate `lr`: one submission (the last part's, for a batch
   * split into micro-batches) and one read after it. Under f16, as the trainer's step: backward from the
   * loss gradient times the scale, AdamW with the gradients times 1 / scale (nothing is clipped); a step
   * whose gradients overflowed changes nothing on the GPU and leaves AdamW's t, and the scaler backs off
   * or counts towards growth as GradScaler does.
   */
  async trainStep(batch: ClassifierBatch, lr: number): Promise<ClassifierStep> {
    const gpu = this.model.gpu;
    const step = this.step + 1;
    gpu.write(this.#stepParams, packStepParams({ ...this.options.adamw, lr, step }));
    const scale = this.scaler?.scale;
    if (scale !== undefined) gpu.write(this.#scaleFactor!, Float32Array.of(scale, 1 / scale));
    const { loss, logits, skip } = await this.#accumulate(batch, step, this.#optimizer);
    if (!this.scaler) {
      this.step = step;
      return { loss, logits };
    }
    const skipped = skip !== 0;
    if (!skipped) this.step = step;
    this.scaler.update(!skipped);
    return { loss, logits, lossScale: scale, skipped };
  }

  /** Eval-mode logits [B, L] of a batch (no dropout, no update). */
  async predict(batch: ClassifierBatch): Promise<Float32Array> {
    this.#upload(batch);
    const plan = this.#plan(batch.B, batch.T, false);
    await tune(this.model.gpu);
    const enc = this.model.gpu.device.createCommandEncoder();
    plan.encode(enc);
    this.model.gpu.device.queue.submit([enc.finish()]);
    return await this.model.gpu.read(this.#t.get("logits")!, 0, batch.B * this.options.numLabels);
  }
}
