/**
 * The GPU matmul: block tiles staged through workgroup memory, a register tile per thread, 16-byte global
 * loads, and the next K tile prefetched into registers while the current one is multiplied (double
 * buffering). Its tile configurations are a small table of candidates ({@link TILED_CANDIDATES}) that
 * the tuner (`tune.ts`) times on the adapter; every candidate computes each output as the same chain of
 * fused multiply-adds in increasing k, so which one runs changes the speed, never the numbers.
 *
 * One WGSL template ({@link TILED_TEMPLATE}) with named `{{PLACEHOLDERS}}`, filled by
 * {@link tiledMatmulSource}, which asserts the candidate's preconditions (thread counts, load shares,
 * workgroup memory) before any source exists. Operand and tile element types are placeholders too: the
 * f16 variant of every candidate (`TiledVariant.half`: f16 operands and workgroup tiles, f32 products
 * and sums, mixed precision's matmul) comes from the same template and is tuned separately, as does its
 * f16-arithmetic form (`TiledVariant.halfSums`, below).
 *
 * f16 arithmetic (`halfSums`): GPUs run f16 FMAs at twice the f32 rate (vec2 packed), but only when the
 * products and sums are f16. Each thread then keeps an f16 partial per output, summed with vec4<f16> FMAs
 * in increasing k over the chunk of {@link HALF_SUM_CHUNK} consecutive k (chunk q holds k in
 * [q*KC, (q+1)*KC), counted from the product's first k, whatever the tile), and adds it to its f32 sum at
 * the chunk's end. The chunks do not depend on the candidate, so every candidate still gives the same bits.
 * Why KC = 32: a chunk costs KC/2 packed f16 FMAs per output plus a flush (a conversion and an f32 add), so
 * the ALU ceiling over f32 is KC / (KC/2 + 2): 1.33x at KC 8, 1.6x at 16, 1.78x at 32, while the error
 * bound grows linearly in KC.
 *
 * Error, against the exact sum over the f16 operands (u = 2^-11, f16's unit roundoff; u' = 2^-24, f32's;
 * gamma(n, u) = n u / (1 - n u)): a term of a chunk meets at most KC f16 roundings, whether WGSL's fma fuses
 * (one rounding per k, NVIDIA's HFMA2) or rounds the product and then the sum (lavapipe, which matches that
 * model bit for bit), so a chunk's partial errs by at most gamma(KC, u) times the chunk's sum of |a_k b_k|;
 * the f32 sum of the ceil(K/KC) partials adds gamma(ceil(K/KC), u') times their magnitudes. Overall
 * |error| <= (gamma(KC, u) + gamma(ceil(K/KC), u') (1 + gamma(KC, u))) * sum_k |a_k b_k|, plus underflow:
 * 2^-25 per f16 rounding (at most 2K) where subnormals are kept, up to 2^-14 where a GPU flushes them. At
 * KC 32 the factor is 1.58%, a worst case: random rounding errors give about u sqrt(KC/6), 1e-3, of the
 * result's magnitude (8.9e-4 at K = 1000 on lavapipe), below bf16's operand rounding of 2^-9.
 * tests/f16_kernels_test.ts checks this bound element by element (with the f32 store's two roundings of
 * out + (s + bias) on top), the bits against the model, and that the error is f16's, not f32's.
 *
 * Overflow: a product or chunk partial of magnitude 65520 or more rounds to +-inf (even where later chunks
 * would cancel it) and inf or NaN reaches out; under training that is the loss scaler's cue (skip the
 * step, halve the scale), which is what it is for. Products whose 32-term chunks can pass 65504 at the
 * scales the scaler settles on (long sums of large scaled gradients, like the weight gradients over every
 * row) are better left to the f32-sum variant.
 *
 * Preconditions on a product (checked by {@link matmulTiled}; `matmul.ts` hands over only its vec4 core):
 * the row strides and element offsets of A and B are multiples of 4, K is a multiple of 4, M is when
 * transA, N is unless transB. Any M, N or K that is not a multiple of the block is handled inside: rows
 * and columns past the matrix are clamped for loading and never stored, k past K loads zeros.
 * @module
 */
import {
  computeMain,
  grid,
  type Plan,
  storage,
  type TensorView,
  uniformLayout,
  type UniformValues,
} from "./gpu.ts";

