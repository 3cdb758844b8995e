/**
 * Matrix multiply for every linear layer of GPT-2, forward and backward, the bias gradient, and the
 * linear layer y = x W + b in both directions ({@link linearForward}, {@link linearBackward}).
 *
 * `out[M,N] (=|+=) op(A)[M,K] · op(B)[K,N] (+ bias[N])`, where op is the identity or the transpose.
 * Row strides and element offsets are uniform parameters, so the same kernels serve a chunk of the tied
 * LM head inside the [R, V] logits (`ldc = V`, `cOffset = v0`) and its backward passes.
 *
 * Two kernel families, one WGSL source per variant (transA, transB, bias, accumulate, f16 operands,
 * layout), generated from templates; the pipeline cache of {@link Plan} keys on the source, so each
 * variant compiles once:
 *
 * - vec4: operands bound as `array<vec4f>`, every thread loads 16-byte vectors along the contiguous
 *   dimension of each operand and keeps a register tile of `out` (16 x 32 on CPU adapters, 8 x 32 there
 *   for products of 17-64 rows, 8 x 8 on GPUs, 4 x 16 for products of at most 16 rows). Needs the row
 *   strides and offsets of A and B to be multiples of 4 elements; the bulk of every GPT-2 matmul. Where
 *   out's stride and offset and N are multiples of 4 too, it stores (and adds the bias) 4 columns per
 *   vector: a quarter of the epilogue's memory operations, and a quarter of its code to compile.
 * - scalar: any shape, stride and offset; serves what the vec4 kernel cannot (a K, M or N remainder of
 *   1 to 3, odd strides).
 *
 * {@link matmul} splits one product into a vec4 core and scalar edges when the sizes are not multiples
 * of 4. Why vectors: on llvmpipe (Mesa's CPU rasteriser, the adapter of CI and of the browser tests) a
 * storage-buffer load costs about as much as 30 FMAs however its address varies across lanes, and a
 * vec4 load costs less than two scalar loads, so the kernel maximises FMAs per loaded vector. On GPUs the
 * same kernel is a plain register-tiled matmul with 128-bit loads.
 *
 * Every output is a sum over k in increasing order, so results are bit-for-bit deterministic; a split
 * along K adds the remainder after the core (still increasing k).
 * @module
 */
import {
  checkLengths,
  computeMain,
  grid,
  type Plan,
  storage,
  type TensorView,
  uniformLayout,
} from "./gpu.ts";
import { castToHalf } from "./f16.ts";
import { chooseTiled } from "./tune.ts";
import { TILED_PARAMS, type TiledBlock } from "./matmul_tiled.ts";

/** Threads per workgroup, rows per workgroup and thread, columns per thread of the scalar kernel. */
const WG = 64, TM = 8, TN = 4, LANE = 8;
const BM = TM, BN = WG * TN;

/**
 * A thread layout of the vec4 kernel: WX x WY threads, each TM rows by TN columns (TM and TN multiples
 * of 4). The tile layouts keep whole 128 x 128 (CPU adapters; 64 x 128 for 17-64 rows) or 64 x 128
 * (GPUs) blocks in one workgroup; `wide` serves products with few rows (decoding one token per
 * sequence) without idle threads.
 */
interface Vec4Layout {
  name: string;
  WX: number;
  WY: number;
  TM: number;
  TN: number;
}
/**
 * CPU adapters: 16 x 32 per thread, 2048 FMAs per 48 vector loads per step of 4 in K. On llvmpipe the
 * loads are most of the time (the same kernel with its loads hoisted out of the K loop ran 7x faster),
 * so FMAs per load decide: with vector stores this measured 0.72-0.82x the time of 16 x 16 at the small
 * training config's products (16 x 16 had been 11-25% faster than 8 x 16); 32 x 16 about the same, and
 * 32 x 32 about 0.6x but minutes to compile one variant from a cold Mesa shader cache.
 */
