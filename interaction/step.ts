/**
 * One optimisation step as every training command takes it (the round loop's LM and SimPO phases,
 * `sft`, `simpo`): the learning rate of the schedule at the trainer's step count, one
 * {@link Trainer.trainStep}, a loss that must stay finite, and the trained positions per second. Also the
 * shuffled order of an epoch's items, a pure function of the seed and the epoch's name.
 * @module
 */
import type { Batch, LossSpec, StepMetrics, Trainer } from "../model/trainer.ts";
import { deriveSeed, Rng } from "../model/random.ts";
import { learningRate, type ScheduleConfig } from "./schedule.ts";

/** What one {@link scheduledStep} did. */
export interface ScheduledStep {
  metrics: StepMetrics;
  /** The learning rate the step used. */
  lr: number;
  /** Trained (masked-in) positions of the batch. */
  tokens: number;
  tokensPerSec: number;
}

/**
 * Take one optimizer step on `batch` at `learningRate(schedule, trainer.step)`. A loss that is not finite
 * is an error naming `where` (the step's place in the run), since the weights after it are garbage.
 */
export async function scheduledStep(
  trainer: Trainer,
  schedule: ScheduleConfig,
  batch: Batch,
  loss: LossSpec,
  where: string,
): Promise<ScheduledStep> {
  const lr = learningRate(schedule, trainer.step);
  const t0 = performance.now();
  const metrics = await trainer.trainStep(batch, loss, lr);
  const seconds = (performance.now() - t0) / 1000;
  if (!Number.isFinite(metrics.loss)) throw new Error(`${where}: the loss is ${metrics.loss} (lr ${lr})`);
  let tokens = 0;
  for (const x of batch.lmMask) tokens += x;
  return { metrics, lr, tokens, tokensPerSec: tokens / Math.max(seconds, 1e-9) };
}

/**
 * The order of `n` items in one epoch: a Fisher-Yates shuffle seeded by `deriveSeed(seed, "batches",
 * ...epoch)`, where `epoch` names the epoch (the round loop: round, phase, epoch), so a resumed run
 * replays it.
 */
export function epochOrder(seed: number, n: number, ...epoch: (string | number)[]): number[] {
  return new Rng(deriveSeed(seed, "batches", ...epoch)).shuffle(Array.from({ length: n }, (_, i) => i));
}
