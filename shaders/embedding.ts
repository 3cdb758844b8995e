/**
 * Token + position embedding: out[b*T + t] = wte[tokens[b*T + t]] + wpe[t]. wte [V, C] is split by vocab
 * rows into chunks (one binding each); chunk k holds rows [v0_k, v1_k).
 *
 * Backward without atomics: dwpe[t] += sum over b of dout[b*T + t] (one thread per element, b in order),
 * and dwte[tok] += sum of dout rows at the positions holding tok. For the latter the CPU groups positions
 * by token id ({@link groupPositionsByToken}), {@link EmbeddingGroups} uploads the groups each step into
 * buffers bound once, and the GPU reduces one unique token per workgroup, summing positions in order.
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

const WG = 256;

/** A slice of wte (or of its gradient): rows [v0, v1) in a view of (v1 - v0) * C elements. */
export interface EmbeddingChunk {
  view: TensorView;
  v0: number;
  v1: number;
}

/** Positions grouped by token id, as a CSR. */
export interface TokenGroups {
  /** Unique token ids, ascending. */
  ids: Uint32Array;
  /** Group g's positions are positions[offsets[g] .. offsets[g+1]); length ids.length + 1. */
  offsets: Uint32Array;
  /** Every position, grouped by token and ascending within a group. */
  positions: Uint32Array;
}

/** Group the positions of `tokens` by token id (a counting sort; stable, so positions stay ascending). */
export function groupPositionsByToken(tokens: Uint32Array): TokenGroups {
  const n = tokens.length;
  const count = new Map<number, number>();
  for (let i = 0; i < n; i++) count.set(tokens[i], (count.get(tokens[i]) ?? 0) + 1);
  const ids = Uint32Array.from(count.keys()).sort();
  const offsets = new Uint32Array(ids.length + 1);
  const next = new Map<number, number>();
  ids.forEach((id, g) => {
    next.set(id, offsets[g]);
    offsets[g + 1] = offsets[g] + count.get(id)!;
  });
  const positions = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const at = next.get(tokens[i])!;
    positions[at] = i;
    next.set(tokens[i], at + 1);
  }
  return { ids, offsets, positions };
}

/**
 * Device buffers holding one batch's {@link TokenGroups}, sized for `capacity` positions. Bind them once
 * (in {@link embeddingBackward}) and call {@link upload} each step: the kernel reads the number of
 * unique tokens from `count`, so no bind group changes.
 */
export class EmbeddingGroups {
  /** Most positions a batch may have. */
  readonly capacity: number;
  readonly ids: TensorView;
  readonly offsets: TensorView;
  readonly positions: TensorView;
  /** [number of unique tokens] as u32. */
  readonly count: TensorView;
  readonly #gpu: Gpu;

  /** Elements of each buffer for batches of up to `capacity` positions. */
  static lengths(capacity: number): { ids: number; offsets: number; positions: number; count: number } {
    return { ids: capacity, offsets: capacity + 1, positions: capacity, count: 1 };
  }

  /** Allocate buffers for batches of up to `capacity` positions. */
  constructor(gpu: Gpu, capacity: number) {
    this.#gpu = gpu;
    this.capacity = capacity;
    const n = EmbeddingGroups.lengths(capacity);
    this.ids = gpu.tensor(n.ids, "embedding.ids");
    this.offsets = gpu.tensor(n.offsets, "embedding.offsets");
    this.positions = gpu.tensor(n.positions, "embedding.positions");
    this.count = gpu.tensor(n.count, "embedding.count");
  }

  /** Free the four buffers. */
  destroy(): void {
    for (const v of [this.ids, this.offsets, this.positions, this.count]) this.#gpu.free(v);
  }

  /** Group `tokens` (one per position, row b*T + t) and write the groups to the device. */
  upload(tokens: Uint32Array): TokenGroups {
    if (tokens.length > this.capacity) {
      throw new RangeError(
        `EmbeddingGroups.upload: ${tokens.length} tokens exceed the capacity ${this.capacity}`,
      );
    }
    const g = groupPositionsByToken(tokens);
    this.#gpu.write(this.ids, g.ids);
    this.#gpu.write(this.offsets, g.offsets);
    this.#gpu.write(this.positions, g.positions);
    this.#gpu.write(this.count, Uint32Array.of(g.ids.length));
    return g;
  }
}

/** N = B*T rows; the wte chunk holds rows [v0, v1). */
const FORWARD_PARAMS = uniformLayout({ N: "u32", T: "u32", C: "u32", v0: "u32", v1: "u32" });
const WPE_PARAMS = uniformLayout({ B: "u32", T: "u32", C: "u32" });
const WTE_PARAMS = uniformLayout({ C: "u32", v0: "u32", v1: "u32" });

/**
 * One workgroup per row: if the row's token is in [v0, v1), out[row] = wte[tok - v0] + wpe[row % T].
 * Bindings: params, out, tokens, wte (chunk), wpe.
 */
export const EMBEDDING_FORWARD = FORWARD_PARAMS.wgsl + storage({
  out: "read_write array<f32>",
  tokens: "read array<u32>",
  wte: "read array<f32>",
  wpe: "read array<f32>",
}) + computeMain(WG) + /* wgsl */ `  let row = wgIndex;
  if (row >= p.N) { return; }
  let tok = tokens[row];
  if (tok < p.v0 || tok >= p.v1) { return; }
  let e = (tok - p.v0) * p.C;
  let q = (row % p.T) * p.C;
  for (var c = li; c < p.C; c += ${WG}u) {
    out[row * p.C + c] = wte[e + c] + wpe[q + c];
  }
}
`;

