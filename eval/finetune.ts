/**
 * Fine-tuning one task as the BabyLM pipeline does (evaluation_pipeline/finetune/trainer.py): shuffled
 * batches with the last incomplete one dropped, AdamW at a linear warm-up then cosine schedule down to a
 * floor (the first step at lr 0 whenever there is warm-up), an evaluation on the validation set after
 * every epoch, and the best epoch kept by the task's metric (a tie keeps the earlier epoch). Its
 * validation metrics are the task's result and its logits the predictions.
 *
 * What differs from the pipeline, by necessity: the batch order and the head's initial weights come from
 * this project's seeded generator, not torch's, so runs agree with the pipeline in distribution, not
 * draw for draw.
 * @module
 */
import type { GPT2 } from "../model/gpt2.ts";
import type { Precision } from "../model/precision.ts";
import { type DropoutRates, GPT2_DROPOUT } from "../model/config.ts";
import { deriveSeed, Rng } from "../model/random.ts";
import type { ScalerOptions } from "../model/scaler.ts";
import { Classifier, type HeadWeights, initHead, type Pooling, type Positions } from "./finetune_model.ts";
import {
  type EncodedExample,
  type FinetuneMetric,
  type FinetuneTask,
  padBatch,
  type PaddingSide,
} from "./finetune_data.ts";

/** Every hyperparameter of a fine-tuning run (the pipeline's defaults in {@link FINETUNE_DEFAULTS}). */
export interface FinetuneSettings {
  lr: number;
  /** Batch size; absent: the task's (32, or 16 for BoolQ and MultiRC). */
  batchSize?: number;
  /** Epochs; absent: the task's (10, or 30 for WSC). */
  epochs?: number;
  /** Optimiser steps in all, overriding the epochs (the schedule spans them; stops mid-epoch). */
  steps?: number;
  warmupProportion: number;
  /** The cosine's floor as a fraction of the peak. */
  minFactor: number;
  schedule: "cosine" | "none";
  weightDecay: number;
  beta1: number;
  beta2: number;
  adamEps: number;
  classifierDropout: number;
  headEps: number;
  seed: number;
  pooling: Pooling;
  paddingSide: PaddingSide;
  positions: Positions;
  sequenceLength: number;
  validBatchSize: number;
  /** The transformer's train-mode dropout; absent: its config's rates. */
  transformerDropout?: DropoutRates;
  /** Precision f16: the loss scaler's settings; absent: GradScaler's defaults (model/scaler.ts). */
  lossScale?: ScalerOptions;
  /**
   * Most sequences per GPU pass (a batch is split into micro-batches whose gradients add up to the
   * batch's); absent: the whole batch, or as many as keep one [rows, 4C] activation within a binding.
   */
  microBatch?: number;
}

/** The pipeline's defaults (run.py and eval_finetuning.sh), with the 2026 scripts' last-token head. */
export const FINETUNE_DEFAULTS: FinetuneSettings = {
  lr: 3e-5,
  warmupProportion: 0.06,
  minFactor: 0.1,
  schedule: "cosine",
  weightDecay: 0.01,
  beta1: 0.9,
  beta2: 0.999,
  adamEps: 1e-8,
  classifierDropout: 0.1,
  headEps: 1e-5,
  seed: 42,
  pooling: "first",
  paddingSide: "right",
  positions: "sequence",
  sequenceLength: 512,
  validBatchSize: 64,
};

/**
 * The learning-rate factor at scheduler step k (the step about to be taken, from 0) of `total`: k / W
 * during the W warm-up steps, then max(floor, floor + (1 - floor) (1 + cos(pi progress)) / 2) (utils.py
 * `cosine_schedule_with_warmup`); 1 throughout for `none`.
 */