/** The compile-time choices of a product (the same as the other matmul kernels'). */
export interface TiledVariant {
  transA: boolean;
  transB: boolean;
  bias: boolean;
  accumulate: boolean;
  /** A and B are f16 tensors (shaders/f16.ts): f16 loads and workgroup tiles, f32 products and sums. */
  half?: boolean;
  /**
   * With `half`: products and partial sums in f16 over chunks of {@link HALF_SUM_CHUNK} k, each chunk's
   * partial added to an f32 sum (twice the f32 FMA rate on GPUs; error bound in the module doc).
   */
  halfSums?: boolean;
}

/**
 * k per f16 partial sum of the `halfSums` variant (KC in the module doc): a multiple of every candidate's
 * BK, so a chunk ends at the end of a K tile.
 */
export const HALF_SUM_CHUNK = 32;

/** One tile configuration: a row of the candidate table. */
export interface TiledCandidate {
  /** Stable name, the key the tuning cache stores. */
  name: string;
  /** What this rung adds over the previous one (printed by the bench). */
  technique: string;
  /** Rows and columns of `out` per workgroup, k per workgroup-memory tile. */
  BM: number;
  BN: number;
  BK: number;
  /** Rows and columns of `out` per thread (the register tile); multiples of 4. */
  TM: number;
  TN: number;
  /** Workgroup-memory tiles: 1 = two barriers per K step, 2 = one (the next tile lands in the other). */
  buffers: 1 | 2;
}

/**
 * The candidates, a ladder from the simplest workgroup-memory kernel up, then block shapes for the tuner.
 * The default for GPU adapters without a tuning result is {@link TILED_DEFAULT}.
 */
export const TILED_CANDIDATES: readonly TiledCandidate[] = [
  {
    name: "wg32x32k8-t4x4-b1",
    technique: "block tiles in workgroup memory, 4x4 register tile per thread, vec4 global loads",
    BM: 32,
    BN: 32,
    BK: 8,
    TM: 4,
    TN: 4,
    buffers: 1,
  },
  {
    name: "wg64x64k8-t8x8-b1",
    technique: "8x8 register tile: 64 FMAs per 4 workgroup-memory vector reads",
    BM: 64,
    BN: 64,
    BK: 8,
    TM: 8,
    TN: 8,
    buffers: 1,
  },
  {
    name: "wg64x64k8-t8x8-b2",
    technique: "double buffering: next K tile prefetched into registers, one barrier per K step",
    BM: 64,
    BN: 64,
    BK: 8,
    TM: 8,
    TN: 8,
    buffers: 2,
  },
  {
    name: "wg128x64k8-t8x8-b2",
    technique: "taller block: 128 threads, B tile reused over twice the rows",
    BM: 128,
    BN: 64,
    BK: 8,
    TM: 8,
    TN: 8,
    buffers: 2,
  },
  {
    name: "wg64x128k8-t8x8-b2",
    technique: "wider block: 128 threads, A tile reused over twice the columns",
    BM: 64,
    BN: 128,
    BK: 8,
    TM: 8,
    TN: 8,
    buffers: 2,
  },
  {
    name: "wg128x128k8-t8x8-b2",
    technique: "128x128 block: 256 threads, half the global loads per FMA of 64x64",
    BM: 128,
    BN: 128,
    BK: 8,
    TM: 8,
    TN: 8,
    buffers: 2,
  },
  {
    name: "wg64x64k16-t4x8-b2",
    technique: "deeper K tile (16) with a 4x8 register tile: fewer barriers per k, 128 threads",
    BM: 64,
    BN: 64,
    BK: 16,
    TM: 4,
    TN: 8,
    buffers: 2,
  },
];

/** The candidate GPU adapters run when tuning is off or has not run: double-buffered 64x64, 8x8 per thread. */
export const TILED_DEFAULT = "wg64x64k8-t8x8-b2";

/** The candidate called `name`; throws naming the known ones otherwise. */
export function tiledCandidate(name: string): TiledCandidate {
  const c = TILED_CANDIDATES.find((c) => c.name === name);
  if (!c) {
    throw new RangeError(
      `matmul: no tiled candidate "${name}" (known: ${TILED_CANDIDATES.map((c) => c.name).join(", ")})`,
    );
  }
  return c;
}

