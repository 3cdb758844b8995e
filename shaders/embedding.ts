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
import { type Gpu, packUniform, type Plan, type TensorView } from "./gpu.ts";

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

  /** Allocate buffers for batches of up to `capacity` positions. */
  constructor(gpu: Gpu, capacity: number) {
    this.#gpu = gpu;
    this.capacity = capacity;
    this.ids = gpu.tensor(capacity, "embedding.ids");
    this.offsets = gpu.tensor(capacity + 1, "embedding.offsets");
    this.positions = gpu.tensor(capacity, "embedding.positions");
    this.count = gpu.tensor(1, "embedding.count");
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

/**
 * One workgroup per row: if the row's token is in [v0, v1), out[row] = wte[tok - v0] + wpe[row % T].
 * Bindings: params, out, tokens, wte (chunk), wpe.
 */
export const EMBEDDING_FORWARD = /* wgsl */ `
struct Params { N: u32, T: u32, C: u32, v0: u32, v1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> wte: array<f32>;
@group(0) @binding(4) var<storage, read> wpe: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = wid.x + wid.y * nwg.x;
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
export const EMBEDDING_BACKWARD_WPE = /* wgsl */ `
struct Params { B: u32, T: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dwpe: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + li;
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
export const EMBEDDING_BACKWARD_WTE = /* wgsl */ `
struct Params { C: u32, v0: u32, v1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dwte: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read> offsets: array<u32>;
@group(0) @binding(5) var<storage, read> positions: array<u32>;
@group(0) @binding(6) var<storage, read> count: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let colBlocks = (p.C + ${WG - 1}u) / ${WG}u;
  let w = wid.x + wid.y * nwg.x;
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

function need(fn: string, name: string, view: TensorView, elements: number): void {
  if (view.length < elements) {
    throw new RangeError(
      `${fn}: ${name} needs ${elements} elements, ${view.label ?? "the view"} has ${view.length}`,
    );
  }
}

/**
 * Record out[b*T + t] = wte[tokens[b*T + t]] + wpe[t] for out [B*T, C]; one dispatch per wte chunk, each
 * writing the rows whose token falls in it. Every token must lie in some chunk (rows of others stay
 * unwritten).
 */
export function embeddingForward(
  plan: Plan,
  out: TensorView,
  tokens: TensorView,
  wteChunks: EmbeddingChunk[],
  wpe: TensorView,
  B: number,
  T: number,
  C: number,
): void {
  const fn = "embeddingForward";
  const N = B * T;
  need(fn, "out", out, N * C);
  need(fn, "tokens", tokens, N);
  need(fn, "wpe", wpe, T * C);
  checkChunks(fn, wteChunks, C);
  for (const { view, v0, v1 } of wteChunks) {
    const u = plan.gpu.uniform(
      packUniform([["u", N], ["u", T], ["u", C], ["u", v0], ["u", v1]]),
      "embedding.params",
    );
    plan.add(EMBEDDING_FORWARD, [u, out, tokens, view, wpe], N, "embedding_forward");
  }
}

/**
 * Record the embedding backward for dout [B*T, C]. Accumulates: dwpe[t] += sum over b of dout[b*T + t];
 * dwte[tok] += sum of dout over the positions holding tok, using the groups last uploaded to `groups`
 * (uploaded before the plan runs; the same recorded plan serves every batch).
 */
export function embeddingBackward(
  plan: Plan,
  dwteChunks: EmbeddingChunk[],
  dwpe: TensorView,
  dout: TensorView,
  groups: EmbeddingGroups,
  B: number,
  T: number,
  C: number,
): void {
  const fn = "embeddingBackward";
  const N = B * T;
  need(fn, "dout", dout, N * C);
  need(fn, "dwpe", dwpe, T * C);
  checkChunks(fn, dwteChunks, C);
  if (groups.capacity < N) {
    throw new RangeError(`${fn}: B*T=${N} positions exceed the groups' capacity ${groups.capacity}`);
  }
  const gpu = plan.gpu;
  const u = gpu.uniform(packUniform([["u", B], ["u", T], ["u", C]]), "embedding.params");
  plan.add(EMBEDDING_BACKWARD_WPE, [u, dwpe, dout], Math.ceil((T * C) / WG), "embedding_backward_wpe");
  for (const { view, v0, v1 } of dwteChunks) {
    const uc = gpu.uniform(packUniform([["u", C], ["u", v0], ["u", v1]]), "embedding.params");
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
