/**
 * The residual connection: out = a + b (elementwise over n values). Its backward needs no kernel (the
 * gradient passes unchanged to both inputs); {@link addInPlace} accumulates one buffer into another.
 * @module
 */
import { packUniform, type Plan, type TensorView } from "./gpu.ts";

const WG = 256;

/**
 * out[i] = a[i] + b[i]. Bindings: params, out, a, b. `t` is f32, or vec4f when n is a multiple of 4
 * (p.n then counts vectors).
 */
const residualSource = (t: string) => /* wgsl */ `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<${t}>;
@group(0) @binding(2) var<storage, read> a: array<${t}>;
@group(0) @binding(3) var<storage, read> b: array<${t}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + li;
  if (i >= p.n) { return; }
  out[i] = a[i] + b[i];
}
`;

/** One f32 per thread. */
export const RESIDUAL_FORWARD = residualSource("f32");
const RESIDUAL_FORWARD4 = residualSource("vec4f");

/** dst[i] += src[i]. Bindings: params, dst, src; `t` as for the residual. */
const addSource = (t: string) => /* wgsl */ `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<${t}>;
@group(0) @binding(2) var<storage, read> src: array<${t}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + li;
  if (i >= p.n) { return; }
  dst[i] += src[i];
}
`;

/** One f32 per thread. */
export const ADD_IN_PLACE = addSource("f32");
const ADD_IN_PLACE4 = addSource("vec4f");

function checkLength(fn: string, n: number, views: TensorView[]): void {
  for (const v of views) {
    if (v.length < n) throw new RangeError(`${fn}: n=${n} exceeds ${v.label ?? "a view"} of ${v.length}`);
  }
}

/** Record out = a + b over the first `n` elements. `out` must be a different buffer from `a` and `b`. */
export function residualForward(
  plan: Plan,
  out: TensorView,
  a: TensorView,
  b: TensorView,
  n = out.length,
): void {
  checkLength("residualForward", n, [out, a, b]);
  const w = n % 4 === 0 ? 4 : 1;
  const u = plan.gpu.uniform(packUniform([["u", n / w]]), "residual.params");
  const code = w === 4 ? RESIDUAL_FORWARD4 : RESIDUAL_FORWARD;
  plan.add(code, [u, out, a, b], Math.ceil(n / w / WG), "residual_forward");
}

/** Record dst += src over the first `n` elements (distinct buffers). */
export function addInPlace(plan: Plan, dst: TensorView, src: TensorView, n = dst.length): void {
  checkLength("addInPlace", n, [dst, src]);
  const w = n % 4 === 0 ? 4 : 1;
  const u = plan.gpu.uniform(packUniform([["u", n / w]]), "residual.params");
  plan.add(w === 4 ? ADD_IN_PLACE4 : ADD_IN_PLACE, [u, dst, src], Math.ceil(n / w / WG), "add_in_place");
}
