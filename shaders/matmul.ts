/**
 * Matrix multiply for every linear layer of GPT-2, forward and backward, and the bias gradient.
 *
 * `out[M,N] (=|+=) op(A)[M,K] · op(B)[K,N] (+ bias[N])`, where op is the identity or the transpose.
 * Row strides and element offsets are uniform parameters, so the same kernels serve a chunk of the tied
 * LM head inside the [R, V] logits (`ldc = V`, `cOffset = v0`) and its backward passes.
 *
 * One WGSL source per variant (transA, transB, bias, accumulate) is generated from a template; the
 * pipeline cache of {@link Plan} keys on the source, so each variant compiles once.
 *
 * Tiling: a workgroup computes a TM x (WG * TN) block of `out`, every thread TM rows by TN columns of it,
 * read straight from the operands (see {@link matmulSource}). No size needs to be a tile multiple.
 * Every output is a sum over k in increasing order, so results are bit-for-bit deterministic.
 * @module
 */
import { grid, packUniform, type Plan, type TensorView } from "../model/gpu.ts";

/**
 * Threads per workgroup (WG), rows per workgroup and thread (TM), columns per thread (TN), and the run of
 * adjacent columns that consecutive threads cover before a thread's next column (LANE, the 8-lane SIMD
 * width llvmpipe uses). TN = 4 fills the vec4f accumulators. A workgroup's block is BM x BN.
 */
const WG = 64, TM = 8, TN = 4, LANE = 8;
const BM = TM, BN = WG * TN;

/** The compile-time choices that make one WGSL source. */
export interface MatmulVariant {
  transA: boolean;
  transB: boolean;
  bias: boolean;
  accumulate: boolean;
}

/** Arguments of {@link matmul}. Strides and offsets count f32 elements. */
export interface MatmulArgs {
  out: TensorView;
  a: TensorView;
  b: TensorView;
  bias?: TensorView;
  M: number;
  N: number;
  K: number;
  /** op(A) is A^T: A is stored [K, M] (row stride lda). */
  transA?: boolean;
  /** op(B) is B^T: B is stored [N, K] (row stride ldb). */
  transB?: boolean;
  /** Row stride of A as stored; default dense (K, or M when transA). */
  lda?: number;
  /** Row stride of B as stored; default dense (N, or K when transB). */
  ldb?: number;
  /** Row stride of out; default N. */
  ldc?: number;
  /** Element offset of A's first element inside the view (a uniform, not a view offset). */
  aOffset?: number;
  bOffset?: number;
  cOffset?: number;
  /** out += op(A) op(B) (+ bias) instead of out = ... */
  accumulate?: boolean;
}

const PARAMS = /* wgsl */ `struct Params {
  M: u32, N: u32, K: u32,
  lda: u32, ldb: u32, ldc: u32,
  aOff: u32, bOff: u32, cOff: u32,
  tilesN: u32, tiles: u32,
}`;

/**
 * The WGSL source of one variant. Bindings: params, out, a, b, then bias when `bias`.
 *
 * All threads of a workgroup share the same TM rows, so the A loads have uniform addresses (one load
 * broadcast to every lane on SIMD CPU adapters, a broadcast from cache on GPUs) and only the TN loads of
 * B differ per thread. Thread t covers columns `nt + j*LANE` for j < TN, with nt = block start +
 * (t / LANE) * LANE * TN + t % LANE: each run of LANE threads reads LANE adjacent floats of a B row, so
 * a SIMD group uses whole cache lines. There is no workgroup memory and no barrier: on llvmpipe staging
 * tiles in workgroup memory measured 2-3x slower than this, since CPU caches already hold the operands.
 * Row and column indices are clamped into the matrix for the loads, so the inner loop has no branches;
 * results of clamped rows and columns are never stored.
 */