/** Threads per workgroup and workgroup-memory bytes of a candidate (f32 tiles; the f16 variant's are half). */
export function tiledFootprint(c: TiledCandidate): { threads: number; sharedBytes: number } {
  const threads = (c.BM / c.TM) * (c.BN / c.TN);
  return { threads, sharedBytes: c.buffers * c.BK * (c.BM + c.BN) * 4 };
}

/** Whether the device's limits admit the candidate (threads per workgroup, workgroup memory). */
export function tiledFits(
  c: TiledCandidate,
  limits: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupStorageSize: number },
): boolean {
  const { threads, sharedBytes } = tiledFootprint(c);
  return threads <= limits.maxComputeInvocationsPerWorkgroup &&
    sharedBytes <= limits.maxComputeWorkgroupStorageSize;
}

/**
 * The tiled kernel's uniform block: offsets count f32 elements, dOff is the bias element of column 0;
 * `tiles` workgroups run, `tilesN` of them per block row.
 */
export const TILED_PARAMS = uniformLayout({
  M: "u32",
  N: "u32",
  K: "u32",
  lda: "u32",
  ldb: "u32",
  ldc: "u32",
  aOff: "u32",
  bOff: "u32",
  cOff: "u32",
  dOff: "u32",
  tilesN: "u32",
  tiles: "u32",
});

/**
 * The kernel. Offsets in Params count f32 elements; dOff is the bias element of column 0. The K loop is
 * the only WGSL loop (llvmpipe cuts a thread off after 65535 loop iterations, see gpu.ts), everything
 * inside it is unrolled by the filler. Thread (tx, ty) owns rows ty*TM.. and columns tx*TN.. of the
 * block. Workgroup tiles are k-major (`As[k][m]`, `Bs[k][n]`) so a thread reads its rows and columns
 * for one k as vectors.
 */
export const TILED_TEMPLATE = /* wgsl */ `{{ENABLE}}
{{PARAMS}}{{BINDINGS}}
var<workgroup> As: array<vec4<{{TILE}}>, {{A_TILE_VECS}}>;
var<workgroup> Bs: array<vec4<{{TILE}}>, {{B_TILE_VECS}}>;

fn store(m: u32, n: u32, s: f32) {
  if (m >= p.M || n >= p.N) { return; }
  let c = p.cOff + m * p.ldc + n;
  {{STORE}}
}

{{MAIN}}  let tile = wgIndex;
  if (tile >= p.tiles) { return; }
  let m0 = (tile / p.tilesN) * {{BM}}u;
  let n0 = (tile % p.tilesN) * {{BN}}u;
  let tx = li % {{THREADS_N}}u;
  let ty = li / {{THREADS_N}}u;
  let lda4 = p.lda / 4u;
  let ldb4 = p.ldb / 4u;
  let steps = (p.K + {{BK}}u - 1u) / {{BK}}u;
  {{ACC_DECL}}
  {{PREFETCH_DECL}}
  var k0 = 0u;
  {{LOAD}}
  {{STORE_TILE_0}}
  workgroupBarrier();
  for (var t = 0u; t < steps; t++) {
    let cur = (t % {{BUFFERS}}u);
    let nxt = ((t + 1u) % {{BUFFERS}}u);
    k0 = (t + 1u) * {{BK}}u;
    {{LOAD}}
    {{COMPUTE}}
    {{SYNC_BEFORE_STORE}}
    {{STORE_TILE_NEXT}}
    workgroupBarrier();
  }
  {{WRITE_OUT}}
}
`;

/** Replace every `{{NAME}}` of `template`; throws on a placeholder without a value or a value never used. */
export function fillTemplate(template: string, values: Record<string, string | number>): string {
  const used = new Set<string>();
  const text = template.replace(/\{\{([A-Z0-9_]+)\}\}/g, (_, name: string) => {
    if (!(name in values)) throw new Error(`fillTemplate: no value for placeholder {{${name}}}`);
    used.add(name);
    return String(values[name]);
  });
  const unused = Object.keys(values).filter((k) => !used.has(k));
  if (unused.length) throw new Error(`fillTemplate: values for no placeholder: ${unused.join(", ")}`);
  return text;
}

/** Throw unless `ok`, naming the candidate. */
function need(c: TiledCandidate, ok: boolean, what: string): void {
  if (!ok) throw new RangeError(`matmul candidate ${c.name}: ${what}`);
}