const TILE_CPU: Vec4Layout = { name: "tile16x32", WX: 4, WY: 8, TM: 16, TN: 32 };
/**
 * CPU adapters, products of 17-64 rows: 8 x 32 per thread, so a 64-row block wastes no lanes (0.83-0.86x
 * the time of 8 x 16 at GPT-2 124M's products of 64 rows, for the same reason as {@link TILE_CPU}).
 */
const TILE_CPU_MID: Vec4Layout = { name: "tile8x32", WX: 4, WY: 8, TM: 8, TN: 32 };
/**
 * GPUs: the family whose products of more than 16 rows (f32 or f16 operands) run the workgroup-memory
 * kernels of `matmul_tiled.ts`; those of at most 16 rows take {@link WIDE}.
 */
const TILE_GPU: Vec4Layout = { name: "tile8x8", WX: 16, WY: 8, TM: 8, TN: 8 };
const WIDE: Vec4Layout = { name: "wide", WX: 16, WY: 1, TM: 4, TN: 16 };
/**
 * The longest K one launch takes (a multiple of 4): the scalar kernel loops K times per thread, and
 * llvmpipe silently cuts a thread off after 65535 loop iterations (LLVMPIPE_LOOP_LIMIT in gpu.ts), so longer
 * products are recorded as several launches that accumulate.
 */
export const K_CHUNK = 49152;
/** Products with at most this many rows use {@link WIDE}; on CPU adapters up to 64 rows {@link TILE_CPU_MID}. */
const WIDE_MAX_ROWS = 16;

/** The compile-time choices that make one WGSL source. */
export interface MatmulVariant {
  transA: boolean;
  transB: boolean;
  bias: boolean;
  accumulate: boolean;
  /** A and B are f16 tensors (shaders/f16.ts), loaded as f16 and multiplied and summed in f32. */
  half?: boolean;
  /**
   * vec4 kernel only: out (and bias) are bound as `array<vec4f>` and stored 4 columns at a time. Needs
   * ldc, cOff, dOff and N to be multiples of 4, so a vector is either wholly inside the product or not.
   */
  vecOut?: boolean;
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
  /** "scalar" forces the scalar kernel (a plain register-tiled matmul: the benchmark's reference). */
  kernel?: "auto" | "scalar";
  /**
   * Kernel family of the vec4 core; default the device's ({@link Gpu.kernels}). "gpu" runs products of
   * more than 16 rows (f32 or f16 operands) on the workgroup-memory kernel of `matmul_tiled.ts`, its
   * candidate chosen by the tuner (`tune.ts`).
   */
  tiles?: "cpu" | "gpu";
  /** Pin this tiled candidate (by name, `TILED_CANDIDATES`) instead of the tuner's choice: tests, bench. */
  candidate?: string;
  /**
   * A and B are f16 tensors (shaders/f16.ts; needs `shader-f16`): strides and offsets of A and B count
   * halves; products, sums, bias and out stay f32.
   */
  half?: boolean;
  /**
   * With `half`: f16 arithmetic where the workgroup-memory kernel runs (GPU family, more than 16 rows):
   * products and partial sums in f16 over chunks of `HALF_SUM_CHUNK` k, the partials summed in f32
   * (`matmul_tiled.ts` states the error bound and the overflow to inf). The scalar edges, the other vec4
   * layouts and the CPU family keep f32 products and sums. Off by default; the model's linear layers set it
   * under `usePrecision("f16", { halfSums: true })` (model/precision.ts).
   */
  halfSums?: boolean;
}

/** The bindings and the store of one output element (a vector of 4 with `vecOut`), shared by both kernels. */
function header(v: MatmulVariant, operand: "f32" | "vec4f"): string {
  const type = v.half ? (operand === "f32" ? "f16" : "vec4<f16>") : operand;
  const result = v.vecOut ? "vec4f" : "f32", perVector = v.vecOut ? " / 4u" : "";
  // The workgroup-memory kernel's uniform block: one product is described the same way to both.
  return (v.half ? "enable f16;\n" : "") + TILED_PARAMS.wgsl + storage({
    out: `read_write array<${result}>`,
    a: `read array<${type}>`,
    b: `read array<${type}>`,
    ...(v.bias ? { bias: `read array<${result}>` as const } : {}),
  }) + /* wgsl */ `
fn store(m: u32, n: u32, s: ${result}) {
  if (m >= p.M || n >= p.N) { return; }
  let c = (p.cOff + m * p.ldc + n)${perVector};
  ${v.accumulate ? "out[c] += s" : "out[c] = s"}${v.bias ? ` + bias[(p.dOff + n)${perVector}]` : ""};
}
`;
}

