/**
 * LayerNorm over the last dimension of [N, C] (PyTorch semantics: biased variance,
 * rstd = 1 / sqrt(var + eps)). Forward and backward side by side.
 *
 * Backward, with n = (x - mean) * rstd and dn = dout * weight per row:
 *   dinp    += rstd * (dn - mean_c(dn) - n * mean_c(dn * n))
 *   dweight += sum over rows of dout * n
 *   dbias   += sum over rows of dout
 * The column sums run in two fixed-order stages (blocks of rows, then blocks), so they are deterministic.
 * @module
 */
import {
  checkLengths,
  computeMain,
  type Gpu,
  type Plan,
  storage,
  type TensorView,
  uniformLayout,
} from "./gpu.ts";
import { wgslTreeSum } from "./reduce.ts";
import { HALF_BITS, halfWords } from "./f16.ts";

const WG = 256;
/** Rows a stage-1 workgroup of the weight/bias gradient sums. */
const ROWS_PER_BLOCK = 64;

const FORWARD_PARAMS = uniformLayout({ N: "u32", C: "u32", eps: "f32" });
const BACKWARD_PARAMS = uniformLayout({ N: "u32", C: "u32" });
/** Stage 1 of the weight/bias gradients: `nBlocks` blocks of ROWS_PER_BLOCK rows. */
const PARTIAL_PARAMS = uniformLayout({ N: "u32", C: "u32", nBlocks: "u32" });
const FINAL_PARAMS = uniformLayout({ C: "u32", nBlocks: "u32" });

/**
 * Bindings of the forward kernels; `t` is the element type of the rows, `half`: out is an f16 tensor
 * (shaders/f16.ts) written 4 halves at a time.
 */
const forwardBindings = (t: string, half = false) =>
  (half ? HALF_BITS : "") + storage({
    out: `read_write array<${half ? "vec2u" : t}>`,
    mean: "read_write array<f32>",
    rstd: "read_write array<f32>",
    inp: `read array<${t}>`,
    weight: `read array<${t}>`,
    bias: `read array<${t}>`,
  });

/** Bindings of the input-gradient kernels. */
const backwardBindings = (t: string) =>
  storage({
    dinp: `read_write array<${t}>`,
    dout: `read array<${t}>`,
    inp: `read array<${t}>`,
    weight: `read array<${t}>`,
    mean: "read array<f32>",
    rstd: "read array<f32>",
  });

/** WGSL: out[i] = the 4 f32 values `y` as f16 (low half first), for the f16 outputs. */
const storeHalves = (i: string, y: string) =>
  `out[${i}] = vec2u(halfBits(${y}[0]) | (halfBits(${y}[1]) << 16u), halfBits(${y}[2]) | (halfBits(${y}[3]) << 16u));`;

/**
 * One workgroup per row: out = (x - mean) * rstd * weight + bias; saves mean and rstd. `half`: out in
 * f16 (C a multiple of 4; each thread normalises 4 consecutive columns, the same values as the f32
 * kernel, rounded to nearest).
 */
function workgroupForwardSource(half: boolean): string {
  const write = half
    ? `for (var c4 = li; c4 < p.C / 4u; c4 += ${WG}u) {
    let c = 4u * c4;
    let y = (vec4f(inp[base + c], inp[base + c + 1u], inp[base + c + 2u], inp[base + c + 3u]) - m) * r *
      vec4f(weight[c], weight[c + 1u], weight[c + 2u], weight[c + 3u]) +
      vec4f(bias[c], bias[c + 1u], bias[c + 2u], bias[c + 3u]);
    ${storeHalves("row * (p.C / 4u) + c4", "y")}
  }`
    : `for (var c = li; c < p.C; c += ${WG}u) {
    out[base + c] = (inp[base + c] - m) * r * weight[c] + bias[c];
  }`;
  return wgslTreeSum("treeSum", "f32", WG) + FORWARD_PARAMS.wgsl + forwardBindings("f32", half) +
    computeMain(WG) + /* wgsl */ `  let row = wgIndex;
  if (row >= p.N) { return; }
  let base = row * p.C;
  var s = 0.0;
  for (var c = li; c < p.C; c += ${WG}u) { s += inp[base + c]; }
  let m = treeSum(li, s) / f32(p.C);
  // Two passes (sum of squared deviations) rather than E[x^2] - m^2, which cancels badly.
  var q = 0.0;
  for (var c = li; c < p.C; c += ${WG}u) {
    let d = inp[base + c] - m;
    q += d * d;
  }
  let r = 1.0 / sqrt(treeSum(li, q) / f32(p.C) + p.eps);
  ${write}
  if (li == 0u) {
    mean[row] = m;
    rstd[row] = r;
  }
}
`;
}

