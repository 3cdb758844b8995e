/**
 * Float64 re-implementation of PyTorch's torch.optim.AdamW step (with clip_grad_norm_ applied to the
 * gradients first), written from its documented algorithm. @module
 */

/** One parameter tensor's optimizer state, updated in place. */
export interface AdamWStateRef {
  param: Float64Array;
  m: Float64Array;
  v: Float64Array;
  decay: boolean;
}

/** Hyperparameters of one step; `step` is t, from 1. */
export interface AdamWSettingsRef {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

/** Apply one AdamW step to `state` with gradient `grad` scaled by `clipCoef`. */
export function adamwStepRef(
  state: AdamWStateRef,
  grad: ArrayLike<number>,
  clipCoef: number,
  s: AdamWSettingsRef,
): void {
  const { param, m, v } = state;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i] * clipCoef;
    if (state.decay) param[i] -= s.lr * s.weightDecay * param[i];
    m[i] = s.beta1 * m[i] + (1 - s.beta1) * g;
    v[i] = s.beta2 * v[i] + (1 - s.beta2) * g * g;
    const mHat = m[i] / (1 - s.beta1 ** s.step);
    const vHatSqrt = Math.sqrt(v[i]) / Math.sqrt(1 - s.beta2 ** s.step);
    param[i] -= s.lr * mHat / (vHatSqrt + s.eps);
  }
}