/**
 * The WGSL source of one scalar variant. Bindings: params, out, a, b, then bias when `bias`.
 *
 * All threads of a workgroup share the same TM rows and thread t covers columns `nt + j*LANE` for
 * j < TN, with nt = block start + (t / LANE) * LANE * TN + t % LANE. Row and column indices are clamped
 * into the matrix for the loads, so the inner loop has no branches; results of clamped rows and columns
 * are never stored.
 */
export function matmulSource(v: MatmulVariant): string {
  // Element (m, k) of op(A) and (k, n) of op(B) as stored: a row/column base plus k times a k-stride.
  const aBase = (i: number) => v.transA ? `min(m0 + ${i}u, mLast)` : `min(m0 + ${i}u, mLast) * p.lda`;
  const aStep = v.transA ? "p.lda" : "1u";
  const bBase = (j: number) => v.transB ? `min(n${j}, nLast) * p.ldb` : `min(n${j}, nLast)`;
  const bStep = v.transB ? "1u" : "p.ldb";
  const rows = Array.from({ length: TM }, (_, i) => i);
  const cols = Array.from({ length: TN }, (_, j) => j);
  const ld = (x: string) => v.half ? `f32(${x})` : x;
  return header(v, "f32") + computeMain(WG) + /* wgsl */ `
  let tile = wgIndex;
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
    let bv = vec4f(${cols.map((j) => ld(`b[bi${j}]`)).join(", ")});
    ${rows.map((i) => `acc${i} = fma(vec4f(${ld(`a[ai${i}]`)}), bv, acc${i});`).join("\n    ")}
    ${rows.map((i) => `ai${i} += ${aStep};`).join(" ")}
    ${cols.map((j) => `bi${j} += ${bStep};`).join(" ")}
  }
  ${rows.flatMap((i) => cols.map((j) => `store(m0 + ${i}u, n${j}, acc${i}[${j}]);`)).join("\n  ")}
}
`;
}

/**
 * The WGSL source of one vec4 variant (same bindings as the scalar one; A and B as `array<vec4f>`).
 *
 * Preconditions, checked by {@link matmul}: lda, ldb, aOff and bOff are multiples of 4; K is a multiple
 * of 4; M is when transA; N is unless transB. The K loop steps by 4: per step a thread loads, for A,
 * TM vectors along k (one per row) or, transposed, TM/4 vectors along m for each of the 4 k; likewise
 * TN vectors along k or TN/4 along n per k for B; then does TM * TN * 4 FMAs in increasing k. Thread
 * (x, y) of the workgroup owns rows y*TM.. and columns x*TN.. of the workgroup's block. Rows and
 * columns past the matrix are clamped for loading (a whole vector stays inside since M or N is then a
 * multiple of 4) and never stored.
 */