export function matmulSource(v: MatmulVariant): string {
  // Element (m, k) of op(A) and (k, n) of op(B) as stored: a row/column base plus k times a k-stride.
  const aBase = (i: number) => v.transA ? `min(m0 + ${i}u, mLast)` : `min(m0 + ${i}u, mLast) * p.lda`;
  const aStep = v.transA ? "p.lda" : "1u";
  const bBase = (j: number) => v.transB ? `min(n${j}, nLast) * p.ldb` : `min(n${j}, nLast)`;
  const bStep = v.transB ? "1u" : "p.ldb";
  const rows = Array.from({ length: TM }, (_, i) => i);
  const cols = Array.from({ length: TN }, (_, j) => j);
  return PARAMS + /* wgsl */ `
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
${v.bias ? "@group(0) @binding(4) var<storage, read> bias: array<f32>;" : ""}

fn store(m: u32, n: u32, s: f32) {
  if (m >= p.M || n >= p.N) { return; }
  let c = p.cOff + m * p.ldc + n;
  ${v.accumulate ? "out[c] += s" : "out[c] = s"}${v.bias ? " + bias[n]" : ""};
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= p.tiles) { return; }
  let m0 = (tile / p.tilesN) * ${BM}u;
  let mLast = p.M - 1u;
  let nLast = p.N - 1u;
  let nt = (tile % p.tilesN) * ${BN}u + (li / ${LANE}u) * ${LANE * TN}u + li % ${LANE}u;
  ${cols.map((j) => `let n${j} = nt + ${j * LANE}u;`).join("\n  ")}
  ${rows.map((i) => `var ai${i} = p.aOff + ${aBase(i)};`).join("\n  ")}
  ${cols.map((j) => `var bi${j} = p.bOff + ${bBase(j)};`).join("\n  ")}
  ${rows.map((i) => `var acc${i} = vec4f(0.0);`).join("\n  ")}
  for (var k = 0u; k < p.K; k++) {
    let bv = vec4f(${cols.map((j) => `b[bi${j}]`).join(", ")});
    ${rows.map((i) => `acc${i} = fma(vec4f(a[ai${i}]), bv, acc${i});`).join("\n    ")}
    ${rows.map((i) => `ai${i} += ${aStep};`).join(" ")}
    ${cols.map((j) => `bi${j} += ${bStep};`).join(" ")}
  }
  ${rows.flatMap((i) => cols.map((j) => `store(m0 + ${i}u, n${j}, acc${i}[${j}]);`)).join("\n  ")}
}
`;
}

const sources = new Map<string, string>();

/** The cached source of a variant (the same string object each time, so pipelines are shared). */
function sourceFor(v: MatmulVariant): string {
  const key = `${+v.transA}${+v.transB}${+v.bias}${+v.accumulate}`;
  let s = sources.get(key);
  if (!s) {
    s = matmulSource(v);
    sources.set(key, s);
  }
  return s;
}

/** Throw unless elements up to `last` (inclusive) lie inside `view`. */
function checkFits(fn: string, what: string, view: TensorView, last: number): void {
  if (last >= view.length) {
    throw new RangeError(
      `${fn}: ${what} needs ${last + 1} elements (offset, stride and shape), but its view ${
        view.label ?? ""
      } has ${view.length}`,
    );
  }
}

/**
 * Record `out[M,N] (=|+=) op(A)[M,K] · op(B)[K,N] + bias[N]`. Element (m, k) of op(A) is
 * `a[aOffset + m*lda + k]` (or `a[aOffset + k*lda + m]` with transA), likewise for B; out(m, n) is
 * `out[cOffset + m*ldc + n]`. Throws a RangeError if a view is too small for its shape and strides.
 */
