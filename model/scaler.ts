/**
 * Dynamic loss scaling, with the rules of PyTorch's `torch.amp.GradScaler`: the loss gradient is
 * multiplied by `scale` before backward so that small gradients survive f16; a step whose gradients came
 * out inf or NaN is skipped (no AdamW update, AdamW's t does not advance) and the scale is multiplied by
 * `backoffFactor`; after `growthInterval` consecutive clean steps it is multiplied by `growthFactor`.
 *
 * The state is three numbers ({@link ScalerState}), saved with the optimiser state so that a resumed run
 * continues with the same scale and count (bit-for-bit resume).
 *
 * A skipped step does not move the learning-rate schedule either: the next attempt runs at the same lr,
 * and the schedule's step is the count of applied steps (`Trainer.step`, which `scheduledStep` passes to
 * `learningRate`). That is transformers' Trainer with fp16: it calls `lr_scheduler.step()` only when
 * accelerate's `optimizer_step_was_skipped` is false (the scale went down in `GradScaler.update()`), so its
 * scheduler counts the optimizer steps actually taken.
 * @module
 */

/** GradScaler's settings. */
export interface ScalerOptions {
  /** Default 2^16, GradScaler's init_scale. */
  initScale?: number;
  /** Default 2. */
  growthFactor?: number;
  /** Default 0.5. */
  backoffFactor?: number;
  /** Clean steps before the scale grows; default 2000. */
  growthInterval?: number;
}

/** What a resumed run needs: the scale, clean steps since it last changed, and steps skipped in all. */
export interface ScalerState {
  scale: number;
  growthTracker: number;
  skipped: number;
}

/** The defaults of {@link ScalerOptions} (GradScaler's). */
export const SCALER_DEFAULTS: Required<ScalerOptions> = {
  initScale: 2 ** 16,
  growthFactor: 2,
  backoffFactor: 0.5,
  growthInterval: 2000,
};

/** The loss scale and its update rule. */
export class LossScaler {
  readonly options: Required<ScalerOptions>;
  #state: ScalerState;

  constructor(options: ScalerOptions = {}) {
    const o = { ...SCALER_DEFAULTS, ...options };
    const check = (name: keyof ScalerOptions, ok: boolean, what: string) => {
      if (!ok) throw new RangeError(`loss scaler: ${name} must be ${what}, got ${o[name]}`);
    };
    check("initScale", o.initScale > 0 && Number.isFinite(o.initScale), "a positive finite number");
    check("growthFactor", o.growthFactor > 1, "> 1");
    check("backoffFactor", o.backoffFactor > 0 && o.backoffFactor < 1, "in (0, 1)");
    check(
      "growthInterval",
      Number.isInteger(o.growthInterval) && o.growthInterval >= 1,
      "a positive integer",
    );
    this.options = o;
    this.#state = { scale: o.initScale, growthTracker: 0, skipped: 0 };
  }

  /** The scale the next step multiplies the loss gradient by. */
  get scale(): number {
    return this.#state.scale;
  }

  /** Steps skipped so far for inf/NaN gradients. */
  get skipped(): number {
    return this.#state.skipped;
  }

  /** Record a step's outcome: `finite` false backs off (the caller skipped the step), true counts to growth. */
  update(finite: boolean): void {
    const s = this.#state;
    if (!finite) {
      s.scale *= this.options.backoffFactor;
      s.growthTracker = 0;
      s.skipped++;
      return;
    }
    s.growthTracker++;
    if (s.growthTracker === this.options.growthInterval) {
      s.scale *= this.options.growthFactor;
      s.growthTracker = 0;
    }
  }

  /** A copy of the state, for the training state. */
  getState(): ScalerState {
    return { ...this.#state };
  }

  /** Restore a state from {@link getState}; throws naming the field that is not valid. */
  setState(state: ScalerState): void {
    const { scale, growthTracker, skipped } = state;
    if (!(scale > 0 && Number.isFinite(scale))) {
      throw new RangeError(`loss scaler state: scale must be a positive finite number, got ${scale}`);
    }
    for (const [name, v] of [["growthTracker", growthTracker], ["skipped", skipped]] as const) {
      if (!(Number.isInteger(v) && v >= 0)) {
        throw new RangeError(`loss scaler state: ${name} must be a non-negative integer, got ${v}`);
      }
    }
    this.#state = { scale, growthTracker, skipped };
  }
}