export function matmulVec4Source(v: MatmulVariant, layout: Vec4Layout = TILE_CPU): string {
  const { WX, WY, TM: tm, TN: tn } = layout;
  const R = (n: number) => Array.from({ length: n }, (_, i) => i);
  // f16 operands are widened to f32 as they are loaded (8-byte vector loads).
  const ld = (x: string) => v.half ? `vec4f(${x})` : x;
  const pre: string[] = [];
  const body: string[] = [];
  const aRef: string[][] = R(tm).map(() => []); // aRef[i][kk]: element (m0 + i, k + kk) of op(A)
  const bRef: string[][] = R(4).map(() => []); // bRef[kk][j]: element (k + kk, n0 + j) of op(B)
  if (!v.transA) {
    for (const i of R(tm)) {
      pre.push(`let ar${i} = (p.aOff + min(m0 + ${i}u, p.M - 1u) * p.lda) / 4u;`);
      body.push(`let A${i} = ${ld(`a[ar${i} + kq]`)};`);
      for (const kk of R(4)) aRef[i][kk] = `A${i}[${kk}]`;
    }
  } else {
    for (const h of R(tm / 4)) pre.push(`let ac${h} = (p.aOff + min(m0 + ${h * 4}u, p.M - 4u)) / 4u;`);
    for (const kk of R(4)) {
      for (const h of R(tm / 4)) {
        body.push(`let A${kk}_${h} = ${ld(`a[ac${h} + (k + ${kk}u) * lda4]`)};`);
        for (const q of R(4)) aRef[h * 4 + q][kk] = `A${kk}_${h}[${q}]`;
      }
    }
  }
  if (v.transB) {
    for (const j of R(tn)) {
      pre.push(`let br${j} = (p.bOff + min(n0 + ${j}u, p.N - 1u) * p.ldb) / 4u;`);
      body.push(`let B${j} = ${ld(`b[br${j} + kq]`)};`);
      for (const kk of R(4)) bRef[kk][j] = `B${j}[${kk}]`;
    }
  } else {
    for (const h of R(tn / 4)) pre.push(`let bc${h} = (p.bOff + min(n0 + ${h * 4}u, p.N - 4u)) / 4u;`);
    for (const kk of R(4)) {
      for (const h of R(tn / 4)) {
        body.push(`let B${kk}_${h} = ${ld(`b[bc${h} + (k + ${kk}u) * ldb4]`)};`);
        for (const q of R(4)) bRef[kk][h * 4 + q] = `B${kk}_${h}[${q}]`;
      }
    }
  }
  for (const kk of R(4)) {
    for (const i of R(tm)) {
      for (const j of R(tn)) body.push(`c${i}_${j} = fma(${aRef[i][kk]}, ${bRef[kk][j]}, c${i}_${j});`);
    }
  }
  const epilogue = v.vecOut
    ? R(tm).flatMap((i) =>
      R(tn / 4).map((h) => {
        const c = R(4).map((q) => `c${i}_${h * 4 + q}`).join(", ");
        return `store(m0 + ${i}u, n0 + ${h * 4}u, vec4f(${c}));`;
      })
    )
    : R(tm).flatMap((i) => R(tn).map((j) => `store(m0 + ${i}u, n0 + ${j}u, c${i}_${j});`));
  return header(v, "vec4f") + computeMain(WX * WY) + /* wgsl */ `
  let tile = wgIndex;
  if (tile >= p.tiles) { return; }
  let m0 = (tile / p.tilesN) * ${WY * tm}u + (li / ${WX}u) * ${tm}u;
  let n0 = (tile % p.tilesN) * ${WX * tn}u + (li % ${WX}u) * ${tn}u;
  let lda4 = p.lda / 4u;
  let ldb4 = p.ldb / 4u;
  ${pre.join("\n  ")}
  ${R(tm).map((i) => R(tn).map((j) => `var c${i}_${j} = 0.0;`).join(" ")).join("\n  ")}
  for (var k = 0u; k < p.K; k += 4u) {
    let kq = k / 4u;
    ${body.join("\n    ")}
  }
  ${epilogue.join("\n  ")}
}
`;
}

const sources = new Map<string, string>();

/** The cached source of a variant (the same string object each time, so pipelines are shared). */
function sourceFor(v: MatmulVariant, layout?: Vec4Layout): string {
  const key = `${+v.transA}${+v.transB}${+v.bias}${+v.accumulate}${+!!v.half}${+!!v.vecOut}` +
    (layout?.name ?? "scalar");
  let s = sources.get(key);
  if (!s) {
    s = layout ? matmulVec4Source(v, layout) : matmulSource(v);
    sources.set(key, s);
  }
  return s;
}