/** dwpe[t*C + c] += sum over b (in order) of dout[(b*T + t)*C + c]. Bindings: params, dwpe, dout. */
export const EMBEDDING_BACKWARD_WPE = WPE_PARAMS.wgsl +
  storage({ dwpe: "read_write array<f32>", dout: "read array<f32>" }) + computeMain(WG) + /* wgsl */
  `  let i = globalIndex;
  let TC = p.T * p.C;
  if (i >= TC) { return; }
  var s = 0.0;
  for (var b = 0u; b < p.B; b++) { s += dout[b * TC + i]; }
  dwpe[i] += s;
}
`;

/**
 * One workgroup per (unique token g < count[0] whose id is in [v0, v1), block of WG columns):
 * dwte[id - v0] += sum of dout[positions[k]] for k in [offsets[g], offsets[g+1]), in that order. A thread
 * owns one column, so it loops once per occurrence of its token: within llvmpipe's loop budget
 * (LLVMPIPE_LOOP_LIMIT) for any batch of up to 65535 positions, whatever the width.
 * Bindings: params, dwte (chunk), dout, ids, offsets, positions, count.
 */
export const EMBEDDING_BACKWARD_WTE = WTE_PARAMS.wgsl + storage({
  dwte: "read_write array<f32>",
  dout: "read array<f32>",
  ids: "read array<u32>",
  offsets: "read array<u32>",
  positions: "read array<u32>",
  count: "read array<u32>",
}) + computeMain(WG) + /* wgsl */ `  let colBlocks = (p.C + ${WG - 1}u) / ${WG}u;
  let w = wgIndex;
  let g = w / colBlocks;
  let c = (w % colBlocks) * ${WG}u + li;
  if (g >= count[0] || c >= p.C) { return; }
  let id = ids[g];
  if (id < p.v0 || id >= p.v1) { return; }
  let k0 = offsets[g];
  let k1 = offsets[g + 1u];
  var s = 0.0;
  for (var k = k0; k < k1; k++) { s += dout[positions[k] * p.C + c]; }
  dwte[(id - p.v0) * p.C + c] += s;
}
`;

function checkChunks(fn: string, chunks: EmbeddingChunk[], C: number): void {
  for (const { view, v0, v1 } of chunks) {
    if (!(v1 > v0) || view.length < (v1 - v0) * C) {
      throw new RangeError(
        `${fn}: chunk [${v0}, ${v1}) needs ${(v1 - v0) * C} elements, ${
          view.label ?? "its view"
        } has ${view.length}`,
      );
    }
  }
}

/** B sequences of T positions, width C; wte given as chunks of vocabulary rows. */
interface EmbeddingShape {
  B: number;
  T: number;
  C: number;
}

/**
 * Record out[b*T + t] = wte[tokens[b*T + t]] + wpe[t] for out [B*T, C]; one dispatch per wte chunk, each
 * writing the rows whose token falls in it. Every token must lie in some chunk (rows of others stay
 * unwritten).
 */
export function embeddingForward(
  plan: Plan,
  args: EmbeddingShape & { out: TensorView; tokens: TensorView; wte: EmbeddingChunk[]; wpe: TensorView },
): void {
  const { out, tokens, wte, wpe, B, T, C } = args;
  const fn = "embeddingForward";
  const N = B * T;
  checkLengths(fn, N * C, { out });
  checkLengths(fn, N, { tokens });
  checkLengths(fn, T * C, { wpe });
  checkChunks(fn, wte, C);
  for (const { view, v0, v1 } of wte) {
    const u = plan.params(FORWARD_PARAMS, { N, T, C, v0, v1 }, "embedding.params");
    plan.add(EMBEDDING_FORWARD, [u, out, tokens, view, wpe], N, "embedding_forward");
  }
}

/**
 * Record the embedding backward for dout [B*T, C]. Accumulates: dwpe[t] += sum over b of dout[b*T + t];
 * dwte[tok] += sum of dout over the positions holding tok, using the groups last uploaded to `groups`
 * (uploaded before the plan runs; the same recorded plan serves every batch). Without `dwpe` only dwte:
 * for callers whose rows do not sit at position t (left-padded classification batches).
 */
export function embeddingBackward(
  plan: Plan,
  args: EmbeddingShape & {
    dwte: EmbeddingChunk[];
    dwpe?: TensorView;
    dout: TensorView;
    groups: EmbeddingGroups;
  },
): void {
  const { dwte, dwpe, dout, groups, B, T, C } = args;
  const fn = "embeddingBackward";
  const N = B * T;
  checkLengths(fn, N * C, { dout });
  if (dwpe) checkLengths(fn, T * C, { dwpe });
  checkChunks(fn, dwte, C);
  if (groups.capacity < N) {
    throw new RangeError(`${fn}: B*T=${N} positions exceed the groups' capacity ${groups.capacity}`);
  }
  if (dwpe) {
    const u = plan.params(WPE_PARAMS, { B, T, C }, "embedding.params");
    plan.add(EMBEDDING_BACKWARD_WPE, [u, dwpe, dout], Math.ceil((T * C) / WG), "embedding_backward_wpe");
  }
  for (const { view, v0, v1 } of dwte) {
    const uc = plan.params(WTE_PARAMS, { C, v0, v1 }, "embedding.params");
    const { ids, offsets, positions, count } = groups;
    // Up to N unique tokens, one workgroup per WG columns of each; workgroups past count[0] exit at once.
    plan.add(
      EMBEDDING_BACKWARD_WTE,
      [uc, view, dout, ids, offsets, positions, count],
      N * Math.ceil(C / WG),
      "embedding_backward_wte",
    );
  }
}
