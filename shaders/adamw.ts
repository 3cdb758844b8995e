/**
 * AdamW with the semantics of PyTorch's `torch.optim.AdamW` (single-tensor path), fused with gradient
 * clipping. Per element, with coef = norm[1] from {@link GradNorm} (read on the GPU, no readback):
 *   g = grad * coef
 *   p = p * (1 - lr * wd)                       (only for tensors with weight decay)
 *   m = b1 * m + (1 - b1) * g
 *   v = b2 * v + (1 - b2) * g^2
 *   p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *
 * The per-step scalars live in a small storage buffer the caller rewrites each step with
 * {@link packStepParams}, so a plan recorded once serves every step. As in PyTorch, where they are Python
 * floats, the step size, bias corrections and decay factor are computed in float64 on the CPU and rounded
 * to f32 once. The gradient buffer itself is left unscaled.
 * @module
 */
import { checkLengths, computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";
import { NORM_LENGTH } from "./reduce.ts";

const WG = 256;

/** `n` counts w-wide elements; `decay` is 1 where weight decay applies. */
const PARAMS = uniformLayout({ n: "u32", decay: "u32" });

/** Elements {@link packStepParams} writes (the step-params buffer needs at least this many). */
export const STEP_PARAMS_LENGTH = 8;

/** The hyperparameters of one AdamW step. */
export interface StepSettings {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** The step number t, counting from 1. */
  step: number;
}

/** Pack one step's scalars (in the order of the WGSL `Step` struct) for `queue.writeBuffer`. */
export function packStepParams(s: StepSettings): Float32Array {
  if (!(Number.isInteger(s.step) && s.step >= 1)) {
    throw new RangeError(`packStepParams: step must be an integer >= 1 (AdamW's t), got ${s.step}`);
  }
  const bc1 = 1 - s.beta1 ** s.step;
  const bc2 = 1 - s.beta2 ** s.step;
  return Float32Array.of(
    s.beta1,
    s.beta2,
    1 - s.beta1,
    1 - s.beta2,
    s.eps,
    s.lr / bc1,
    Math.sqrt(bc2),
    1 - s.lr * s.weightDecay,
  );
}

/**
 * One AdamW update per element, `w` elements per thread (4 when the tensor's length is a multiple of 4:
 * one 16-byte load per buffer; the arithmetic per component is the same, so results do not depend on w).
 * Bindings: params, param, m, v, grad, step, norm; `p.n` counts w-wide elements.
 */
export function adamwSource(w: 1 | 4): string {
  const t = w === 4 ? "vec4f" : "f32";
  return PARAMS.wgsl + /* wgsl */ `
struct Step {
  beta1: f32, beta2: f32, oneMinusBeta1: f32, oneMinusBeta2: f32, eps: f32,
  stepSize: f32,     // lr / (1 - beta1^t)
  bc2Sqrt: f32,      // sqrt(1 - beta2^t)
  decayFactor: f32,  // 1 - lr * weight_decay
}
${
    storage({
      param: `read_write array<${t}>`,
      m: `read_write array<${t}>`,
      v: `read_write array<${t}>`,
      grad: `read array<${t}>`,
      s: "read Step",
      norm: "read array<f32>",
    })
  }${computeMain(WG)}  let i = globalIndex;
  if (i >= p.n) { return; }
  let g = grad[i] * norm[1];
  var x = param[i];
  if (p.decay != 0u) { x = x * s.decayFactor; }
  let mi = s.beta1 * m[i] + s.oneMinusBeta1 * g;
  let vi = s.beta2 * v[i] + s.oneMinusBeta2 * g * g;
  let denom = sqrt(vi) / s.bc2Sqrt + s.eps;
  param[i] = x - s.stepSize * (mi / denom);
  m[i] = mi;
  v[i] = vi;
}
`;
}

/** The scalar kernel (one element per thread). */
export const ADAMW_STEP = adamwSource(1);
const ADAMW_STEP4 = adamwSource(4);

/** The tensors of one {@link adamwStep}. */
export interface AdamWArgs {
  param: TensorView;
  grad: TensorView;
  /** First and second moments. */
  m: TensorView;
  v: TensorView;
  /** {@link packStepParams} output, rewritten by the caller every step. */
  stepParams: TensorView;
  /** A {@link GradNorm} output; element 1 is the clip coefficient. */
  norm: TensorView;
  /** Apply weight decay. */
  decay: boolean;
  /** Elements updated (default: all of param). */
  n?: number;
}

/** Record one AdamW update of the first `n` elements of `param` from `grad`. */
export function adamwStep(plan: Plan, args: AdamWArgs): void {
  const { param, grad, m, v, stepParams, norm, decay, n = param.length } = args;
  checkLengths("adamwStep", n, { param, grad, m, v });
  checkLengths("adamwStep", STEP_PARAMS_LENGTH, { stepParams });
  checkLengths("adamwStep", NORM_LENGTH, { norm });
  // Vectors when every view starts 16-byte aligned (views are) and n is a multiple of 4.
  const w = n % 4 === 0 ? 4 : 1;
  const u = plan.params(PARAMS, { n: n / w, decay: decay ? 1 : 0 }, "adamw.params");
  const code = w === 4 ? ADAMW_STEP4 : ADAMW_STEP;
  plan.add(code, [u, param, m, v, grad, stepParams, norm], Math.ceil(n / w / WG), "adamw_step");
}