/** One launch over a block of the product: resolved strides and offsets, bias offset included. */
interface Block extends TiledBlock {
  accumulate: boolean;
  bias: boolean;
}

/**
 * Record `out[M,N] (=|+=) op(A)[M,K] · op(B)[K,N] + bias[N]`. Element (m, k) of op(A) is
 * `a[aOffset + m*lda + k]` (or `a[aOffset + k*lda + m]` with transA), likewise for B; out(m, n) is
 * `out[cOffset + m*ldc + n]`. Throws a RangeError if a view is too small for its shape and strides.
 *
 * When A's and B's strides and offsets are multiples of 4, the product runs on the vec4 kernel over the
 * largest block whose vector dimensions are multiples of 4, and the scalar kernel adds the rest: the
 * K remainder (accumulated onto the core), then the remaining columns and rows.
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
  // f16 operands hold two halves per 32-bit element.
  const words = (halves: number) => args.half ? Math.ceil(halves / 2) : halves;
  if (K > 0) {
    checkLengths("matmul", words(aOff + (aRows - 1) * lda + aCols), { A: a });
    checkLengths("matmul", words(bOff + (bRows - 1) * ldb + bCols), { B: b });
  }
  checkLengths("matmul", cOff + (M - 1) * ldc + N, { out });
  if (bias) checkLengths("matmul", N, { bias });
  const accumulate = args.accumulate ?? false;
  if (args.halfSums && !args.half) throw new RangeError("matmul: halfSums needs half (f16 operands)");
  if (K > K_CHUNK) {
    // Keep every thread's K loop within llvmpipe's loop budget: consecutive K chunks, each added onto
    // the previous ones (bias with the first), so the sum still runs in increasing k.
    for (let k0 = 0; k0 < K; k0 += K_CHUNK) {
      matmul(plan, {
        ...args,
        K: Math.min(K_CHUNK, K - k0),
        aOffset: aOff + (transA ? k0 * lda : k0),
        bOffset: bOff + (transB ? k0 : k0 * ldb),
        accumulate: k0 > 0 || accumulate,
        bias: k0 === 0 ? bias : undefined,
        lda,
        ldb,
      });
    }
    return;
  }
  const whole: Block = { M, N, K, lda, ldb, ldc, aOff, bOff, cOff, dOff: 0, accumulate, bias: !!bias };
  const views = bias ? [out, a, b, bias] : [out, a, b];
  const tile = (args.tiles ?? plan.gpu.kernels) === "cpu" ? TILE_CPU : TILE_GPU;
  const record = (blk: Block, vec4: boolean) =>
    recordBlock(
      plan,
      views,
      { transA, transB, half: !!args.half, halfSums: !!args.halfSums },
      blk,
      vec4 ? tile : undefined,
      args.candidate,
    );

  // The vec4 core: K, and M or N where vectors run along them, rounded down to multiples of 4.
  const Mv = transA ? M & ~3 : M, Nv = transB ? N : N & ~3, Kv = K & ~3;
  const aligned = lda % 4 === 0 && ldb % 4 === 0 && aOff % 4 === 0 && bOff % 4 === 0;
  if (!aligned || Mv === 0 || Nv === 0 || Kv === 0 || args.kernel === "scalar") {
    record(whole, false);
    return;
  }
  record({ ...whole, M: Mv, N: Nv, K: Kv }, true);
  if (Kv < K) {
    // k in [Kv, K) added onto the core: op(A) columns and op(B) rows start at Kv.
    record({
      ...whole,
      M: Mv,
      N: Nv,
      K: K - Kv,
      aOff: aOff + (transA ? Kv * lda : Kv),
      bOff: bOff + (transB ? Kv : Kv * ldb),
      accumulate: true,
      bias: false,
    }, false);
  }
  if (Nv < N) {
    record({
      ...whole,
      M: Mv,
      N: N - Nv,
      bOff: bOff + (transB ? Nv * ldb : Nv),
      cOff: cOff + Nv,
      dOff: Nv,
    }, false);
  }
  if (Mv < M) {
    record({
      ...whole,
      M: M - Mv,
      aOff: aOff + (transA ? Mv : Mv * lda),
      cOff: cOff + Mv * ldc,
    }, false);
  }
}

/**
 * Record one kernel launch over `blk` (views: out, a, b, then bias); the vec4 kernel with `tile`, except
 * that GPU tiles go to the tuned workgroup-memory kernel (`candidate` pins one).
 */
