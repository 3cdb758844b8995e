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
 *
 * When norm[2] (GradNorm's skip) is set, an overflowed loss-scaled step, every thread returns before
 * touching anything: weights, moments and f16 copies stay as they were, as GradScaler skips
 * `optimizer.step()`. Under precision f16 the kernel also writes the updated weight's f16 copy (the
 * matmul operand) from the value it stores, so no separate cast pass reads the weights again.
 * @module
 */
import { checkLengths, computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";
import { NORM_LENGTH } from "./reduce.ts";
import { HALF_BITS, halfWords } from "./f16.ts";

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
 * `half` (w = 4): thread i also writes the four updated weights' f16 bits into half[i] (two words, low
 * half first, the layout of f16.ts), so each thread owns whole words. Bindings: params, param, m, v,
 * grad, step, norm[, half]; `p.n` counts w-wide elements.
 */
export function adamwSource(w: 1 | 4, half = false): string {
  if (half && w !== 4) throw new Error("adamwSource: the f16 copy is written 4 elements per thread");
  const t = w === 4 ? "vec4f" : "f32";
  const halfWrite = half
    ? "\n  half[i] = vec2u(halfBits(y.x) | (halfBits(y.y) << 16u), halfBits(y.z) | (halfBits(y.w) << 16u));"
    : "";
  return PARAMS.wgsl + (half ? HALF_BITS : "") + /* wgsl */ `
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
      ...(half ? { half: "read_write array<vec2u>" } as const : {}),
    })
  }${computeMain(WG)}  let i = globalIndex;
  if (i >= p.n || norm[2] != 0.0) { return; }
  let g = grad[i] * norm[1];
  var x = param[i];
  if (p.decay != 0u) { x = x * s.decayFactor; }
  let mi = s.beta1 * m[i] + s.oneMinusBeta1 * g;
  let vi = s.beta2 * v[i] + s.oneMinusBeta2 * g * g;
  let denom = sqrt(vi) / s.bc2Sqrt + s.eps;
  let y = x - s.stepSize * (mi / denom);
  param[i] = y;
  m[i] = mi;
  v[i] = vi;${halfWrite}
}
`;
}

/** The scalar kernel (one element per thread). */
export const ADAMW_STEP = adamwSource(1);
const ADAMW_STEP4 = adamwSource(4);
const ADAMW_STEP4_HALF = adamwSource(4, true);

/** The tensors of one {@link adamwStep}. */
export interface AdamWArgs {
  param: TensorView;
  grad: TensorView;
  /** First and second moments. */
  m: TensorView;
  v: TensorView;
  /** {@link packStepParams} output, rewritten by the caller every step. */
  stepParams: TensorView;
  /** A {@link GradNorm} output: element 1 multiplies the gradient, element 2 skips the update. */
  norm: TensorView;
  /** Apply weight decay. */
  decay: boolean;
  /** Elements updated (default: all of param). */
  n?: number;
  /**
   * Precision f16: param's f16 copy ({@link halfWords}(n) words), rewritten from the updated weights. n
   * must be a multiple of 4 (every matmul weight's length is: C is, for attention's head sizes).
   */
  half?: TensorView;
}

/**
 * Record one AdamW update of the first `n` elements of `param` from `grad` (and of its f16 copy when
 * `half` is given).
 */
export function adamwStep(plan: Plan, args: AdamWArgs): void {
  const { param, grad, m, v, stepParams, norm, decay, n = param.length, half } = args;
  checkLengths("adamwStep", n, { param, grad, m, v });
  checkLengths("adamwStep", STEP_PARAMS_LENGTH, { stepParams });
  checkLengths("adamwStep", NORM_LENGTH, { norm });
  if (half) {
    if (n % 4 !== 0) {
      throw new RangeError(
        `adamwStep: an f16 copy is written 4 elements per thread, so n must be a multiple of 4, got ${n} ` +
          `(${param.label ?? "param"})`,
      );
    }
    checkLengths("adamwStep", halfWords(n), { half });
  }
  // Vectors when every view starts 16-byte aligned (views are) and n is a multiple of 4.
  const w = n % 4 === 0 ? 4 : 1;
  const u = plan.params(PARAMS, { n: n / w, decay: decay ? 1 : 0 }, "adamw.params");
  const views = [u, param, m, v, grad, stepParams, norm];
  const code = half ? ADAMW_STEP4_HALF : w === 4 ? ADAMW_STEP4 : ADAMW_STEP;
  plan.add(code, half ? [...views, half] : views, Math.ceil(n / w / WG), "adamw_step");
}
