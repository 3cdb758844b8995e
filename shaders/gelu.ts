/**
 * GELU, GPT-2's tanh form: gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 * Forward and backward side by side; both elementwise over `n` values.
 * @module
 */
import { checkLengths, computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";
import { HALF_BITS, halfWords } from "./f16.ts";

const WG = 256;
/** `n` counts elements of the kernel's type (f32 or vec4f). */
const PARAMS = uniformLayout({ n: "u32" });

/**
 * The shared header for element type `t` (f32, or vec4f when n is a multiple of 4: one 16-byte load or
 * store per buffer per thread; the arithmetic per component is the same, so results do not depend on it).
 */
function common(t: string): string {
  return PARAMS.wgsl + /* wgsl */ `
const S: f32 = 0.7978845608028654; // sqrt(2/pi)
const K: f32 = 0.044715;
// 0.5 (1 + tanh(u)) = sigmoid(2u): no cancellation of 1 + tanh near -1, and no tanh (imprecise on some drivers).
fn sig2(u: ${t}) -> ${t} {
  return 1.0 / (1.0 + exp(-2.0 * clamp(u, ${t}(-40.0), ${t}(40.0))));
}
`;
}

/** out[i] = gelu(inp[i]). Bindings: params, out, inp; `p.n` counts elements of type `t`. */
function forwardSource(t: string): string {
  return common(t) + /* wgsl */ `
${storage({ out: `read_write array<${t}>`, inp: `read array<${t}>` })}
${computeMain(WG)}  let i = globalIndex;
  if (i >= p.n) { return; }
  let x = inp[i];
  out[i] = x * sig2(S * (x + K * x * x * x));
}
`;
}

/** dinp[i] = gelu'(inp[i]) * dout[i] (overwrites). Bindings: params, dinp, inp, dout. */
function backwardSource(t: string): string {
  return common(t) + /* wgsl */ `
${storage({ dinp: `read_write array<${t}>`, inp: `read array<${t}>`, dout: `read array<${t}>` })}
${computeMain(WG)}  let i = globalIndex;
  if (i >= p.n) { return; }
  let x = inp[i];
  let s = sig2(S * (x + K * x * x * x));
  // d/dx [x s(2u)] = s + x * 2 s (1 - s) * du/dx, since 1 - tanh^2 = 4 s (1 - s).
  let d = s + 2.0 * x * s * (1.0 - s) * S * (1.0 + 3.0 * K * x * x);
  dinp[i] = d * dout[i];
}
`;
}

/** out[i] = gelu(inp[i]), one f32 per thread. */
export const GELU_FORWARD = forwardSource("f32");
/** dinp[i] = gelu'(inp[i]) * dout[i], one f32 per thread. */
export const GELU_BACKWARD = backwardSource("f32");
const GELU_FORWARD4 = forwardSource("vec4f");
const GELU_BACKWARD4 = backwardSource("vec4f");

/**
 * out = gelu(inp) as f16 (shaders/f16.ts; the value of the f32 kernel, rounded to nearest), 4 values per
 * thread. Bindings: params, out, inp; `p.n` counts vectors.
 */
const GELU_FORWARD_HALF = common("vec4f") + HALF_BITS +
  storage({ out: "read_write array<vec2u>", inp: "read array<vec4f>" }) + computeMain(WG) + /* wgsl */ `
  let i = globalIndex;
  if (i >= p.n) { return; }
  let x = inp[i];
  let y = x * sig2(S * (x + K * x * x * x));
  out[i] = vec2u(halfBits(y[0]) | (halfBits(y[1]) << 16u), halfBits(y[2]) | (halfBits(y[3]) << 16u));
}
`;

/**
 * Record out = gelu(inp) over the first `n` elements (default: all of inp). `half`: out is an f16 tensor
 * (mixed precision: GELU's output is only ever a matmul operand), n a multiple of 4.
 */
export function geluForward(
  plan: Plan,
  { out, inp, n = inp.length, half = false }: {
    out: TensorView;
    inp: TensorView;
    n?: number;
    half?: boolean;
  },
): void {
  if (half) {
    if (n % 4 !== 0) throw new RangeError(`geluForward: an f16 output needs n a multiple of 4, got ${n}`);
    checkLengths("geluForward", halfWords(n), { out });
    const u = plan.params(PARAMS, { n: n / 4 }, "gelu.params");
    plan.add(GELU_FORWARD_HALF, [u, out, inp], Math.ceil(n / 4 / WG), "gelu_forward_f16");
    return;
  }
  const w = n % 4 === 0 ? 4 : 1;
  const u = plan.params(PARAMS, { n: n / w }, "gelu.params");
  plan.add(w === 4 ? GELU_FORWARD4 : GELU_FORWARD, [u, out, inp], Math.ceil(n / w / WG), "gelu_forward");
}

/** Record dinp = gelu'(inp) * dout over the first `n` elements (dinp is overwritten). */
export function geluBackward(
  plan: Plan,
  { dinp, inp, dout, n = inp.length }: { dinp: TensorView; inp: TensorView; dout: TensorView; n?: number },
): void {
  const w = n % 4 === 0 ? 4 : 1;
  const u = plan.params(PARAMS, { n: n / w }, "gelu.params");
  const code = w === 4 ? GELU_BACKWARD4 : GELU_BACKWARD;
  plan.add(code, [u, dinp, inp, dout], Math.ceil(n / w / WG), "gelu_backward");
}