function recordBlock(
  plan: Plan,
  views: TensorView[],
  { transA, transB, half, halfSums }: { transA: boolean; transB: boolean; half: boolean; halfSums: boolean },
  blk: Block,
  tile: Vec4Layout | undefined,
  candidate?: string,
): void {
  const layout = !tile
    ? undefined
    : blk.M <= WIDE_MAX_ROWS
    ? WIDE
    : tile === TILE_CPU && blk.M <= TILE_CPU_MID.WY * TILE_CPU_MID.TM
    ? TILE_CPU_MID
    : tile;
  const bound = blk.bias ? views : views.slice(0, 3);
  if (layout === TILE_GPU) {
    const tiled = { transA, transB, bias: blk.bias, accumulate: blk.accumulate, half, halfSums };
    chooseTiled(plan, bound, tiled, blk, candidate);
    return;
  }
  const bm = layout ? layout.WY * layout.TM : BM, bn = layout ? layout.WX * layout.TN : BN;
  const tilesN = Math.ceil(blk.N / bn), tiles = Math.ceil(blk.M / bm) * tilesN;
  const u = plan.params(TILED_PARAMS, { ...blk, tilesN, tiles }, "matmul.params");
  const vecOut = !!layout && [blk.ldc, blk.cOff, blk.dOff, blk.N].every((x) => x % 4 === 0);
  const variant = { transA, transB, bias: blk.bias, accumulate: blk.accumulate, half, vecOut };
  const code = sourceFor(variant, layout);
  const kind = `${layout ? "_v4" : ""}${half ? "_f16" : ""}`;
  const label = `matmul_${transA ? "T" : "N"}${transB ? "T" : "N"}${kind}`;
  plan.add(code, [u, ...bound], grid(plan.gpu, tiles), label);
}

/** Columns per bias-gradient workgroup, and the row phases that split each column's sum. */
const BIAS_COLS = 64, BIAS_PHASES = 4;

const BIAS_PARAMS = uniformLayout({ M: "u32", N: "u32", ld: "u32", off: "u32" });

/**
 * dbias[n] += sum over m of dout[off + m*ld + n]. Thread (x, y) of a workgroup sums rows y, y + 4, ...
 * of column n0 + x in increasing order, then thread y = 0 adds the four partial sums in order y = 0..3.
 * Bindings: params, dbias, dout.
 */
