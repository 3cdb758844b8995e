/**
 * Kernels for KV-cached decoding: store keys and values into the per-layer cache, embed one new token
 * per sequence at its own position, and gather each sequence's last row.
 *
 * Cache layout: [nSeq, maxT, C] (sequence s, position t, head h in columns h*hd..).
 * @module
 */
import { packUniform, type Plan, type TensorView } from "./gpu.ts";

const WG = 256;

const INDEX = /* wgsl */ `
fn linear(wid: vec3u, nwg: vec3u, li: u32) -> u32 { return (wid.x + wid.y * nwg.x) * ${WG}u + li; }
`;

/**
 * For every sequence s and source row r < rows: cache[s, base[s] + r, :] = k (and v) of qkv row s*rows + r.
 * Prefill: rows = context length, base = 0. Decode: rows = 1, base = current length.
 */
export const KV_STORE = INDEX + /* wgsl */ `
struct Params { nSeq: u32, rows: u32, C: u32, maxT: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> kCache: array<f32>;
@group(0) @binding(2) var<storage, read_write> vCache: array<f32>;
@group(0) @binding(3) var<storage, read> qkv: array<f32>;
@group(0) @binding(4) var<storage, read> base: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = linear(wid, nwg, li);
  let total = p.nSeq * p.rows * p.C;
  if (i >= total) { return; }
  let c = i % p.C;
  let row = i / p.C;
  let s = row / p.rows;
  let r = row % p.rows;
  let t = base[s] + r;
  if (t >= p.maxT) { return; }
  let dst = (s * p.maxT + t) * p.C + c;
  kCache[dst] = qkv[row * 3u * p.C + p.C + c];
  vCache[dst] = qkv[row * 3u * p.C + 2u * p.C + c];
}
`;

/** out[s] = wte[tokens[s]] + wpe[pos[s]] for one token per sequence; wte given as one chunk [v0, v1). */
export const EMBED_AT = INDEX + /* wgsl */ `
struct Params { nSeq: u32, C: u32, v0: u32, v1: u32, first: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> pos: array<u32>;
@group(0) @binding(4) var<storage, read> wte: array<f32>;
@group(0) @binding(5) var<storage, read> wpe: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = linear(wid, nwg, li);
  if (i >= p.nSeq * p.C) { return; }
  let s = i / p.C;
  let c = i % p.C;
  let tok = tokens[s];
  var acc = 0.0;
  if (p.first == 1u) { acc = wpe[pos[s] * p.C + c]; } else { acc = out[i]; }
  if (tok >= p.v0 && tok < p.v1) { acc = acc + wte[(tok - p.v0) * p.C + c]; }
  out[i] = acc;
}
`;

/** out[s, :] = x[s*T + idx[s], :]: each sequence's row at its own index (e.g. its last context position). */
export const GATHER_ROWS = INDEX + /* wgsl */ `
struct Params { nSeq: u32, T: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> idx: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = linear(wid, nwg, li);
  if (i >= p.nSeq * p.C) { return; }
  let s = i / p.C;
  let c = i % p.C;
  out[i] = x[(s * p.T + idx[s]) * p.C + c];
}
`;

/** Record a store of k and v from `qkv` ([nSeq*rows, 3C]) into the caches at per-sequence `base` positions. */
export function kvStore(
  plan: Plan,
  kCache: TensorView,
  vCache: TensorView,
  qkv: TensorView,
  base: TensorView,
  nSeq: number,
  rows: number,
  C: number,
  maxT: number,
): void {
  const u = plan.gpu.uniform(
    packUniform([["u", nSeq], ["u", rows], ["u", C], ["u", maxT]]),
    "kvstore.params",
  );
  plan.add(KV_STORE, [u, kCache, vCache, qkv, base], Math.ceil((nSeq * rows * C) / WG), "kv_store");
}

