/**
 * Fused softmax + cross-entropy over the vocabulary for a chunk of R rows of logits [R, V] (row stride
 * `ld` >= V, default V: a stride padded to a multiple of 4 lets the LM head's backward matmuls read
 * dlogits as vectors).
 * Forward yields per row lse = logsumexp(logits) and lp = logits[target] - lse; backward turns a per-row
 * coefficient g = dLoss/dlp into dlogits = g * (onehot(target) - softmax), in place over the chunk. The
 * probabilities never leave the GPU.
 *
 * lp, lse, targets and g are [N_total] buffers for the whole batch; a chunk's rows start at `rowOffset`
 * (an element index passed as a uniform). Targets must be token ids < V.
 * @module
 */
import {
  checkLengths,
  computeMain,
  LLVMPIPE_LOOP_LIMIT,
  type Plan,
  storage,
  type TensorView,
  uniformLayout,
} from "./gpu.ts";

const WG = 256;

/** R rows of V logits, row stride ld; the chunk's first row is row `rowOffset` of the batch. */
const PARAMS = uniformLayout({ R: "u32", V: "u32", rowOffset: "u32", ld: "u32" });
/** Bindings of both forward kernels; logits as `logitsType`. */
const forwardBindings = (logitsType: string) =>
  storage({
    lp: "read_write array<f32>",
    lse: "read_write array<f32>",
    logits: `read array<${logitsType}>`,
    targets: "read array<u32>",
  });
/** Rows per workgroup of the one-row-per-thread forward kernel (CPU adapters). */
const ROW_WG = 64;

/**
 * lse[rowOffset + r] and lp[rowOffset + r] for each row r of the chunk; one workgroup per row.
 * Bindings: params, lp, lse, logits, targets.
 *
 * Each thread keeps an online (max m, sum s of exp(x - m)) over its strided columns, so the logits are
 * read once; the 256 partial pairs are then merged by a fixed-order tree:
 * m = max(m1, m2), s = s1 exp(m1 - m) + s2 exp(m2 - m). Every exponent is <= 0, so nothing overflows.
 */
export const CROSS_ENTROPY_FORWARD = PARAMS.wgsl + forwardBindings("f32") + /* wgsl */ `
var<workgroup> redM: array<f32, ${WG}>;
var<workgroup> redS: array<f32, ${WG}>;

${computeMain(WG)}  let r = wgIndex;
  if (r >= p.R) { return; }
  let base = r * p.ld;
  // -3e38 stands for -inf: a thread with no columns contributes s = 0 and any exp(-3e38 - x) is 0.
  var m = -3.0e38;
  var s = 0.0;
  for (var j = li; j < p.V; j += ${WG}u) {
    let x = logits[base + j];
    if (x > m) {
      s = s * exp(m - x) + 1.0;
      m = x;
    } else {
      s += exp(x - m);
    }
  }
  redM[li] = m;
  redS[li] = s;
  workgroupBarrier();
  for (var o = ${WG / 2}u; o > 0u; o = o >> 1u) {
    if (li < o) {
      let m1 = redM[li];
      let m2 = redM[li + o];
      let mm = max(m1, m2);
      redS[li] = redS[li] * exp(m1 - mm) + redS[li + o] * exp(m2 - mm);
      redM[li] = mm;
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    let row = p.rowOffset + r;
    let l = redM[0] + log(redS[0]);
    lse[row] = l;
    lp[row] = logits[base + targets[row]] - l;
  }
}
`;

/**
 * In place: logits[r, j] <- g[row] * ((j == target[row]) - exp(logits[r, j] - lse[row])), row = rowOffset + r;
 * rows with g = 0 become exact zeros. One workgroup per row. Bindings: params, logits, lse, targets, g.
 */
export const CROSS_ENTROPY_BACKWARD = PARAMS.wgsl + storage({
  logits: "read_write array<f32>",
  lse: "read array<f32>",
  targets: "read array<u32>",
  g: "read array<f32>",
}) + computeMain(WG) + /* wgsl */ `  let r = wgIndex;
  if (r >= p.R) { return; }
  let base = r * p.ld;
  let row = p.rowOffset + r;
  let gr = g[row];
  let l = lse[row];
  let t = targets[row];
  for (var j = li; j < p.V; j += ${WG}u) {
    var d = 0.0;
    if (gr != 0.0) {
      d = gr * (select(0.0, 1.0, j == t) - exp(logits[base + j] - l));
    }
    logits[base + j] = d;
  }
}
`;

/**
 * The forward pass with one row per thread, for CPU adapters (see {@link Gpu.cpuLike}): the row's max,
 * then the sum of exp(x - max), each a pass over the row as 16-byte vectors (the row stride must be a
 * multiple of 4; columns past V in the last vector are masked out). No workgroup reduction, one exp per
 * logit, and ceil(V/4) iterations per pass, which keeps the whole thread within llvmpipe's loop budget
 * ({@link LLVMPIPE_LOOP_LIMIT}). Bindings as {@link CROSS_ENTROPY_FORWARD}, logits as vec4.
 */
