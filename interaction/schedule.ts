/**
 * Learning-rate schedules as transformers defines them, so a run follows the baseline's curve step for
 * step. `step` is the number of optimizer steps already taken: transformers' LambdaLR gives the first
 * step (step 0) the factor lambda(0), which is 0 with warm-up.
 *
 * - cosine (`get_cosine_schedule_with_warmup`, num_cycles 0.5):
 *   lambda(s) = s / max(1, W) for s < W, else max(0, 0.5 (1 + cos(pi * p))), p = (s - W) / max(1, N - W)
 *   (progress is not clamped, so past N the factor rises again, exactly as in transformers)
 * - constant (`get_constant_schedule_with_warmup`): lambda(s) = s / max(1, W) for s < W, else 1
 * @module
 */

/** A schedule's settings. */
export interface ScheduleConfig {
  kind: "cosine" | "constant";
  /** Peak learning rate. */
  lr: number;
  warmupSteps: number;
  /** Steps over which the cosine decays to 0 (ignored by `constant`). */
  totalSteps: number;
}

/** The multiplier of the peak learning rate after `step` optimizer steps. */
export function lrFactor(config: ScheduleConfig, step: number): number {
  const { kind, warmupSteps: w, totalSteps: n } = config;
  if (!Number.isInteger(step) || step < 0) {
    throw new Error(`schedule: step must be an integer >= 0, got ${step}`);
  }
  if (step < w) return step / Math.max(1, w);
  if (kind === "constant") return 1;
  if (kind !== "cosine") {
    throw new Error(`schedule: kind must be "cosine" or "constant", got ${JSON.stringify(kind)}`);
  }
  const progress = (step - w) / Math.max(1, n - w);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/** The learning rate for the optimizer step that follows `step` completed steps. */
export function learningRate(config: ScheduleConfig, step: number): number {
  return config.lr * lrFactor(config, step);
}