/** 0 .. n-1. */
const R = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * Statements that load one operand tile from storage into prefetch registers (`load`) and write those
 * registers into workgroup tile buffer `buf` (`store`).
 *
 * `alongK`: the operand's stored rows run along k (A as [M, K], B^T as [N, K]). A thread then loads a
 * group of 4 rows x 4 k (4 vectors along k) and transposes it in registers, so the tile gets 4 whole
 * vectors along m or n (no writes of single vector components, which make the GL backend's compiler
 * 10-20x slower). Otherwise each vector holds 4 rows (m or n) of one k and is written as is.
 */
function operandStatements(
  c: TiledCandidate,
  name: "a" | "b",
  alongK: boolean,
  threads: number,
  T: "f32" | "f16",
): { decl: string[]; load: string[]; store: (buf: string) => string[] } {
  const rows = name === "a" ? c.BM : c.BN;
  const tileName = name === "a" ? "As" : "Bs";
  const dim = name === "a" ? "p.M" : "p.N";
  const r0 = name === "a" ? "m0" : "n0";
  const ld4 = name === "a" ? "lda4" : "ldb4";
  const off = name === "a" ? "p.aOff" : "p.bOff";
  const tileVecs = (c.BK * rows) / 4;
  // Units of work: vectors, or groups of 4 vectors when transposing.
  const units = alongK ? tileVecs / 4 : tileVecs;
  need(
    c,
    units % threads === 0 || (alongK && units < threads),
    `${name} tile of ${units} load units does not split over ${threads} threads`,
  );
  const per = Math.max(1, units / threads);
  const guard = units < threads ? `if (li < ${units}u) ` : "";
  const decl: string[] = [], load: string[] = [], stores: Array<(buf: string) => string> = [];
  for (const r of R(per)) {
    const v = `(li + ${r * threads}u)`;
    if (alongK) {
      // group v: rows 4 * (v / (BK/4)) .. +3, k quad v % (BK/4)
      const regs = R(4).map((q) => `p${name}${r}_${q}`);
      for (const reg of regs) decl.push(`var ${reg} = vec4<${T}>(0.0);`);
      load.push(
        `${guard}{ let row = (${v} / ${c.BK / 4}u) * 4u; let k = k0 + (${v} % ${c.BK / 4}u) * 4u;` +
          ` let kc = min(k, p.K - 4u) / 4u;` +
          regs.map((reg, q) =>
            ` ${reg} = select(vec4<${T}>(0.0), vec4<${T}>(${name}[${off} / 4u + min(${r0} + row + ${q}u, ${dim} - 1u) * ${ld4} + kc]), k < p.K);`
          ).join("") + " }",
      );
      stores.push((buf) =>
        `${guard}{ let base = ${buf} * ${tileVecs}u + (${v} % ${c.BK / 4}u) * ${rows}u + ${v} / ${
          c.BK / 4
        }u;` +
        R(4).map((q) =>
          ` ${tileName}[base + ${q * (rows / 4)}u] = vec4<${T}>(${
            regs.map((reg) => `${reg}[${q}]`).join(", ")
          });`
        ).join("") + " }"
      );
    } else {
      // vector v: k row v / (rows/4), quad v % (rows/4) along m or n
      const reg = `p${name}${r}`;
      decl.push(`var ${reg} = vec4<${T}>(0.0);`);
      load.push(
        `{ let kr = ${v} / ${rows / 4}u; let q = ${v} % ${
          rows / 4
        }u; let k = k0 + kr; let i = ${r0} + q * 4u;` +
          ` let src = ${off} / 4u + min(k, p.K - 1u) * ${ld4} + min(i, ${dim} - 4u) / 4u;` +
          ` ${reg} = select(vec4<${T}>(0.0), vec4<${T}>(${name}[src]), k < p.K && i < ${dim}); }`,
      );
      stores.push((buf) => `${tileName}[${buf} * ${tileVecs}u + ${v}] = ${reg};`);
    }
  }
  return { decl, load, store: (buf) => stores.map((s) => s(buf)) };
}

/**
 * The WGSL source of `variant` with candidate `c`. Bindings: params, out, a, b, then bias when
 * `variant.bias`. Throws a RangeError if the candidate's shape is inconsistent (register tile not a
 * multiple of 4 or not dividing the block, load shares that do not split over the threads).
 */
