/**
 * One optimisation step on the GPU: forward, the loss (LM, or SimPO + lambda * LM), backward, global
 * gradient-norm clipping and AdamW, encoded as one command submission in both precisions; one read
 * brings back a few floats (the loss metrics and the norm). Under f16 the overflow check, the unscale
 * and the clip coefficient are computed on the GPU too (shaders/reduce.ts), AdamW skips the update on
 * an overflow and writes the f16 weight copies as it updates (shaders/adamw.ts), and the CPU learns
 * from that one read whether the step was skipped.
 * @module
 */
import { Plan, type TensorView } from "../shaders/gpu.ts";
import { tune } from "../shaders/tune.ts";
import {
  allocParams,
  type DeviceParam,
  type GPT2,
  type ModelDropout,
  readAll,
  Workspace,
  writeParts,
} from "./gpt2.ts";
import { DropoutKey } from "../shaders/dropout.ts";
import type { DropoutRates } from "./config.ts";
import { adamwStep, packStepParams } from "../shaders/adamw.ts";
import { GradNorm, NORM_LENGTH } from "../shaders/reduce.ts";
import { lmLoss, METRIC, METRICS_LENGTH, simpoLoss, simpoMetricsLength } from "../shaders/loss.ts";
import { scaleBy } from "../shaders/f16.ts";
import { LossScaler, type ScalerOptions, type ScalerState } from "./scaler.ts";

/** AdamW settings (PyTorch `torch.optim.AdamW` semantics). */
export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global gradient-norm clipping threshold; 0 disables clipping. */
  clipNorm: number;
}

/** The model card's optimiser. */
export const BASELINE_ADAMW: AdamWConfig = {
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0,
  clipNorm: 1,
};

/** What a step optimises. */
export type LossSpec =
  | { kind: "lm" }
  | { kind: "simpo"; beta: number; gamma: number; lmWeight: number };

/** A batch of sequences laid out as the workspace expects (rows b*T + t), padded to the shape. */
export interface Batch {
  /** Number of sequences (for SimPO: 2P, winning first). */
  nSeq: number;
  T: number;
  inputs: Uint32Array;
  targets: Uint32Array;
  lmMask: Float32Array;
  /** 1 on the completion predictions (the rewards' positions); needed for SimPO. */
  completionMask?: Float32Array;
}

/** What one step reports. */
export interface StepMetrics {
  loss: number;
  lmLoss: number;
  simpoLoss?: number;
  chosenReward?: number;
  rejectedReward?: number;
  margin?: number;
  winRate?: number;
  /** SimPO: each pair's reward r = beta * mean completion log-prob, as the loss computed it (f32). */
  chosenRewards?: number[];
  rejectedRewards?: number[];
  /** Global gradient norm before clipping. */
  gradNorm: number;
  lr: number;
  step: number;
  /** Precision f16: the loss scale this step multiplied the loss gradient by. */
  lossScale?: number;
  /** Precision f16: the gradients overflowed, so the step was skipped (weights and AdamW's t unchanged). */
  skipped?: boolean;
}

/** Optimiser state: AdamW's step count and moments, and under precision f16 the loss scaler's state. */
export interface TrainerState {
  step: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
  scaler?: ScalerState;
}

/** Options of a {@link Trainer}. */
export interface TrainerOptions {
  /**
   * Train mode's dropout: the rates, and the seed of the masks, which are keyed by (seed, step, site,
   * position) so a resumed run (same seed, restored step) draws the uninterrupted run's masks. Absent or
   * all rates 0: no dropout work is recorded.
   */
  dropout?: { seed: number; rates: DropoutRates };
  /** Dynamic loss scaling under precision f16 (model/scaler.ts); GradScaler's defaults when absent. */
  scaler?: ScalerOptions;
}

/** Optimiser state plus a cache of workspaces, one per batch shape. */
export class Trainer {
  readonly model: GPT2;
  readonly adamw: AdamWConfig;
  readonly grads: DeviceParam[];
  readonly m: DeviceParam[];
  readonly v: DeviceParam[];
  /** Number of optimiser steps taken (AdamW's t). */
  step = 0;
  /** The loss scale under precision f16 (the model's precision when the trainer was made). */
  readonly scaler?: LossScaler;
  #stepParams: TensorView;
  #norm: GradNorm;
  /** The gradient norm then AdamW: what a step runs after backward. */
  #optimizer: Plan;
  /** Precision f16: [s, 1 / s] for the loss scale s, read by the loss plans and the gradient norm. */
  #scaleFactor?: TensorView;
  /**
   * Per workspace batch shape: the loss metrics (SimPO's per-sequence rewards need nSeq slots) followed
   * by a copy of the norm buffer, so one read returns both.
   */
  #metrics = new Map<string, TensorView>();
  #workspaces = new Map<string, Workspace>();
  #lossPlans = new Map<string, Plan>();
  #dropout?: ModelDropout;

