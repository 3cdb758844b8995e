/**
 * The residual connection: out = a + b (elementwise over n values). Its backward needs no kernel (the
 * gradient passes unchanged to both inputs); {@link addInPlace} accumulates one buffer into another.
 * @module
 */
import { checkLengths, computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";

const WG = 256;
/** `n` counts elements of the kernel's type (f32 or vec4f). */
const PARAMS = uniformLayout({ n: "u32" });

/**
 * out[i] = a[i] + b[i]. Bindings: params, out, a, b. `t` is f32, or vec4f when n is a multiple of 4
 * (p.n then counts vectors).
 */
const residualSource = (t: string) =>
  PARAMS.wgsl + storage({ out: `read_write array<${t}>`, a: `read array<${t}>`, b: `read array<${t}>` }) +
  computeMain(WG) + /* wgsl */ `  let i = globalIndex;
  if (i >= p.n) { return; }
  out[i] = a[i] + b[i];
}
`;

/** One f32 per thread. */
export const RESIDUAL_FORWARD = residualSource("f32");
const RESIDUAL_FORWARD4 = residualSource("vec4f");

/** dst[i] += src[i]. Bindings: params, dst, src; `t` as for the residual. */
const addSource = (t: string) =>
  PARAMS.wgsl + storage({ dst: `read_write array<${t}>`, src: `read array<${t}>` }) + computeMain(WG) +
  /* wgsl */ `  let i = globalIndex;
  if (i >= p.n) { return; }
  dst[i] += src[i];
}
`;

/** One f32 per thread. */
export const ADD_IN_PLACE = addSource("f32");
const ADD_IN_PLACE4 = addSource("vec4f");

/** Record out = a + b over the first `n` elements (default: all of out). `out` must be a different buffer from `a` and `b`. */
export function residualForward(
  plan: Plan,
  { out, a, b, n = out.length }: { out: TensorView; a: TensorView; b: TensorView; n?: number },
): void {
  checkLengths("residualForward", n, { out, a, b });
  const w = n % 4 === 0 ? 4 : 1;
  const u = plan.params(PARAMS, { n: n / w }, "residual.params");
  const code = w === 4 ? RESIDUAL_FORWARD4 : RESIDUAL_FORWARD;
  plan.add(code, [u, out, a, b], Math.ceil(n / w / WG), "residual_forward");
}

/** Record dst += src over the first `n` elements (default: all of dst; distinct buffers). */
export function addInPlace(
  plan: Plan,
  { dst, src, n = dst.length }: { dst: TensorView; src: TensorView; n?: number },
): void {
  checkLengths("addInPlace", n, { dst, src });
  const w = n % 4 === 0 ? 4 : 1;
  const u = plan.params(PARAMS, { n: n / w }, "residual.params");
  plan.add(w === 4 ? ADD_IN_PLACE4 : ADD_IN_PLACE, [u, dst, src], Math.ceil(n / w / WG), "add_in_place");
}