export const CROSS_ENTROPY_FORWARD_ROWS = PARAMS.wgsl + forwardBindings("vec4f") + computeMain(ROW_WG) +
  /* wgsl */ `  let r = globalIndex;
  if (r >= p.R) { return; }
  let base = r * (p.ld / 4u);
  let n = (p.V + 3u) / 4u;
  let col = vec4u(0u, 1u, 2u, 3u);
  var m4 = vec4f(-3.0e38);
  for (var j = 0u; j < n; j++) {
    m4 = max(m4, select(vec4f(-3.0e38), logits[base + j], col + 4u * j < vec4u(p.V)));
  }
  let m = max(max(m4.x, m4.y), max(m4.z, m4.w));
  var s4 = vec4f(0.0);
  for (var j = 0u; j < n; j++) {
    s4 += select(vec4f(0.0), exp(logits[base + j] - m), col + 4u * j < vec4u(p.V));
  }
  let row = p.rowOffset + r;
  let t = targets[row];
  let l = m + log((s4.x + s4.y) + (s4.z + s4.w));
  lse[row] = l;
  lp[row] = logits[base + t / 4u][t % 4u] - l;
}
`;

/** Loop iterations of one thread of {@link CROSS_ENTROPY_FORWARD_ROWS} for a row of V logits. */
function rowKernelIterations(V: number): number {
  return 2 * Math.ceil(V / 4);
}

/** Throws unless the chunk's logits and the [N_total] row buffers are large enough. */
function checkSizes(
  where: string,
  logits: TensorView,
  rowBuffers: Record<string, TensorView>,
  R: number,
  V: number,
  rowOffset: number,
  ld: number,
): void {
  for (const [name, n] of [["R", R], ["V", V], ["rowOffset", rowOffset], ["ld", ld]] as const) {
    if (!Number.isInteger(n) || n < 0) throw new Error(`${where}: ${name} must be an integer >= 0, got ${n}`);
  }
  if (ld < V) throw new Error(`${where}: row stride ld=${ld} is shorter than V=${V}`);
  const need = R === 0 ? 0 : (R - 1) * ld + V;
  if (logits.length < need) {
    throw new Error(
      `${where}: logits need (R-1)*ld + V = ${need} elements (R=${R}, V=${V}, ld=${ld}), the view has ${logits.length}`,
    );
  }
  checkLengths(where, rowOffset + R, rowBuffers);
}

/** A chunk of R rows of logits [R, V] (row stride ld >= V, default V), rows rowOffset.. of the batch. */
export interface LogitsChunk {
  logits: TensorView;
  /** u32 [N_total]. */
  targets: TensorView;
  /** [N_total]: forward writes it, backward reads it. */
  lse: TensorView;
  R: number;
  V: number;
  rowOffset?: number;
  ld?: number;
}

/**
 * Record, for each row r < R of the chunk: lse[rowOffset + r] = logsumexp(logits[r, :]) and
 * lp[rowOffset + r] = logits[r, targets[rowOffset + r]] - lse[rowOffset + r].
 */
export function crossEntropyForward(
  plan: Plan,
  args: LogitsChunk & { lp: TensorView; rows?: "workgroup" | "thread" },
): void {
  const { lp, lse, logits, targets, R, V, rowOffset = 0, ld = V } = args;
  const rows = args.rows ?? (plan.gpu.cpuLike ? "thread" : "workgroup");
  checkSizes("crossEntropyForward", logits, { lp, lse, targets }, R, V, rowOffset, ld);
  const u = plan.params(PARAMS, { R, V, rowOffset, ld }, "crossentropy.params");
  const views = [u, lp, lse, logits, targets];
  // The row kernel reads vectors, so it needs an aligned stride, and must stay within llvmpipe's loop
  // budget; otherwise the workgroup kernel serves every adapter.
  if (rows === "thread" && ld % 4 === 0 && rowKernelIterations(V) < LLVMPIPE_LOOP_LIMIT) {
    plan.add(CROSS_ENTROPY_FORWARD_ROWS, views, Math.ceil(R / ROW_WG), "crossentropy_forward_rows");
  } else plan.add(CROSS_ENTROPY_FORWARD, views, R, "crossentropy_forward");
}

/**
 * Record the backward pass over the chunk, in place: `logits` becomes dlogits with
 * dlogits[r, j] = g[row] * ((j == targets[row]) - exp(logits[r, j] - lse[row])), row = rowOffset + r,
 * where g[row] = dLoss/dlp[row] and `lse` is what {@link crossEntropyForward} wrote. Rows with g = 0 get 0.
 */
export function crossEntropyBackward(plan: Plan, args: LogitsChunk & { g: TensorView }): void {
  const { logits, lse, targets, g, R, V, rowOffset = 0, ld = V } = args;
  checkSizes("crossEntropyBackward", logits, { lse, targets, g }, R, V, rowOffset, ld);
  const u = plan.params(PARAMS, { R, V, rowOffset, ld }, "crossentropy.params");
  plan.add(CROSS_ENTROPY_BACKWARD, [u, logits, lse, targets, g], R, "crossentropy_backward");
}