/** Record out[s] = wte[tokens[s]] + wpe[pos[s]], one dispatch per wte chunk. */
export function embedAt(
  plan: Plan,
  out: TensorView,
  tokens: TensorView,
  pos: TensorView,
  wteChunks: { view: TensorView; v0: number; v1: number }[],
  wpe: TensorView,
  nSeq: number,
  C: number,
): void {
  wteChunks.forEach((chunk, i) => {
    const u = plan.gpu.uniform(
      packUniform([["u", nSeq], ["u", C], ["u", chunk.v0], ["u", chunk.v1], ["u", i === 0 ? 1 : 0]]),
      "embedat.params",
    );
    plan.add(EMBED_AT, [u, out, tokens, pos, chunk.view, wpe], Math.ceil((nSeq * C) / WG), "embed_at");
  });
}

/** Record out[s] = x[s*T + idx[s]] for rows of width C. */
export function gatherRows(
  plan: Plan,
  out: TensorView,
  x: TensorView,
  idx: TensorView,
  nSeq: number,
  T: number,
  C: number,
): void {
  const u = plan.gpu.uniform(packUniform([["u", nSeq], ["u", T], ["u", C]]), "gather.params");
  plan.add(GATHER_ROWS, [u, out, x, idx], Math.ceil((nSeq * C) / WG), "gather_rows");
}

/** out[r, c] = x[r * ld + offset + c] for c < C: e.g. the q block of a qkv row. */
export const COPY_COLUMNS = INDEX + /* wgsl */ `
struct Params { rows: u32, C: u32, ld: u32, offset: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = linear(wid, nwg, li);
  if (i >= p.rows * p.C) { return; }
  let r = i / p.C;
  out[i] = x[r * p.ld + p.offset + i % p.C];
}
`;

/**
 * After a decode step: history[s, step] = tokens[s]; pos[s] += 1; lens[s] = pos[s] + 1.
 * `step` is a one-element buffer the caller rewrites each step.
 */
export const ADVANCE = INDEX + /* wgsl */ `
struct Params { nSeq: u32, maxNew: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> history: array<u32>;
@group(0) @binding(2) var<storage, read_write> pos: array<u32>;
@group(0) @binding(3) var<storage, read_write> lens: array<u32>;
@group(0) @binding(4) var<storage, read> tokens: array<u32>;
@group(0) @binding(5) var<storage, read> step: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let s = linear(wid, nwg, li);
  if (s >= p.nSeq) { return; }
  if (step[0] < p.maxNew) { history[s * p.maxNew + step[0]] = tokens[s]; }
  pos[s] = pos[s] + 1u;
  lens[s] = pos[s] + 1u;
}
`;

/** Record out = the `C` columns at `offset` of each row of x (row stride ld). */
export function copyColumns(
  plan: Plan,
  out: TensorView,
  x: TensorView,
  rows: number,
  C: number,
  ld: number,
  offset: number,
): void {
  const u = plan.gpu.uniform(
    packUniform([["u", rows], ["u", C], ["u", ld], ["u", offset]]),
    "copycols.params",
  );
  plan.add(COPY_COLUMNS, [u, out, x], Math.ceil((rows * C) / WG), "copy_columns");
}

/** Record the end of a decode step: append tokens to the history and move every sequence one position on. */
export function advance(
  plan: Plan,
  history: TensorView,
  pos: TensorView,
  lens: TensorView,
  tokens: TensorView,
  step: TensorView,
  nSeq: number,
  maxNew: number,
): void {
  const u = plan.gpu.uniform(packUniform([["u", nSeq], ["u", maxNew]]), "advance.params");
  plan.add(ADVANCE, [u, history, pos, lens, tokens, step], Math.ceil(nSeq / WG), "advance");
}

/** counter[0] += 1: moves the decode step on the GPU, so several steps can share one submission. */
export const INCREMENT = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> counter: array<u32>;
@compute @workgroup_size(1)
fn main() { counter[0] = counter[0] + 1u; }
`;

/** Record counter[0] += 1. */
export function increment(plan: Plan, counter: TensorView): void {
  plan.add(INCREMENT, [counter], 1, "increment");
}