export const BIAS_BACKWARD = BIAS_PARAMS.wgsl +
  storage({ dbias: "read_write array<f32>", dout: "read array<f32>" }) + /* wgsl */ `
var<workgroup> part: array<f32, ${BIAS_COLS * BIAS_PHASES}>;
${computeMain([BIAS_COLS, BIAS_PHASES])}
  let n = wgIndex * ${BIAS_COLS}u + lid.x;
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

/** Arguments of {@link biasBackward}. */
export interface BiasBackwardArgs {
  /** [N], accumulated into. */
  dbias: TensorView;
  /** M rows of N columns, row stride `ld` (default N), starting at element `offset` (default 0). */
  dout: TensorView;
  M: number;
  N: number;
  ld?: number;
  offset?: number;
}

/**
 * Record dbias[n] += sum over m of dout[offset + m*ld + n] for n < N, m < M. The order of the sum is
 * fixed, so results are deterministic.
 */
export function biasBackward(plan: Plan, { dbias, dout, M, N, ld = N, offset = 0 }: BiasBackwardArgs): void {
  if (M === 0 || N === 0) return;
  if (ld < N) throw new RangeError(`biasBackward: row stride ld=${ld} is shorter than N=${N}`);
  checkLengths("biasBackward", N, { dbias });
  checkLengths("biasBackward", offset + (M - 1) * ld + N, { dout });
  const u = plan.params(BIAS_PARAMS, { M, N, ld, off: offset }, "bias_backward.params");
  plan.add(BIAS_BACKWARD, [u, dbias, dout], Math.ceil(N / BIAS_COLS), "bias_backward");
}

/**
 * A linear layer y = x W + b over `rows` rows, in the Hugging Face Conv1D layout: x [rows, inC],
 * W [inC, outC], b [outC], y [rows, outC].
 */
export interface LinearArgs {
  x: TensorView;
  W: TensorView;
  b?: TensorView;
  rows: number;
  inC: number;
  outC: number;
  /**
   * Mixed precision: W16, W's f16 copy (shaders/f16.ts), and x16, scratch for x's f16 copy (at least
   * rows * inC halves). The matmul reads both in f16 and sums in f32; x, b, y and the gradients stay f32.
   * `xHalf`: x16 already holds x (its producer wrote f16), so nothing is cast and x is not read.
   * `halfSums`: f16 arithmetic ({@link MatmulArgs.halfSums}) for the products that sum over the layer's
   * width, y = x W and dx = dy W^T; dW = x^T dy, a sum over every row of scaled gradients, keeps f32 sums.
   */
  half?: { W16: TensorView; x16: TensorView; xHalf?: boolean; halfSums?: boolean };
}

/** Record y = x W + b (y overwritten). */
export function linearForward(
  plan: Plan,
  { y, x, W, b, rows, inC, outC, half }: LinearArgs & { y: TensorView },
): void {
  if (!half) {
    matmul(plan, { out: y, a: x, b: W, bias: b, M: rows, N: outC, K: inC });
    return;
  }
  if (!half.xHalf) castToHalf(plan, { out: half.x16, inp: x, n: rows * inC });
  matmul(plan, {
    out: y,
    a: half.x16,
    b: half.W16,
    bias: b,
    M: rows,
    N: outC,
    K: inC,
    half: true,
    halfSums: half.halfSums,
  });
}

/** The gradients {@link linearBackward} writes: dx is overwritten, dW and db accumulate. */
export interface LinearGrads {
  dx: TensorView;
  dW: TensorView;
  db?: TensorView;
  /** dLoss/dy [rows, outC]. */
  dy: TensorView;
}

/**
 * Record the backward of y = x W + b: dW += x^T dy, db += column sums of dy, dx = dy W^T. With `half`
 * (and dy16, scratch of rows * outC halves) both matmuls read f16 copies of x, dy and W; db sums dy in
 * f32.
 */
export function linearBackward(
  plan: Plan,
  { dx, dW, db, dy, x, W, rows, inC, outC, half }: Omit<LinearArgs, "b" | "half"> & LinearGrads & {
    half?: LinearArgs["half"] & { dy16: TensorView };
  },
): void {
  if (!half) {
    matmul(plan, { out: dW, a: x, b: dy, M: inC, N: outC, K: rows, transA: true, accumulate: true });
    if (db) biasBackward(plan, { dbias: db, dout: dy, M: rows, N: outC });
    matmul(plan, { out: dx, a: dy, b: W, M: rows, N: inC, K: outC, transB: true });
    return;
  }
  if (db) biasBackward(plan, { dbias: db, dout: dy, M: rows, N: outC });
  if (!half.xHalf) castToHalf(plan, { out: half.x16, inp: x, n: rows * inC });
  castToHalf(plan, { out: half.dy16, inp: dy, n: rows * outC });
  const [x16, dy16] = [half.x16, half.dy16];
  matmul(plan, {
    out: dW,
    a: x16,
    b: dy16,
    M: inC,
    N: outC,
    K: rows,
    transA: true,
    accumulate: true,
    half: true,
  });
  matmul(plan, {
    out: dx,
    a: dy16,
    b: half.W16,
    M: rows,
    N: inC,
    K: outC,
    transB: true,
    half: true,
    halfSums: half.halfSums,
  });
}
