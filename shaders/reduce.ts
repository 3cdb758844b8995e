/**
 * Global gradient norm and the clip coefficient of PyTorch's `clip_grad_norm_`, on the GPU.
 *
 * Stage 1 ({@link sumSquares}): for each tensor, `parts` workgroups each sum the squares of a fixed, strided
 * subset of its elements and write the result into one slot of a `partials` buffer. Stage 2
 * ({@link normAndClip}): one workgroup sums every slot and writes
 * `norm[0] = sqrt(total)` and `norm[1] = min(1, maxNorm / (norm[0] + 1e-6))` (1 when maxNorm <= 0).
 * Both stages use a fixed per-thread order and a fixed tree, so the result is bit-for-bit deterministic.
 *
 * Under dynamic loss scaling the tensors are the scaled gradients and stage 2 also reads the scale s:
 * `norm[1] = clip(norm[0] / s) * (1 / s)`, the unscale and PyTorch's clip coefficient in one factor (the
 * clip formula is the f32 one above, on the unscaled norm, as `clip_grad_norm_` computes it in f32 on the
 * device after `GradScaler.unscale_`), and `norm[2] = 1` when norm[0] is inf or NaN: the overflow that
 * makes AdamW skip the step, decided on the GPU so that nothing waits for the CPU.
 * @module
 */