export function tiledMatmulSource(variant: TiledVariant, c: TiledCandidate): string {
  need(c, c.TM % 4 === 0 && c.TN % 4 === 0, "register tile TM, TN must be multiples of 4");
  need(c, c.BM % c.TM === 0 && c.BN % c.TN === 0, "register tile must divide the block");
  need(c, c.BK % 4 === 0, "BK must be a multiple of 4");
  const { threads } = tiledFootprint(c);
  need(c, threads >= 1, "no threads");
  const sums16 = !!variant.halfSums;
  if (sums16 && !variant.half) throw new RangeError("matmul: halfSums needs half (f16 operands)");
  need(
    c,
    !sums16 || HALF_SUM_CHUNK % c.BK === 0,
    `BK=${c.BK} must divide the f16 sum chunk of ${HALF_SUM_CHUNK} k (halfSums)`,
  );
  const T = variant.half ? "f16" : "f32";
  const A = operandStatements(c, "a", !variant.transA, threads, T);
  const B = operandStatements(c, "b", variant.transB, threads, T);
  const tm4 = c.TM / 4, tn4 = c.TN / 4;
  const acc = (i: number, j: number) => `c${i}_${j}`;
  // halfSums: the FMAs go to f16 partials h, flushed into the f32 sums c at each chunk's end.
  const fmaInto = (i: number, j: number) => sums16 ? `h${i}_${j}` : acc(i, j);
  const V = sums16 ? "vec4<f16>" : "vec4f";
  const each = (f: (i: number, j: number) => string) => R(c.TM).flatMap((i) => R(tn4).map((j) => f(i, j)));
  const flush = each((i, j) => `${acc(i, j)} += vec4f(h${i}_${j});`);
  const compute: string[] = [];
  // A WGSL loop over the tile's k, not unrolled here: unrolled, Mesa's GL compiler takes 10-30 s per
  // variant; GPU compilers unroll a loop of constant trip count themselves.
  compute.push(`for (var kk = 0u; kk < ${c.BK}u; kk++) {`);
  compute.push(
    ...R(tm4).map((h) =>
      `  let a${h} = ${V}(As[cur * ${(c.BK * c.BM) / 4}u + kk * ${c.BM / 4}u + ty * ${tm4}u + ${h}u]);`
    ),
    ...R(tn4).map((h) =>
      `  let b${h} = ${V}(Bs[cur * ${(c.BK * c.BN) / 4}u + kk * ${c.BN / 4}u + tx * ${tn4}u + ${h}u]);`
    ),
  );
  compute.push(
    ...each((i, j) => `  ${fmaInto(i, j)} = fma(${V}(a${i >> 2}[${i & 3}]), b${j}, ${fmaInto(i, j)});`),
  );
  compute.push("}");
  if (sums16) {
    // Tile t holds k in [t*BK, (t+1)*BK): a chunk ends with every (KC/BK)-th tile.
    compute.push(
      `if ((t + 1u) % ${HALF_SUM_CHUNK / c.BK}u == 0u) {`,
      ...flush.map((f) => `  ${f}`),
      ...each((i, j) => `  h${i}_${j} = vec4<f16>(0.0);`),
      "}",
    );
  }
  // The last chunk's partial (k past K loaded zeros; a partial already flushed is +0, and adding +-0 to
  // an f32 sum that started at +0 changes no bit).
  const writeOut = (sums16 ? flush : []).concat(
    R(c.TM).flatMap((i) =>
      R(c.TN).map((j) =>
        `store(m0 + ty * ${c.TM}u + ${i}u, n0 + tx * ${c.TN}u + ${j}u, ${acc(i, j >> 2)}[${j & 3}]);`
      )
    ),
  );
  const store = variant.accumulate ? "out[c] += s" : "out[c] = s";
  return fillTemplate(TILED_TEMPLATE, {
    ENABLE: variant.half ? "enable f16;" : "",
    PARAMS: TILED_PARAMS.wgsl,
    BINDINGS: storage({
      out: "read_write array<f32>",
      a: `read array<vec4<${T}>>`,
      b: `read array<vec4<${T}>>`,
      ...(variant.bias ? { bias: "read array<f32>" } as const : {}),
    }),
    MAIN: computeMain(threads),
    TILE: T,
    STORE: `${store}${variant.bias ? " + bias[p.dOff + n]" : ""};`,
    A_TILE_VECS: (c.buffers * c.BK * c.BM) / 4,
    B_TILE_VECS: (c.buffers * c.BK * c.BN) / 4,
    THREADS_N: c.BN / c.TN,
    BM: c.BM,
    BN: c.BN,
    BK: c.BK,
    BUFFERS: c.buffers,
    ACC_DECL: R(c.TM).map((i) =>
      R(tn4).map((j) => `var ${acc(i, j)} = vec4f(0.0);${sums16 ? ` var h${i}_${j} = vec4<f16>(0.0);` : ""}`)
        .join(" ")
    ).join("\n  "),
    PREFETCH_DECL: [...A.decl, ...B.decl].join("\n  "),
    LOAD: [...A.load, ...B.load].join("\n    "),
    STORE_TILE_0: [...A.store("0u"), ...B.store("0u")].join("\n  "),
    COMPUTE: compute.join("\n    "),
    // One buffer: every thread must be done reading the tile before it is overwritten.
    SYNC_BEFORE_STORE: c.buffers === 1 ? "workgroupBarrier();" : "",
    STORE_TILE_NEXT: [...A.store("nxt"), ...B.store("nxt")].join("\n    "),
    WRITE_OUT: writeOut.join("\n  "),
  });
}