/** One workgroup per row: out = (x - mean) * rstd * weight + bias; saves mean and rstd. */
export const LAYERNORM_FORWARD = workgroupForwardSource(false);
const LAYERNORM_FORWARD_HALF = workgroupForwardSource(true);

/** One workgroup per row: dinp += rstd * (dn - mean(dn) - n * mean(dn * n)). */
export const LAYERNORM_BACKWARD_INPUT = wgslTreeSum("treeSum2", "vec2f", WG) + BACKWARD_PARAMS.wgsl +
  backwardBindings("f32") + computeMain(WG) + /* wgsl */ `  let row = wgIndex;
  if (row >= p.N) { return; }
  let base = row * p.C;
  let m = mean[row];
  let r = rstd[row];
  var a = vec2f(0.0);
  for (var c = li; c < p.C; c += ${WG}u) {
    let n = (inp[base + c] - m) * r;
    let dn = dout[base + c] * weight[c];
    a += vec2f(dn, dn * n);
  }
  let avg = treeSum2(li, a) / f32(p.C);
  for (var c = li; c < p.C; c += ${WG}u) {
    let n = (inp[base + c] - m) * r;
    let dn = dout[base + c] * weight[c];
    dinp[base + c] += r * (dn - avg.x - n * avg.y);
  }
}
`;

/** Rows per workgroup of the one-row-per-thread kernels. */
const ROW_WG = 64;

/**
 * Element access for the one-row-per-thread kernels: rows as runs of `w`-wide vectors (w = 4 when C is
 * a multiple of 4, else 1), so each load moves 16 bytes where it can.
 */
function rowTypes(w: 1 | 4): { t: string; sum: (e: string) => string; zero: string } {
  return w === 4
    ? { t: "vec4f", sum: (e) => `dot(${e}, vec4f(1.0))`, zero: "vec4f(0.0)" }
    : { t: "f32", sum: (e) => e, zero: "0.0" };
}

/** Entry point of the row kernels: this thread's `row`, its `n` vectors, and their first index `base`. */
function rowPrologue(w: 1 | 4): string {
  return computeMain(ROW_WG) + /* wgsl */ `  let row = globalIndex;
  if (row >= p.N) { return; }
  let n = p.C / ${w}u;
  let base = row * n;
`;
}

/**
 * LayerNorm forward with one row per thread (for CPU adapters; see {@link Gpu.cpuLike}): the row is
 * read three times (sum, sum of squared deviations, normalise), with no barrier. Same bindings as
 * {@link LAYERNORM_FORWARD}; C counts elements, `p.C / w` vectors per row. `half` (w = 4): out in f16,
 * the f32 kernel's values rounded to nearest.
 */
export function layernormForwardRowsSource(w: 1 | 4, half = false): string {
  const { t, sum, zero } = rowTypes(w);
  const y = "(inp[base + c] - m) * r * weight[c] + bias[c]";
  const store = half ? `let y = ${y};\n    ${storeHalves("base + c", "y")}` : `out[base + c] = ${y};`;
  return FORWARD_PARAMS.wgsl + forwardBindings(t, half) + /* wgsl */ `${rowPrologue(w)}  var s = ${zero};
  for (var c = 0u; c < n; c++) { s += inp[base + c]; }
  let m = ${sum("s")} / f32(p.C);
  // Two passes (sum of squared deviations) rather than E[x^2] - m^2, which cancels badly.
  var q = ${zero};
  for (var c = 0u; c < n; c++) {
    let d = inp[base + c] - m;
    q += d * d;
  }
  let r = 1.0 / sqrt(${sum("q")} / f32(p.C) + p.eps);
  for (var c = 0u; c < n; c++) {
    ${store}
  }
  mean[row] = m;
  rstd[row] = r;
}
`;
}

/**
 * LayerNorm input gradient with one row per thread (CPU adapters): dinp += rstd * (dn - mean(dn) -
 * n * mean(dn * n)). Same bindings as {@link LAYERNORM_BACKWARD_INPUT}.
 */