import { computeMain, type Gpu, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";

const WG = 256;

/**
 * Elements of the `norm` buffer: [global norm, gradient coefficient, skip]. Skip is 1 when a loss-scaled
 * norm overflowed (AdamW then changes nothing), always 0 without a loss scale.
 */
export const NORM_LENGTH = 3;

/** Fewest elements a stage-1 workgroup handles before a tensor gets another workgroup. */
const ELEMENTS_PER_PART = WG * 8;
/** Most workgroups (partial slots) one tensor gets. */
const MAX_PARTS = 512;

/**
 * WGSL for `fn <name>(li: u32, v: <type>) -> <type>`: a fixed-order tree sum over a workgroup of `wg`
 * threads (wg a power of two), returned to every thread. Call it in uniform control flow.
 */
export function wgslTreeSum(name: string, type: "f32" | "vec2f" | "vec4f", wg: number): string {
  return /* wgsl */ `
var<workgroup> ${name}Buf: array<${type}, ${wg}>;
fn ${name}(li: u32, v: ${type}) -> ${type} {
  ${name}Buf[li] = v;
  workgroupBarrier();
  for (var o = ${wg / 2}u; o > 0u; o = o >> 1u) {
    if (li < o) { ${name}Buf[li] = ${name}Buf[li] + ${name}Buf[li + o]; }
    workgroupBarrier();
  }
  let r = ${name}Buf[0];
  workgroupBarrier();
  return r;
}
`;
}

/** Stage 1 writes slots [slot, slot + parts); `n` counts the kernel's elements. */
const SUM_PARAMS = uniformLayout({ n: "u32", slot: "u32", parts: "u32" });
const NORM_PARAMS = uniformLayout({ nSlots: "u32", maxNorm: "f32" });

/**
 * partials[slot + w] = sum of x[i]^2 over i = w*WG + li + k*parts*WG, for workgroup w < parts.
 * Bindings: params, partials, x.
 */
export const SUM_SQUARES = wgslTreeSum("treeSum", "f32", WG) + SUM_PARAMS.wgsl +
  storage({ partials: "read_write array<f32>", x: "read array<f32>" }) + computeMain(WG) + /* wgsl */
  `  let w = wid.x;
  var s = 0.0;
  for (var i = w * ${WG}u + li; i < p.n; i += p.parts * ${WG}u) {
    let v = x[i];
    s += v * v;
  }
  let tot = treeSum(li, s);
  if (li == 0u) { partials[p.slot + w] = tot; }
}
`;

/** Vectors one thread of {@link sumSquaresRowsSource} sums (2048 floats when they are vec4). */
const ROW_CHUNK = 512;
const ROW_WG = 64;

/**
 * Stage 1 for CPU adapters (see {@link Gpu.cpuLike}): thread t sums the squares of the contiguous
 * vectors [t*ROW_CHUNK, (t+1)*ROW_CHUNK) of x into partials[slot + t], with no workgroup reduction (a
 * barrier is a coroutine switch on llvmpipe). `w` = 4 reads x as vec4 (n a multiple of 4); `p.n` counts
 * w-wide vectors. Bindings: params, partials, x.
 */
export function sumSquaresRowsSource(w: 1 | 4): string {
  const t = w === 4 ? "vec4f" : "f32";
  return SUM_PARAMS.wgsl + storage({ partials: "read_write array<f32>", x: `read array<${t}>` }) +
    computeMain(ROW_WG) + /* wgsl */ `  let t = globalIndex;
  if (t >= p.parts) { return; }
  let end = min((t + 1u) * ${ROW_CHUNK}u, p.n);
  var s = ${w === 4 ? "vec4f(0.0)" : "0.0"};
  for (var i = t * ${ROW_CHUNK}u; i < end; i++) {
    let v = x[i];
    s += v * v;
  }
  partials[p.slot + t] = ${w === 4 ? "(s.x + s.y) + (s.z + s.w)" : "s"};
}
`;
}
const SUM_SQUARES_ROWS = [sumSquaresRowsSource(1), sumSquaresRowsSource(4)];

/**
 * norm[0] = sqrt(sum of partials[0..nSlots)); norm[1] = the gradients' coefficient; norm[2] = skip. One
 * workgroup. `scaled`: the partials are of loss-scaled gradients and `lossScale` = [s, 1 / s] (1 / s
 * rounded once on the CPU, as GradScaler's inv_scale). Bindings: params, norm, partials[, lossScale].
 */
function normAndClipSource(scaled: boolean): string {
  // clip_grad_norm_: coef = max_norm / (norm + 1e-6), clamped to at most 1.
  const clip = (norm: string) => `select(1.0, min(1.0, p.maxNorm / (${norm} + 1e-6)), p.maxNorm > 0.0)`;
  const buffers = { norm: "read_write array<f32>", partials: "read array<f32>" } as const;
  const write = scaled
    ? /* wgsl */ `norm[1] = ${clip("total / lossScale[0]")} * lossScale[1];
    // inf or NaN, on the bits (no fast-math assumption can drop the test).
    norm[2] = select(0.0, 1.0, (bitcast<u32>(total) & 0x7f800000u) == 0x7f800000u);`
    : `norm[1] = ${clip("total")};
    norm[2] = 0.0;`;
  return wgslTreeSum("treeSum", "f32", WG) + NORM_PARAMS.wgsl +
    storage(scaled ? { ...buffers, lossScale: "read array<f32>" } : buffers) + computeMain(WG) + /* wgsl */
    `  var s = 0.0;
  for (var i = li; i < p.nSlots; i += ${WG}u) { s += partials[i]; }
  let total = sqrt(treeSum(li, s));
  if (li == 0u) {
    norm[0] = total;
    ${write}
  }
}
`;
}
/** Stage 2 without and with a loss scale. */
export const NORM_AND_CLIP = normAndClipSource(false);
const NORM_AND_CLIP_SCALED = normAndClipSource(true);

/** Which stage-1 kernel: workgroups with tree sums (GPUs) or one chunk per thread (CPU adapters). */
export type RowKernels = "workgroup" | "thread";

/** Partial slots {@link sumSquares} uses for a tensor of `n` elements. */
export function partsFor(n: number, rows: RowKernels = "workgroup"): number {
  if (rows === "thread") return Math.max(1, Math.ceil(n / (n % 4 === 0 ? 4 : 1) / ROW_CHUNK));
  return Math.min(MAX_PARTS, Math.max(1, Math.ceil(n / ELEMENTS_PER_PART)));
}

/** The tensors and slots of one {@link sumSquares}. */
export interface SumSquaresArgs {
  partials: TensorView;
  x: TensorView;
  /** First partial slot written. */
  slot: number;
  /** Elements of x summed (default: all). */
  n?: number;
  /** Default: one chunk per thread on CPU adapters, workgroups with tree sums on GPUs. */
  rows?: RowKernels;
  /** Slots used; default {@link partsFor}(n); the same `parts` always gives the same bits. */
  parts?: number;
}

/** Record partials[slot .. slot+parts) = strided partial sums of x[i]^2 over the first `n` elements. */
export function sumSquares(plan: Plan, args: SumSquaresArgs): void {
  const { partials, x, slot, n = x.length } = args;
  const rows = args.rows ?? (plan.gpu.cpuLike ? "thread" : "workgroup");
  const parts = args.parts ?? partsFor(n, rows);
  if (n > x.length) throw new RangeError(`sumSquares: n=${n} exceeds ${x.label ?? "tensor"} of ${x.length}`);
  if (slot + parts > partials.length) {
    throw new RangeError(
      `sumSquares: slots [${slot}, ${slot + parts}) exceed the partials buffer of ${partials.length}`,
    );
  }
  if (rows === "thread") {
    const w = n % 4 === 0 ? 4 : 1;
    if (parts * ROW_CHUNK * w < n) {
      throw new RangeError(`sumSquares: ${parts} parts of ${ROW_CHUNK * w} elements cannot cover n=${n}`);
    }
    const u = plan.params(SUM_PARAMS, { n: n / w, slot, parts }, "reduce.params");
    const code = SUM_SQUARES_ROWS[w === 4 ? 1 : 0];
    plan.add(code, [u, partials, x], Math.ceil(parts / ROW_WG), "sum_squares_rows");
    return;
  }
  const u = plan.params(SUM_PARAMS, { n, slot, parts }, "reduce.params");
  plan.add(SUM_SQUARES, [u, partials, x], [parts, 1, 1], "sum_squares");
}

/**
 * Record norm[0] = sqrt(sum of partials[0..nSlots)) and norm[1] = min(1, maxNorm / (norm[0] + 1e-6)),
 * or norm[1] = 1 when maxNorm <= 0 (no clipping); norm[2] = 0. With `lossScale` ([s, 1 / s], rewritten
 * by the caller between runs): norm[1] = that coefficient of norm[0] / s, times 1 / s, and norm[2] = 1
 * when norm[0] is not finite.
 */
export function normAndClip(
  plan: Plan,
  { norm, partials, nSlots, maxNorm, lossScale }: {
    norm: TensorView;
    partials: TensorView;
    nSlots: number;
    maxNorm: number;
    lossScale?: TensorView;
  },
): void {
  if (norm.length < NORM_LENGTH) {
    throw new RangeError(`normAndClip: norm needs ${NORM_LENGTH} elements, has ${norm.length}`);
  }
  if (nSlots > partials.length) {
    throw new RangeError(`normAndClip: nSlots=${nSlots} exceeds the partials buffer of ${partials.length}`);
  }
  if (lossScale && lossScale.length < 2) {
    throw new RangeError(`normAndClip: lossScale needs 2 elements (s, 1 / s), has ${lossScale.length}`);
  }
  const u = plan.params(NORM_PARAMS, { nSlots, maxNorm }, "reduce.params");
  if (lossScale) plan.add(NORM_AND_CLIP_SCALED, [u, norm, partials, lossScale], [1, 1, 1], "norm_and_clip");
  else plan.add(NORM_AND_CLIP, [u, norm, partials], [1, 1, 1], "norm_and_clip");
}

/** Options of a {@link GradNorm}. */
export interface GradNormOptions {
  /** Default: one chunk per thread on CPU adapters, workgroups with tree sums on GPUs. */
  rows?: RowKernels;
  /** The tensors are loss-scaled gradients; this buffer holds [s, 1 / s] ({@link normAndClip}). */
  lossScale?: TensorView;
}

/**
 * The global L2 norm of a list of tensors and the clip coefficient, recorded into a plan once and
 * recomputed each time the plan runs. `output` = [norm, coefficient, skip] ({@link NORM_LENGTH} floats),
 * which AdamW reads on the GPU.
 */
export class GradNorm {
  /** [global norm, gradient coefficient, skip]. */
  readonly output: TensorView;
  /** One slot per stage-1 workgroup, tensors in the order given. */
  readonly partials: TensorView;

  /** Allocate the buffers and record both stages into `plan`. `maxNorm <= 0` disables clipping. */
  constructor(plan: Plan, tensors: TensorView[], maxNorm: number, options: GradNormOptions = {}) {
    const gpu: Gpu = plan.gpu;
    const rows = options.rows ?? (gpu.cpuLike ? "thread" : "workgroup");
    const parts = tensors.map((t) => partsFor(t.length, rows));
    const nSlots = parts.reduce((a, b) => a + b, 0);
    this.partials = gpu.tensor(Math.max(1, nSlots), "gradnorm.partials");
    this.output = gpu.tensor(NORM_LENGTH, "gradnorm.output");
    let slot = 0;
    tensors.forEach((t, i) => {
      sumSquares(plan, { partials: this.partials, x: t, slot, rows, parts: parts[i] });
      slot += parts[i];
    });
    normAndClip(plan, {
      norm: this.output,
      partials: this.partials,
      nSlots,
      maxNorm,
      lossScale: options.lossScale,
    });
  }
}