  constructor(model: GPT2, adamw: AdamWConfig = BASELINE_ADAMW, options: TrainerOptions = {}) {
    this.model = model;
    this.adamw = adamw;
    const gpu = model.gpu;
    const d = options.dropout;
    if (d && (d.rates.embdPdrop > 0 || d.rates.attnPdrop > 0 || d.rates.residPdrop > 0)) {
      this.#dropout = { key: new DropoutKey(gpu, d.seed), rates: { ...d.rates } };
    }
    this.grads = allocParams(gpu, model.config, "grad");
    this.m = allocParams(gpu, model.config, "adam.m");
    this.v = allocParams(gpu, model.config, "adam.v");
    this.#stepParams = gpu.tensor(16, "adamw.step");
    const gradViews = this.grads.flatMap((p) => p.parts.map((part) => part.view));
    if (model.half) {
      this.scaler = new LossScaler(options.scaler);
      this.#scaleFactor = gpu.tensor(2, "loss_scale");
    }
    this.#optimizer = new Plan(gpu);
    this.#norm = new GradNorm(this.#optimizer, gradViews, adamw.clipNorm, { lossScale: this.#scaleFactor });
    this.model.params.forEach((p, i) => {
      p.parts.forEach((part, j) => {
        adamwStep(this.#optimizer, {
          param: part.view,
          grad: this.grads[i].parts[j].view,
          m: this.m[i].parts[j].view,
          v: this.v[i].parts[j].view,
          stepParams: this.#stepParams,
          norm: this.#norm.output,
          decay: p.spec.decay,
          half: model.half?.copyOf(part.view),
        });
      });
    });
  }

  /**
   * Free the gradients, optimiser moments, workspaces and step buffers (not the model's weights); the
   * trainer is unusable afterwards.
   */
  destroy(): void {
    const gpu = this.model.gpu;
    for (const set of [this.grads, this.m, this.v]) {
      for (const p of set) for (const part of p.parts) gpu.free(part.view);
    }
    for (const ws of this.#workspaces.values()) ws.destroy();
    this.#workspaces.clear();
    for (const m of this.#metrics.values()) gpu.free(m);
    this.#metrics.clear();
    for (const plan of this.#lossPlans.values()) plan.destroy();
    this.#lossPlans.clear();
    this.#optimizer.destroy();
    for (const v of [this.#stepParams, this.#norm.partials, this.#norm.output]) gpu.free(v);
    if (this.#scaleFactor) gpu.free(this.#scaleFactor);
    this.#dropout?.key.destroy();
  }

  /**
   * The workspace for a batch shape, made on first use. At most {@link maxWorkspaces} are kept (each
   * holds a batch's activations: gigabytes at GPT-2 124M); the least recently used one is freed first.
   * Every step has finished on the GPU when {@link trainStep} resolves, so freeing is safe between steps.
   */
  workspace(B: number, T: number): Workspace {
    const key = `${B}x${T}`;
    let ws = this.#workspaces.get(key);
    if (ws) {
      // Most recently used last.
      this.#workspaces.delete(key);
      this.#workspaces.set(key, ws);
      return ws;
    }
    while (this.#workspaces.size >= Math.max(1, this.maxWorkspaces)) {
      const [oldKey, old] = this.#workspaces.entries().next().value!;
      old.destroy();
      this.#workspaces.delete(oldKey);
      this.model.gpu.free(this.#metrics.get(oldKey)!);
      this.#metrics.delete(oldKey);
      for (const [k, plan] of [...this.#lossPlans]) {
        if (!k.startsWith(`${oldKey}:`)) continue;
        plan.destroy();
        this.#lossPlans.delete(k);
      }
    }
    ws = new Workspace(this.model, B, T, { grads: this.grads, dropout: this.#dropout });
    this.#workspaces.set(key, ws);
    this.#metrics.set(key, this.model.gpu.tensor(Trainer.#normAt(B) + NORM_LENGTH, `metrics ${key}`));
    return ws;
  }

  /** Where the norm's copy starts in the metrics buffer of batches of B sequences. */
  static #normAt(B: number): number {
    return simpoMetricsLength(Math.ceil(B / 2));
  }

  /** Batch shapes whose workspaces are kept ({@link workspace}). The round loop uses up to three. */
  maxWorkspaces = 3;

  /** The batch shapes that currently have a workspace, least recently used first. */
  get workspaceShapes(): string[] {
    return [...this.#workspaces.keys()];
  }

  /** Clear the gradients and the workspace, then forward, the loss and backward: a step's gradients. */
  #encodeGradients(enc: GPUCommandEncoder, ws: Workspace, loss: LossSpec): void {
    for (const p of this.grads) for (const part of p.parts) enc.clearBuffer(part.view.buffer);
    ws.encodeClear(enc);
    ws.forward.encode(enc);
    this.#lossPlan(ws, loss).encode(enc);
    ws.backward!.encode(enc);
  }

  #lossPlan(ws: Workspace, loss: LossSpec): Plan {
    const key = `${ws.B}x${ws.T}:${JSON.stringify(loss)}`;
    let plan = this.#lossPlans.get(key);
    if (!plan) {
      plan = new Plan(this.model.gpu);
      const buffers = { metrics: this.#metricsOf(ws), g: ws.g, lp: ws.lp, T: ws.T };
      const lm = { ...buffers, lmMask: ws.lmMask, nSeq: ws.B };
      if (loss.kind === "lm") lmLoss(plan, { ...lm, nWinning: ws.B, weight: 1 });
      else {
        const P = ws.B / 2;
        lmLoss(plan, { ...lm, nWinning: P, weight: loss.lmWeight });
        simpoLoss(plan, {
          ...buffers,
          completionMask: ws.completionMask,
          P,
          beta: loss.beta,
          gamma: loss.gamma,
        });
      }
      // f16: backward starts from the scaled loss gradient, so every gradient is scaled.
      if (this.#scaleFactor) scaleBy(plan, { x: ws.g, factor: this.#scaleFactor, n: ws.B * ws.T });
      this.#lossPlans.set(key, plan);
    }
    return plan;
  }

  /**
   * The plans one training step encodes for a batch shape, in order (for profiling; {@link trainStep}
   * also clears the gradients and workspace buffers first).
   */
  stepPlans(B: number, T: number, loss: LossSpec): { name: string; plan: Plan }[] {
    const ws = this.workspace(B, T);
    return [
      { name: "forward", plan: ws.forward },
      { name: "loss", plan: this.#lossPlan(ws, loss) },
      { name: "backward", plan: ws.backward! },
      { name: "optimizer", plan: this.#optimizer },
    ];
  }

  /**
   * One AdamW step on `batch` at learning rate `lr`, submitted at once with no wait on the CPU. Resolves
   * with the step's metrics. Under f16 the step's AdamW t is this.step + 1 as for f32, but a step whose
   * scaled gradients overflowed changes nothing on the GPU and, once its metrics are read, neither
   * advances {@link step} nor the scaler's clean count (the scale backs off), so the next step writes the
   * same t (GradScaler's rule, model/scaler.ts).
   */
  async trainStep(batch: Batch, loss: LossSpec, lr: number): Promise<StepMetrics> {
    if (loss.kind === "simpo" && (batch.nSeq % 2 !== 0 || !batch.completionMask)) {
      throw new Error(
        "a SimPO batch needs an even number of sequences (winning then losing) and a completion mask",
      );
    }
    const ws = this.workspace(batch.nSeq, batch.T);
    const gpu = this.model.gpu;
    await tune(gpu);
    ws.setBatch(batch.inputs, batch.targets, batch.lmMask, batch.completionMask);
    const step = this.step + 1;
    this.#dropout?.key.setStep(step);
    gpu.write(this.#stepParams, packStepParams({ ...this.adamw, lr, step }));
    const scale = this.scaler?.scale;
    if (scale !== undefined) this.#setScale(scale);
    const enc = gpu.device.createCommandEncoder();
    this.#encodeGradients(enc, ws, loss);
    this.#optimizer.encode(enc);
    const metrics = this.#metricsOf(ws), at = Trainer.#normAt(ws.B);
    const norm = this.#norm.output;
    enc.copyBufferToBuffer(
      norm.buffer,
      norm.offset,
      metrics.buffer,
      metrics.offset + 4 * at,
      4 * NORM_LENGTH,
    );
    gpu.device.queue.submit([enc.finish()]);
    const m = await gpu.read(metrics);
    const [gradNorm, , skip] = m.subarray(at, at + NORM_LENGTH);
    if (!this.scaler) {
      this.step = step;
      return { ...this.#lossMetrics(m, ws, loss), gradNorm, lr, step };
    }
    const skipped = skip !== 0;
    if (!skipped) this.step = step;
    this.scaler.update(!skipped);
    return {
      ...this.#lossMetrics(m, ws, loss),
      // The norm of the unscaled gradients (inf or NaN on a skipped step).
      gradNorm: gradNorm / scale!,
      lr,
      step: this.step,
      lossScale: scale,
      skipped,
    };
  }

  /** The loss scale the loss plans multiply the loss gradient by, and its inverse for the unscale. */
  #setScale(scale: number): void {
    this.model.gpu.write(this.#scaleFactor!, Float32Array.of(scale, 1 / scale));
  }

  #metricsOf(ws: Workspace): TensorView {
    return this.#metrics.get(`${ws.B}x${ws.T}`)!;
  }

  /**
   * The loss metrics in `m`, the metrics buffer of `ws` as read after a step: under SimPO the batch
   * means and every pair's rewards; the total is simpo + lambda * LM in the preference phase.
   */
  #lossMetrics(
    m: Float32Array,
    ws: Workspace,
    loss: LossSpec,
  ): Omit<StepMetrics, "gradNorm" | "lr" | "step"> {
    if (loss.kind === "lm") return { loss: m[METRIC.lm], lmLoss: m[METRIC.lm] };
    const P = ws.B / 2;
    const rewards = Array.from(m.subarray(METRICS_LENGTH, simpoMetricsLength(P)));
    return {
      loss: m[METRIC.simpo] + loss.lmWeight * m[METRIC.lm],
      lmLoss: m[METRIC.lm],
      simpoLoss: m[METRIC.simpo],
      chosenReward: m[METRIC.chosenReward],
      rejectedReward: m[METRIC.rejectedReward],
      margin: m[METRIC.margin],
      winRate: m[METRIC.winRate],
      chosenRewards: rewards.slice(0, P),
      rejectedRewards: rewards.slice(P),
    };
  }

  /**
   * Forward, loss and backward only (no optimiser step): leaves the gradients in {@link grads} and
   * returns the loss metrics. For gradient checks.
   */
  async computeGradients(batch: Batch, loss: LossSpec): Promise<StepMetrics> {
    const ws = this.workspace(batch.nSeq, batch.T);
    await tune(this.model.gpu);
    // The masks of the step trainStep would take next.
    this.#dropout?.key.setStep(this.step + 1);
    // Unscaled: the gradients themselves (under f16, from f16 matmul operands).
    if (this.#scaleFactor) this.#setScale(1);
    ws.setBatch(batch.inputs, batch.targets, batch.lmMask, batch.completionMask);
    const device = this.model.gpu.device;
    const enc = device.createCommandEncoder();
    this.#encodeGradients(enc, ws, loss);
    device.queue.submit([enc.finish()]);
    const m = await this.model.gpu.read(this.#metricsOf(ws));
    return { ...this.#lossMetrics(m, ws, loss), gradNorm: NaN, lr: 0, step: this.step };
  }

  /** Download the gradients (names as the parameter table). */
  getGradients(): Promise<Map<string, Float32Array>> {
    return readAll(this.model.gpu, this.grads);
  }

  /** Optimiser state for checkpoints: step count, both moments, and the loss scaler's state under f16. */
  async getState(): Promise<TrainerState> {
    return {
      step: this.step,
      m: await readAll(this.model.gpu, this.m),
      v: await readAll(this.model.gpu, this.v),
      ...(this.scaler ? { scaler: this.scaler.getState() } : {}),
    };
  }

  /**
   * Restore optimiser state saved by {@link getState}. Under f16 a state without the scaler's (saved in
   * f32) starts the scaler afresh.
   */
  setState(state: TrainerState): void {
    this.step = state.step;
    if (this.scaler && state.scaler) this.scaler.setState(state.scaler);
    for (const [set, values] of [[this.m, state.m], [this.v, state.v]] as const) {
      for (const p of set) {
        const data = values.get(p.spec.name);
        if (!data) throw new Error(`optimizer state: missing ${p.spec.name}`);
        writeParts(this.model.gpu, p, data);
      }
    }
  }
}
