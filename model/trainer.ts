/**
 * One optimisation step on the GPU: forward, the loss (LM, or SimPO + lambda * LM), backward, global
 * gradient-norm clipping and AdamW, encoded as one command submission. Only a few floats come back.
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
import { GradNorm } from "../shaders/reduce.ts";
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
  #normPlan: Plan;
  #adamwPlan: Plan;
  /** The gradient norm then AdamW: what a step runs after backward. */
  #optimizer: Plan;
  /** The loss scale as the loss plans read it (f16). */
  #scaleFactor?: TensorView;
  /** The loss metrics of each workspace's batch shape (SimPO's per-sequence rewards need nSeq slots). */
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
    this.#normPlan = new Plan(gpu);
    this.#adamwPlan = new Plan(gpu);
    this.#norm = new GradNorm(this.#normPlan, gradViews, adamw.clipNorm);
    if (model.half) {
      this.scaler = new LossScaler(options.scaler);
      this.#scaleFactor = gpu.tensor(1, "loss_scale");
    }
    this.model.params.forEach((p, i) => {
      p.parts.forEach((part, j) => {
        adamwStep(this.#adamwPlan, {
          param: part.view,
          grad: this.grads[i].parts[j].view,
          m: this.m[i].parts[j].view,
          v: this.v[i].parts[j].view,
          stepParams: this.#stepParams,
          norm: this.#norm.output,
          decay: p.spec.decay,
        });
      });
    });
    this.#optimizer = new Plan(gpu);
    this.#optimizer.append(this.#normPlan);
    this.#optimizer.append(this.#adamwPlan);
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
    this.#normPlan.destroy();
    this.#adamwPlan.destroy();
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
    this.#metrics.set(key, this.model.gpu.tensor(simpoMetricsLength(Math.ceil(B / 2)), `metrics ${key}`));
    return ws;
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

  /** One AdamW step on `batch` at learning rate `lr`. Resolves with the step's metrics. */
  async trainStep(batch: Batch, loss: LossSpec, lr: number): Promise<StepMetrics> {
    if (loss.kind === "simpo" && (batch.nSeq % 2 !== 0 || !batch.completionMask)) {
      throw new Error(
        "a SimPO batch needs an even number of sequences (winning then losing) and a completion mask",
      );
    }
    const ws = this.workspace(batch.nSeq, batch.T);
    await tune(this.model.gpu);
    ws.setBatch(batch.inputs, batch.targets, batch.lmMask, batch.completionMask);
    if (this.scaler) return this.#scaledStep(ws, loss, lr, this.scaler);
    this.step++;
    this.#dropout?.key.setStep(this.step);
    this.model.gpu.write(this.#stepParams, packStepParams({ ...this.adamw, lr, step: this.step }));
    const device = this.model.gpu.device;
    const enc = device.createCommandEncoder();
    this.#encodeGradients(enc, ws, loss);
    this.#optimizer.encode(enc);
    device.queue.submit([enc.finish()]);
    const norm = await this.model.gpu.read(this.#norm.output, 0, 1);
    return { ...(await this.#readMetrics(ws, loss)), gradNorm: norm[0], lr, step: this.step };
  }

  /**
   * A step under dynamic loss scaling: forward, loss, backward from the scaled loss gradient and the
   * (scaled) gradient norm in one submission; then, only if that norm is finite, AdamW with the clip
   * coefficient divided by the scale (PyTorch: unscale, clip, step) and the recast of the f16 weights.
   * An inf/NaN norm skips the update and leaves AdamW's t; the scaler backs off either way as GradScaler
   * does.
   */
  async #scaledStep(ws: Workspace, loss: LossSpec, lr: number, scaler: LossScaler): Promise<StepMetrics> {
    const gpu = this.model.gpu;
    const scale = scaler.scale;
    const step = this.step + 1;
    this.#dropout?.key.setStep(step);
    gpu.write(this.#scaleFactor!, Float32Array.of(scale));
    const device = gpu.device;
    const enc = device.createCommandEncoder();
    this.#encodeGradients(enc, ws, loss);
    this.#normPlan.encode(enc);
    device.queue.submit([enc.finish()]);
    const [scaledNorm] = await gpu.read(this.#norm.output, 0, 1);
    const finite = Number.isFinite(scaledNorm);
    const norm = scaledNorm / scale;
    if (finite) {
      this.step = step;
      const a = this.adamw;
      gpu.write(this.#stepParams, packStepParams({ ...a, lr, step }));
      const clip = a.clipNorm > 0 ? Math.min(1, a.clipNorm / (norm + 1e-6)) : 1;
      gpu.write(this.#norm.output, Float32Array.of(norm, clip / scale));
      const enc2 = device.createCommandEncoder();
      this.#adamwPlan.encode(enc2);
      this.model.half!.cast.encode(enc2);
      device.queue.submit([enc2.finish()]);
    }
    scaler.update(finite);
    return {
      ...(await this.#readMetrics(ws, loss)),
      gradNorm: norm,
      lr,
      step: this.step,
      lossScale: scale,
      skipped: !finite,
    };
  }

  #metricsOf(ws: Workspace): TensorView {
    return this.#metrics.get(`${ws.B}x${ws.T}`)!;
  }

  /**
   * The loss metrics of the last forward pass on `ws` (one read: under SimPO the batch means and every
   * pair's rewards); the total is simpo + lambda * LM in the preference phase.
   */
  async #readMetrics(ws: Workspace, loss: LossSpec): Promise<Omit<StepMetrics, "gradNorm" | "lr" | "step">> {
    const P = ws.B / 2;
    const length = loss.kind === "lm" ? METRICS_LENGTH : simpoMetricsLength(P);
    const m = await this.model.gpu.read(this.#metricsOf(ws), 0, length);
    if (loss.kind === "lm") return { loss: m[METRIC.lm], lmLoss: m[METRIC.lm] };
    const rewards = Array.from(m.subarray(METRICS_LENGTH));
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
    if (this.#scaleFactor) this.model.gpu.write(this.#scaleFactor, Float32Array.of(1));
    ws.setBatch(batch.inputs, batch.targets, batch.lmMask, batch.completionMask);
    const device = this.model.gpu.device;
    const enc = device.createCommandEncoder();
    this.#encodeGradients(enc, ws, loss);
    device.queue.submit([enc.finish()]);
    return { ...(await this.#readMetrics(ws, loss)), gradNorm: NaN, lr: 0, step: this.step };
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