const sources = new Map<string, string>();

/** The cached source of a variant and candidate (the same string each time, so pipelines are shared). */
export function tiledSourceFor(variant: TiledVariant, c: TiledCandidate): string {
  const v = variant;
  const key = `${+v.transA}${+v.transB}${+v.bias}${+v.accumulate}${+!!v.half}${+!!v.halfSums}${c.name}`;
  let s = sources.get(key);
  if (!s) {
    s = tiledMatmulSource(variant, c);
    sources.set(key, s);
  }
  return s;
}

/** One product for the tiled kernel: resolved strides and element offsets (f32 elements). */
export interface TiledBlock {
  M: number;
  N: number;
  K: number;
  lda: number;
  ldb: number;
  ldc: number;
  aOff: number;
  bOff: number;
  cOff: number;
  dOff: number;
}

/** Throw unless `blk` meets the tiled kernel's preconditions (see the module doc). */
export function checkTiledBlock(blk: TiledBlock, variant: TiledVariant): void {
  const bad: string[] = [];
  for (const k of ["lda", "ldb", "aOff", "bOff", "K"] as const) {
    if (blk[k] % 4 !== 0) bad.push(`${k}=${blk[k]}`);
  }
  if (variant.transA && blk.M % 4 !== 0) bad.push(`M=${blk.M} (transA)`);
  if (!variant.transB && blk.N % 4 !== 0) bad.push(`N=${blk.N} (B not transposed)`);
  if (blk.K === 0) bad.push("K=0");
  if (bad.length) throw new RangeError(`matmulTiled: needs multiples of 4, got ${bad.join(", ")}`);
}

/**
 * The uniform block and workgroup count of `blk` under candidate `c`: what a dispatch needs, and what the
 * tuner rewrites when it retargets a recorded dispatch to another candidate.
 */
export function tiledLaunch(
  blk: TiledBlock,
  c: TiledCandidate,
): { params: UniformValues<typeof TILED_PARAMS.fields>; tiles: number } {
  const tilesN = Math.ceil(blk.N / c.BN), tiles = Math.ceil(blk.M / c.BM) * tilesN;
  return { params: { ...blk, tilesN, tiles }, tiles };
}

/**
 * Record one launch of the tiled kernel over `blk` with candidate `c`. `views`: out, a, b, then bias when
 * `variant.bias`. Returns the recorded dispatch's index in `plan.dispatches` (-1 when the product is
 * empty) and its uniform block, which the tuner rewrites when it retargets the dispatch.
 */
export function recordTiled(
  plan: Plan,
  views: TensorView[],
  variant: TiledVariant,
  blk: TiledBlock,
  c: TiledCandidate,
): { index: number; params: TensorView } {
  checkTiledBlock(blk, variant);
  const { params, tiles } = tiledLaunch(blk, c);
  const u = plan.params(TILED_PARAMS, params, "matmul.params");
  const label = `matmul_${variant.transA ? "T" : "N"}${variant.transB ? "T" : "N"}_tiled${
    variant.halfSums ? "_f16acc" : variant.half ? "_f16" : ""
  }`;
  const before = plan.dispatches.length;
  plan.add(tiledSourceFor(variant, c), [u, ...views], grid(plan.gpu, tiles), label);
  return { index: plan.dispatches.length > before ? before : -1, params: u };
}