export function matmul(plan: Plan, args: MatmulArgs): void {
  const { out, a, b, bias, M, N, K } = args;
  const transA = args.transA ?? false, transB = args.transB ?? false;
  const lda = args.lda ?? (transA ? M : K);
  const ldb = args.ldb ?? (transB ? K : N);
  const ldc = args.ldc ?? N;
  const aOff = args.aOffset ?? 0, bOff = args.bOffset ?? 0, cOff = args.cOffset ?? 0;
  for (const [name, value] of Object.entries({ M, N, K, lda, ldb, ldc, aOff, bOff, cOff })) {
    if (!Number.isInteger(value) || value < 0) {
      throw new RangeError(`matmul: ${name} must be a non-negative integer, got ${value}`);
    }
  }
  if (M === 0 || N === 0) return;
  const [aRows, aCols] = transA ? [K, M] : [M, K];
  const [bRows, bCols] = transB ? [N, K] : [K, N];
  if (aCols > lda || bCols > ldb || N > ldc) {
    throw new RangeError(
      `matmul: row strides lda=${lda} ldb=${ldb} ldc=${ldc} are shorter than the rows ` +
        `(A ${aRows}x${aCols}, B ${bRows}x${bCols}, out ${M}x${N})`,
    );
  }
  if (K > 0) {
    checkFits("matmul", "A", a, aOff + (aRows - 1) * lda + aCols - 1);
    checkFits("matmul", "B", b, bOff + (bRows - 1) * ldb + bCols - 1);
  }
  checkFits("matmul", "out", out, cOff + (M - 1) * ldc + N - 1);
  if (bias) checkFits("matmul", "bias", bias, N - 1);
  const tilesN = Math.ceil(N / BN), tiles = Math.ceil(M / BM) * tilesN;
  const u = plan.gpu.uniform(
    packUniform([
      ["u", M],
      ["u", N],
      ["u", K],
      ["u", lda],
      ["u", ldb],
      ["u", ldc],
      ["u", aOff],
      ["u", bOff],
      ["u", cOff],
      ["u", tilesN],
      ["u", tiles],
    ]),
    "matmul.params",
  );
  const accumulate = args.accumulate ?? false;
  const code = sourceFor({ transA, transB, bias: bias !== undefined, accumulate });
  const views = bias ? [u, out, a, b, bias] : [u, out, a, b];
  plan.add(code, views, grid(plan.gpu, tiles), `matmul_${transA ? "T" : "N"}${transB ? "T" : "N"}`);
}

/** Columns per bias-gradient workgroup, and the row phases that split each column's sum. */
const BIAS_COLS = 64, BIAS_PHASES = 4;

/**
 * dbias[n] += sum over m of dout[off + m*ld + n]. Thread (x, y) of a workgroup sums rows y, y + 4, ...
 * of column n0 + x in increasing order, then thread y = 0 adds the four partial sums in order y = 0..3.
 * Bindings: params, dbias, dout.
 */
export const BIAS_BACKWARD = /* wgsl */ `
struct Params { M: u32, N: u32, ld: u32, off: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
var<workgroup> part: array<f32, ${BIAS_COLS * BIAS_PHASES}>;
@compute @workgroup_size(${BIAS_COLS}, ${BIAS_PHASES})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let n = (wid.x + wid.y * nwg.x) * ${BIAS_COLS}u + lid.x;
  var s = 0.0;
  if (n < p.N) {
    for (var m = lid.y; m < p.M; m += ${BIAS_PHASES}u) {
      s += dout[p.off + m * p.ld + n];
    }
  }
  part[lid.y * ${BIAS_COLS}u + lid.x] = s;
  workgroupBarrier();
  if (lid.y == 0u && n < p.N) {
    var t = part[lid.x];
    for (var y = 1u; y < ${BIAS_PHASES}u; y++) { t += part[y * ${BIAS_COLS}u + lid.x]; }
    dbias[n] += t;
  }
}
`;

/**
 * Record dbias[n] += sum over m of dout[offset + m*ld + n] for n < N, m < M (dout row stride `ld`,
 * default N). The order of the sum is fixed, so results are deterministic.
 */
export function biasBackward(
  plan: Plan,
  dbias: TensorView,
  dout: TensorView,
  M: number,
  N: number,
  ld = N,
  offset = 0,
): void {
  if (M === 0 || N === 0) return;
  if (ld < N) throw new RangeError(`biasBackward: row stride ld=${ld} is shorter than N=${N}`);
  checkFits("biasBackward", "dbias", dbias, N - 1);
  checkFits("biasBackward", "dout", dout, offset + (M - 1) * ld + N - 1);
  const u = plan.gpu.uniform(
    packUniform([["u", M], ["u", N], ["u", ld], ["u", offset]]),
    "bias_backward.params",
  );
  plan.add(BIAS_BACKWARD, [u, dbias, dout], Math.ceil(N / BIAS_COLS), "bias_backward");
}