export function layernormBackwardInputRowsSource(w: 1 | 4): string {
  const { t, sum, zero } = rowTypes(w);
  return BACKWARD_PARAMS.wgsl + backwardBindings(t) + /* wgsl */ `${rowPrologue(w)}  let m = mean[row];
  let r = rstd[row];
  var a = ${zero};
  var b = ${zero};
  for (var c = 0u; c < n; c++) {
    let dn = dout[base + c] * weight[c];
    a += dn;
    b += dn * (inp[base + c] - m) * r;
  }
  let ax = ${sum("a")} / f32(p.C);
  let ay = ${sum("b")} / f32(p.C);
  for (var c = 0u; c < n; c++) {
    let dn = dout[base + c] * weight[c];
    dinp[base + c] += r * (dn - ax - (inp[base + c] - m) * r * ay);
  }
}
`;
}

/** Which row kernels to record: one row per workgroup (GPUs) or one row per thread (CPU adapters). */
export type RowKernels = "workgroup" | "thread";

/**
 * Stage 1 of the weight/bias gradients: workgroup (x = column tile, y = row block) writes, per column c,
 * partial[blk*C + c] = sum of dout*n and partial[(nBlocks + blk)*C + c] = sum of dout over the block's
 * rows, in row order.
 */
export const LAYERNORM_BACKWARD_PARAMS_PARTIAL = PARTIAL_PARAMS.wgsl + storage({
  partial: "read_write array<f32>",
  dout: "read array<f32>",
  inp: "read array<f32>",
  mean: "read array<f32>",
  rstd: "read array<f32>",
}) + computeMain(WG) + /* wgsl */ `  let c = wid.x * ${WG}u + li;
  let blk = wid.y;
  if (c >= p.C) { return; }
  let r1 = min((blk + 1u) * ${ROWS_PER_BLOCK}u, p.N);
  var sw = 0.0;
  var sb = 0.0;
  for (var row = blk * ${ROWS_PER_BLOCK}u; row < r1; row++) {
    let d = dout[row * p.C + c];
    sw += d * (inp[row * p.C + c] - mean[row]) * rstd[row];
    sb += d;
  }
  partial[blk * p.C + c] = sw;
  partial[(p.nBlocks + blk) * p.C + c] = sb;
}
`;

/** Stage 2: one thread per column adds the block partials, in block order, into dweight and dbias. */
export const LAYERNORM_BACKWARD_PARAMS_FINAL = FINAL_PARAMS.wgsl + storage({
  dweight: "read_write array<f32>",
  dbias: "read_write array<f32>",
  partial: "read array<f32>",
}) + computeMain(WG) + /* wgsl */ `  let c = wid.x * ${WG}u + li;
  if (c >= p.C) { return; }
  var sw = 0.0;
  var sb = 0.0;
  for (var b = 0u; b < p.nBlocks; b++) {
    sw += partial[b * p.C + c];
    sb += partial[(p.nBlocks + b) * p.C + c];
  }
  dweight[c] += sw;
  dbias[c] += sb;
}
`;

const rowSources = new Map<string, string>();
/** The cached source of a one-row-per-thread kernel (one string object per variant). */
function rowSource(kind: "forward" | "backward", w: 1 | 4, half = false): string {
  const key = `${kind}${w}${half ? "h" : ""}`;
  let src = rowSources.get(key);
  if (!src) {
    src = kind === "forward" ? layernormForwardRowsSource(w, half) : layernormBackwardInputRowsSource(w);
    rowSources.set(key, src);
  }
  return src;
}

/**
 * Scratch for the stage-1 partial sums, shared by every LayerNorm backward of the same size on a device.
 * Sharing is safe: dispatches run in submission order, and each stage-2 read follows its own stage 1.
 */
const scratch = new WeakMap<Gpu, Map<number, TensorView>>();
function partialScratch(gpu: Gpu, elements: number): TensorView {
  let bySize = scratch.get(gpu);
  if (!bySize) scratch.set(gpu, bySize = new Map());
  let view = bySize.get(elements);
  if (!view) bySize.set(elements, view = gpu.tensor(elements, "layernorm.partial"));
  return view;
}

/** The tensors of {@link layernormForward}: rows of inp [N, C] in, out [N, C] and mean, rstd [N] out. */
export interface LayernormForwardArgs {
  out: TensorView;
  mean: TensorView;
  rstd: TensorView;
  inp: TensorView;
  weight: TensorView;
  bias: TensorView;
  N: number;
  C: number;
  eps: number;
  /** Default: one row per thread on CPU adapters, one per workgroup on GPUs. */
  rows?: RowKernels;
  /** `out` is an f16 tensor (shaders/f16.ts; mixed precision: the output only feeds matmuls); C % 4 = 0. */
  half?: boolean;
}