export function lrFactor(
  k: number,
  warmup: number,
  total: number,
  floor: number,
  schedule: "cosine" | "none",
): number {
  if (schedule === "none") return 1;
  if (k < warmup) return k / Math.max(1, warmup);
  const progress = (k - warmup) / Math.max(1, total - warmup);
  return Math.max(floor, floor + (1 - floor) * 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/**
 * accuracy, binary F1 of label 1 and Matthews' correlation (sklearn's definitions; F1 and MCC are 0 where
 * their denominators are), from predictions and labels.
 */
export function classificationMetrics(
  preds: ArrayLike<number>,
  labels: ArrayLike<number>,
  numLabels: number,
): Record<FinetuneMetric, number> {
  const n = labels.length;
  let correct = 0, tp = 0, fp = 0, fn = 0;
  const predicted = new Array(numLabels).fill(0), actual = new Array(numLabels).fill(0);
  for (let i = 0; i < n; i++) {
    const p = preds[i], y = labels[i];
    if (p === y) correct++;
    predicted[p]++;
    actual[y]++;
    if (p === 1 && y === 1) tp++;
    else if (p === 1) fp++;
    else if (y === 1) fn++;
  }
  const f1 = 2 * tp + fp + fn === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
  // The multiclass form (sklearn's): (c s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)).
  let pt = 0, pp = 0, tt = 0;
  for (let k = 0; k < numLabels; k++) {
    pt += predicted[k] * actual[k];
    pp += predicted[k] ** 2;
    tt += actual[k] ** 2;
  }
  const den = Math.sqrt((n * n - pp) * (n * n - tt));
  const mcc = den === 0 ? 0 : (correct * n - pt) / den;
  return { accuracy: n === 0 ? 0 : correct / n, f1, mcc };
}

/** The arg-max label of each row of logits [n, L] (the first of equal values, as torch's argmax). */
export function argmaxRows(logits: Float32Array, L: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < logits.length / L; i++) {
    let best = 0;
    for (let k = 1; k < L; k++) if (logits[i * L + k] > logits[i * L + best]) best = k;
    out.push(best);
  }
  return out;
}

/** One epoch's record. */
export interface EpochRecord {
  epoch: number;
  steps: number;
  /** Mean training loss over the epoch's steps. */
  trainLoss: number;
  valid: Record<string, number>;
}

/** What fine-tuning one task produced. */
export interface FinetuneResult {
  task: string;
  /** The best epoch's validation metrics (the task's listed metrics). */
  metrics: Record<string, number>;
  bestEpoch: number;
  selectedBy: FinetuneMetric;
  epochs: EpochRecord[];
  /** The best epoch's validation logits [n, L], row i for validation example i. */
  logits: Float32Array;
  trainExamples: number;
  validExamples: number;
  steps: number;
  batchSize: number;
  /** Sequences per GPU pass. */
  microBatch: number;
  warmupSteps: number;
  /** The transformer's train-mode dropout rates used. */
  transformerDropout: DropoutRates;
  /** The matmuls' precision (the model's, model/precision.ts). */
  precision: Precision;
  /** Precision f16: the loss scale after the last step, and steps skipped for overflowed gradients. */
  lossScale?: number;
  skippedSteps?: number;
  /** The fine-tuned transformer and head of the best epoch (when asked to keep them). */
  best?: { weights: Map<string, Float32Array>; head: HeadWeights };
}

/** A progress report after every optimiser step. */
export interface FinetuneProgress {
  task: string;
  epoch: number;
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  /** Precision f16: the step's loss scale, and whether its gradients overflowed (no update). */
  lossScale?: number;
  skipped?: boolean;
}

/** Options of {@link finetuneTask}. */
export interface FinetuneRunOptions {
  onStep?: (p: FinetuneProgress) => void;
  onEpoch?: (task: string, record: EpochRecord) => void;
  /** Download the best epoch's weights (for `--save`). */
  keepBest?: boolean;
}

/** Evaluate the classifier on `items` in order, in batches of `size` padded to their longest. */
async function evaluate(
  c: Classifier,
  items: EncodedExample[],
  size: number,
  maxB: number,
  padId: number,
  side: PaddingSide,
): Promise<Float32Array> {
  const L = c.options.numLabels;
  const out = new Float32Array(items.length * L);
  for (let i = 0; i < items.length; i += size) {
    const batch = padBatch(items.slice(i, i + size), padId, side);
    // A validation batch is padded as a whole (absolute positions depend on it), then run in parts that
    // fit the workspace.
    for (let b0 = 0; b0 < batch.B; b0 += maxB) {
      const B = Math.min(maxB, batch.B - b0);
      const part = {
        B,
        T: batch.T,
        tokens: batch.tokens.subarray(b0 * batch.T, (b0 + B) * batch.T),
        keyStart: batch.keyStart.subarray(b0, b0 + B),
      };
      out.set(await c.predict(part), (i + b0) * L);
    }
  }
  return out;
}

/**
 * Fine-tune `model` (its weights are changed) with a fresh head on `train`, evaluating on `valid` after
 * every epoch; padding with `padId`. The matmuls run in the model's precision; under f16 a step skipped
 * for overflowed gradients counts towards the epoch and the step total but not the schedule: the next
 * step retries at the same learning rate, as transformers' Trainer does (its scheduler steps only when
 * accelerate reports the optimizer step was not skipped) and as the round loop does (model/scaler.ts).
 */
export async function finetuneTask(
  model: GPT2,
  task: FinetuneTask,
  train: EncodedExample[],
  valid: EncodedExample[],
  padId: number,
  s: FinetuneSettings,
  options: FinetuneRunOptions = {},
): Promise<FinetuneResult> {
  if ((s.pooling === "last") !== (s.paddingSide === "left")) {
    throw new Error(
      `pooling "${s.pooling}" needs padding on the ${s.pooling === "last" ? "left" : "right"} ` +
        `(the pipeline: --take_final requires --padding_side left; the first token of a left-padded batch is padding)`,
    );
  }
  const batchSize = s.batchSize ?? task.batchSize;
  const perEpoch = Math.floor(train.length / batchSize);
  if (perEpoch === 0) {
    throw new Error(`${task.name}: ${train.length} training examples make no full batch of ${batchSize}`);
  }
  if (valid.length === 0) throw new Error(`${task.name}: no validation examples`);
  const epochs = s.steps !== undefined ? Math.ceil(s.steps / perEpoch) : (s.epochs ?? task.epochs);
  const total = s.steps ?? perEpoch * epochs;
  const warmup = Math.floor(s.warmupProportion * total);
  const L = task.numLabels;
  const maxT = Math.max(...train.map((x) => x.ids.length), ...valid.map((x) => x.ids.length));
  const C = model.config.nEmbd;
  const fit = Math.max(1, Math.floor(model.gpu.limits.maxStorageBufferBindingSize / (maxT * 4 * C * 4)));
  const maxB = Math.min(batchSize, s.microBatch ?? fit);
  // transformers' defaults where config.json states no rates.
  const rates = s.transformerDropout ?? model.config.dropout ?? GPT2_DROPOUT;
  const classifier = new Classifier(model, {
    numLabels: L,
    classifierDropout: s.classifierDropout,
    headEps: s.headEps,
    transformerDropout: rates,
    seed: deriveSeed(s.seed, "finetune", task.name, "dropout"),
    adamw: { beta1: s.beta1, beta2: s.beta2, eps: s.adamEps, weightDecay: s.weightDecay },
    pooling: s.pooling,
    positions: s.positions,
    maxB,
    maxT,
    head: initHead(model.config.nEmbd, L, deriveSeed(s.seed, "finetune", task.name, "head")),
    scaler: s.lossScale,
  });
  try {
    const epochsDone: EpochRecord[] = [];
    let best:
      | { score: number; epoch: number; logits: Float32Array; metrics: Record<string, number> }
      | undefined;
    let kept: FinetuneResult["best"];
    // Steps taken (the epoch and the total count them all) and steps applied (the schedule's count:
    // transformers steps its scheduler only when the scaler did not skip the optimizer step).
    let step = 0, applied = 0;
    for (let epoch = 1; epoch <= epochs && step < total; epoch++) {
      // The DataLoader's shuffle: a fresh permutation every epoch, from the seed.
      const order = new Rng(deriveSeed(s.seed, "finetune", task.name, "epoch", epoch))
        .shuffle(Array.from({ length: train.length }, (_, i) => i));
      let lossSum = 0, steps = 0;
      for (let k = 0; k < perEpoch && step < total; k++) {
        const items = order.slice(k * batchSize, (k + 1) * batchSize).map((i) => train[i]);
        const lr = s.lr * lrFactor(applied, warmup, total, s.minFactor, s.schedule);
        const { loss, lossScale, skipped } = await classifier.trainStep(
          padBatch(items, padId, s.paddingSide),
          lr,
        );
        if (!Number.isFinite(loss)) {
          throw new Error(`${task.name}: epoch ${epoch} step ${step + 1}: the loss is ${loss}`);
        }
        step++;
        if (!skipped) applied++;
        steps++;
        lossSum += loss;
        options.onStep?.({
          task: task.name,
          epoch,
          step,
          totalSteps: total,
          loss,
          lr,
          ...(lossScale !== undefined ? { lossScale, skipped } : {}),
        });
      }
      const logits = await evaluate(classifier, valid, s.validBatchSize, maxB, padId, s.paddingSide);
      const all = classificationMetrics(argmaxRows(logits, L), valid.map((x) => x.label), L);
      const metrics = Object.fromEntries(task.metrics.map((m) => [m, all[m]]));
      const record = { epoch, steps, trainLoss: lossSum / Math.max(1, steps), valid: metrics };
      epochsDone.push(record);
      options.onEpoch?.(task.name, record);
      // Strictly better only: a tie keeps the earlier epoch (trainer.py `_compare_scores`).
      if (!best || all[task.select] > best.score) {
        best = { score: all[task.select], epoch, logits, metrics };
        if (options.keepBest) kept = { weights: await model.getWeights(), head: await classifier.getHead() };
      }
    }
    return {
      task: task.name,
      metrics: best!.metrics,
      bestEpoch: best!.epoch,
      selectedBy: task.select,
      epochs: epochsDone,
      logits: best!.logits,
      trainExamples: train.length,
      validExamples: valid.length,
      steps: step,
      batchSize,
      microBatch: maxB,
      warmupSteps: warmup,
      transformerDropout: rates,
      precision: model.precision,
      ...(classifier.scaler
        ? { lossScale: classifier.scaler.scale, skippedSteps: classifier.scaler.skipped }
        : {}),
      best: kept,
    };
  } finally {
    classifier.destroy();
  }
}

/** The pipeline's predictions.json for a task, each prediction with its per-class logits added. */
export function predictionsJson(result: FinetuneResult, numLabels: number): unknown {
  const preds = argmaxRows(result.logits, numLabels);
  return {
    [result.task]: {
      predictions: preds.map((pred, i) => ({
        id: `${result.task}_${i}`,
        pred,
        logits: Array.from(result.logits.subarray(i * numLabels, (i + 1) * numLabels)),
      })),
    },
  };
}

/** The pipeline's results.txt: one `metric: value` line per metric. */
export function resultsText(result: FinetuneResult): string {
  return Object.entries(result.metrics).map(([k, v]) => `${k}: ${v}`).join("\n");
}