/**
 * Record out = LayerNorm(inp) * weight + bias per row of inp [N, C]; mean and rstd [N] are saved for
 * backward. `out` must not alias `inp`.
 */
export function layernormForward(plan: Plan, args: LayernormForwardArgs): void {
  const { out, mean, rstd, inp, weight, bias, N, C, eps, half = false } = args;
  const rows = args.rows ?? (plan.gpu.cpuLike ? "thread" : "workgroup");
  const fn = "layernormForward";
  if (half && C % 4 !== 0) throw new RangeError(`${fn}: an f16 output needs C a multiple of 4, got ${C}`);
  checkLengths(fn, half ? halfWords(N * C) : N * C, { out });
  checkLengths(fn, N * C, { inp });
  checkLengths(fn, N, { mean, rstd });
  checkLengths(fn, C, { weight, bias });
  const u = plan.params(FORWARD_PARAMS, { N, C, eps }, "layernorm.params");
  const views = [u, out, mean, rstd, inp, weight, bias];
  const tag = half ? "_f16" : "";
  if (rows === "thread") {
    const code = rowSource("forward", C % 4 === 0 ? 4 : 1, half);
    plan.add(code, views, Math.ceil(N / ROW_WG), `layernorm_forward_rows${tag}`);
  } else plan.add(half ? LAYERNORM_FORWARD_HALF : LAYERNORM_FORWARD, views, N, `layernorm_forward${tag}`);
}

/** The tensors of {@link layernormBackward}: the forward's inp, weight, mean and rstd, and dout [N, C]. */
export interface LayernormBackwardArgs {
  dinp: TensorView;
  dweight: TensorView;
  dbias: TensorView;
  dout: TensorView;
  inp: TensorView;
  weight: TensorView;
  mean: TensorView;
  rstd: TensorView;
  N: number;
  C: number;
  rows?: RowKernels;
}

/**
 * Record LayerNorm backward. Accumulates: dinp += dL/dinp (the residual-stream gradient),
 * dweight += dL/dweight, dbias += dL/dbias. `mean` and `rstd` are those saved by the forward pass.
 */
export function layernormBackward(plan: Plan, args: LayernormBackwardArgs): void {
  const { dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C } = args;
  const rows = args.rows ?? (plan.gpu.cpuLike ? "thread" : "workgroup");
  const fn = "layernormBackward";
  checkLengths(fn, N * C, { dinp, dout, inp });
  checkLengths(fn, C, { dweight, dbias, weight });
  checkLengths(fn, N, { mean, rstd });
  const gpu = plan.gpu;
  const u = plan.params(BACKWARD_PARAMS, { N, C }, "layernorm.params");
  const views = [u, dinp, dout, inp, weight, mean, rstd];
  if (rows === "thread") {
    const code = rowSource("backward", C % 4 === 0 ? 4 : 1);
    plan.add(code, views, Math.ceil(N / ROW_WG), "layernorm_backward_input_rows");
  } else plan.add(LAYERNORM_BACKWARD_INPUT, views, N, "layernorm_backward_input");

  const nBlocks = Math.ceil(N / ROWS_PER_BLOCK);
  if (nBlocks > gpu.limits.maxComputeWorkgroupsPerDimension) {
    throw new RangeError(
      `${fn}: N=${N} needs ${nBlocks} row blocks; the adapter allows ${gpu.limits.maxComputeWorkgroupsPerDimension}`,
    );
  }
  const partial = partialScratch(gpu, 2 * nBlocks * C);
  const colTiles = Math.ceil(C / WG);
  const u1 = plan.params(PARTIAL_PARAMS, { N, C, nBlocks }, "layernorm.params");
  plan.add(
    LAYERNORM_BACKWARD_PARAMS_PARTIAL,
    [u1, partial, dout, inp, mean, rstd],
    [colTiles, nBlocks, 1],
    "layernorm_backward_params_partial",
  );
  const u2 = plan.params(FINAL_PARAMS, { C, nBlocks }, "layernorm.params");
  plan.add(
    LAYERNORM_BACKWARD_PARAMS_FINAL,
    [u2, dweight, dbias, partial],
    [colTiles, 1, 1],
    "layernorm_backward_params_final",
  );
}
