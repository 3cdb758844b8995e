/**
 * Causal multi-head self-attention, FlashAttention style: the T×T score matrix is never stored.
 *
 * Layouts (docs/engine.md): `qkv` [B*T, 3C] holds q | k | v per row, head h in columns h*hd .. h*hd+hd-1
 * of each block; `y` [B*T, C]; `lse` [B*H*T] at (b*H + h)*T + t holds the row's log-sum-exp of the scaled
 * scores s_ij = q_i·k_j / sqrt(hd), j ≤ i, which is all backward needs to rebuild P = exp(S - lse).
 *
 * One thread owns one row (a query, or a key for dk/dv) of one (b, h) and keeps it, and its output, in
 * hd/4 named vec4 registers generated for the head size; the other side's rows are read straight from
 * the storage buffers (every thread of a workgroup reads the same row at the same time, so caches serve
 * it). No arrays: Mesa's llvmpipe (lavapipe) takes time roughly quadratic in an array's size to compile
 * a non-unrolled loop that indexes it, so workgroup tiles of K/V made the hd=64 kernels take minutes
 * to compile; this form compiles in about a second. Every sum runs in a fixed order, so results are
 * bit-for-bit deterministic, and no output element is written by two threads. Head sizes must be
 * multiples of 4 (vec4 loads) and at most 256.
 * @module
 */
import { packUniform, type Plan, type TensorView } from "../model/gpu.ts";

/** Threads per workgroup: rows of one (b, h) in the training kernels, keys of a tile in decode. */
const WG = 64;
/** Threads per workgroup of the elementwise D pass. */
const WG_D = 256;
/** Largest head size: the decode kernel gives each vec4 of a head row at least one thread. */
const MAX_HD = 4 * WG;
/** A finite stand-in for -infinity (WGSL has no infinity literal); exp(NEG - m) underflows to 0. */
const NEG = "-3.0e38";

/** Check the shape and the bound views; returns the head size. */
function headSize(where: string, C: number, H: number, views: Array<[string, TensorView, number]>): number {
  const hd = C / H;
  if (!(H > 0 && C > 0 && Number.isInteger(hd) && hd % 4 === 0 && hd <= MAX_HD)) {
    throw new Error(`${where}: C=${C} must be H=${H} times a head size that is a multiple of 4, ≤ ${MAX_HD}`);
  }
  for (const [name, v, need] of views) {
    if (v.length < need) {
      throw new Error(`${where}: ${name} needs ${need} elements, the view has ${v.length}`);
    }
  }
  return hd;
}

/** `f(c)` for each vec4 c < V of a head row, joined: one generated statement or term per register. */
function each(V: number, f: (c: number) => string, sep = "\n  "): string {
  return Array.from({ length: V }, (_, c) => f(c)).join(sep);
}

/** Σ_c dot(reg_c, buf[at + c]): an hd-wide dot product of a register row with a row in a buffer. */
function dotRow(V: number, reg: string, buf: string, at: string): string {
  return each(V, (c) => `dot(${reg}${c}, ${buf}[${at} + ${c}u])`, " + ");
}

/**
 * Params of the training kernels; sizes in vec4 units: C4 = C/4, V = hd/4. `blocks` = workgroups used.
 * Row r of qkv starts at vec4 r*3*C4 (q, then k at + C4, v at + 2*C4), of y and dy at r*C4. A workgroup
 * takes WG consecutive rows of one (b, h); threads past T return at once (there are no barriers).
 */
const HEADER = /* wgsl */ `
struct Params { B: u32, T: u32, C4: u32, H: u32, blocks: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
const WG: u32 = ${WG}u;
`;

/** Shared start of the training kernels: this thread's row t of (b, h), `base` = vec4 of row 0, head h. */
function rowOf(V: number): string {
  return /* wgsl */ `
const V: u32 = ${V}u;
struct Row { b: u32, h: u32, bh: u32, t: u32, base: u32, ok: bool }
fn rowOf(wid: vec3u, nwg: vec3u, li: u32) -> Row {
  let blk = wid.x + wid.y * nwg.x;
  let nb = (p.T + WG - 1u) / WG;
  let bh = blk / nb;
  let t = (blk % nb) * WG + li;
  let b = bh / p.H;
  let h = bh % p.H;
  return Row(b, h, bh, t, b * p.T * 3u * p.C4 + h * V, blk < p.blocks && t < p.T);
}
`;
}

/**
 * Forward: thread = query t. Keys j ≤ t four at a time with an online softmax (running max m, sum l,
 * unnormalised output a): m' = max(m, s), a = a e^(m-m') + Σ e^(s_j-m') v_j, l likewise.
 * Bindings: params, y, lse, qkv.
 */
function forwardSource(HD: number): string {
  const V = HD / 4;
  const key = (n: number) => `let r${n} = base + min(j + ${n}u, r.t) * S + C4;`;
  return HEADER + rowOf(V) + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> y: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read> qkv: array<vec4f>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = rowOf(wid, nwg, li);
  if (!r.ok) { return; }
  let C4 = p.C4;
  let S = 3u * C4;
  let base = r.base;
  // q is pre-multiplied by the scale so a score is one dot product.
  let rq = base + r.t * S;
  ${each(V, (c) => `let q${c} = qkv[rq + ${c}u] * p.scale;`)}
  ${each(V, (c) => `var a${c} = vec4f(0.0);`)}
  var m: f32 = ${NEG};
  var l: f32 = 0.0;
  for (var j = 0u; j <= r.t; j += 4u) {
    // k rows of keys j .. j+3 (clamped to t to stay in the sequence; the extra ones are masked).
    ${each(4, key, "\n    ")}
    var sc = vec4f(${dotRow(V, "q", "qkv", "r0")},
      ${dotRow(V, "q", "qkv", "r1")},
      ${dotRow(V, "q", "qkv", "r2")},
      ${dotRow(V, "q", "qkv", "r3")});
    sc = select(vec4f(${NEG}), sc, vec4u(j, j + 1u, j + 2u, j + 3u) <= vec4u(r.t));
    let mt = max(m, max(max(sc.x, sc.y), max(sc.z, sc.w)));
    let corr = exp(m - mt);
    let pr = exp(sc - vec4f(mt));
    l = l * corr + (pr.x + pr.y + pr.z + pr.w);
    // v of a key sits C4 after its k.
    ${
    each(
      V,
      (c) =>
        `a${c} = a${c} * corr + pr.x * qkv[r0 + C4 + ${c}u] + pr.y * qkv[r1 + C4 + ${c}u] + pr.z * qkv[r2 + C4 + ${c}u] + pr.w * qkv[r3 + C4 + ${c}u];`,
      "\n    ",
    )
  }
    m = mt;
  }
  let ry = (r.b * p.T + r.t) * C4 + r.h * V;
  let inv = 1.0 / l;
  ${each(V, (c) => `y[ry + ${c}u] = a${c} * inv;`)}
  lse[r.bh * p.T + r.t] = m + log(l);
}
`;
}

/**
 * Backward pass 1, elementwise: D_i = dy_i · y_i per (b, t, h), staged as vec4(D, 0, 0, 0) in the first
 * four dq columns of head h; pass 2 only reads it there and pass 3 reads it before overwriting them.
 * Bindings: params, dqkv, dy, y.
 */
function deltaSource(HD: number): string {
  return HEADER + /* wgsl */ `
const V: u32 = ${HD / 4}u;
@group(0) @binding(1) var<storage, read_write> dqkv: array<vec4f>;
@group(0) @binding(2) var<storage, read> dy: array<vec4f>;
@group(0) @binding(3) var<storage, read> y: array<vec4f>;
@compute @workgroup_size(${WG_D})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * ${WG_D}u + li;
  if (i >= p.B * p.T * p.H) { return; }
  let row = i / p.H;
  let h = i % p.H;
  let at = row * p.C4 + h * V;
  var dsum: f32 = 0.0;
  for (var c = 0u; c < V; c++) { dsum += dot(dy[at + c], y[at + c]); }
  dqkv[row * 3u * p.C4 + h * V] = vec4f(dsum, 0.0, 0.0, 0.0);
}
`;
}

/**
 * Backward pass 2: thread = key j; queries i ≥ j. With P_ij = exp(s_ij - lse_i), dP_ij = dy_i·v_j and
 * dS = P (dP - D): dv_j = Σ_i P_ij dy_i, dk_j = scale Σ_i dS_ij q_i. Reads D_i from the dq slots, which
 * this pass does not write. Bindings: params, dqkv, dy, qkv, lse.
 */
function keySource(HD: number): string {
  const V = HD / 4;
  return HEADER + rowOf(V) + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> dqkv: array<vec4f>;
@group(0) @binding(2) var<storage, read> dy: array<vec4f>;
@group(0) @binding(3) var<storage, read> qkv: array<vec4f>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = rowOf(wid, nwg, li);
  if (!r.ok) { return; }
  let C4 = p.C4;
  let S = 3u * C4;
  let rk = r.base + r.t * S + C4;
  // k is pre-multiplied by the scale so a score is one dot product.
  ${each(V, (c) => `let k${c} = qkv[rk + ${c}u] * p.scale;`)}
  ${each(V, (c) => `let v${c} = qkv[rk + C4 + ${c}u];`)}
  ${each(V, (c) => `var dk${c} = vec4f(0.0);`)}
  ${each(V, (c) => `var dv${c} = vec4f(0.0);`)}
  let gBase = r.b * p.T * C4 + r.h * V;
  for (var i = r.t; i < p.T; i++) {
    let rq = r.base + i * S;
    let rg = gBase + i * C4;
    let pr = exp((${dotRow(V, "k", "qkv", "rq")}) - lse[r.bh * p.T + i]);
    let dp = ${dotRow(V, "v", "dy", "rg")};
    let dsc = pr * (dp - dqkv[rq].x);
    ${each(V, (c) => `dv${c} += pr * dy[rg + ${c}u];`, "\n    ")}
    ${each(V, (c) => `dk${c} += dsc * qkv[rq + ${c}u];`, "\n    ")}
  }
  ${each(V, (c) => `dqkv[rk + ${c}u] = dk${c} * p.scale;`)}
  ${each(V, (c) => `dqkv[rk + C4 + ${c}u] = dv${c};`)}
}
`;
}

/**
 * Backward pass 3: thread = query i; keys j ≤ i: dq_i = scale Σ_j dS_ij k_j. Reads D_i from its own dq
 * slot, then overwrites it (no other thread touches it). Bindings: params, dqkv, dy, qkv, lse.
 */
function querySource(HD: number): string {
  const V = HD / 4;
  return HEADER + rowOf(V) + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> dqkv: array<vec4f>;
@group(0) @binding(2) var<storage, read> dy: array<vec4f>;
@group(0) @binding(3) var<storage, read> qkv: array<vec4f>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = rowOf(wid, nwg, li);
  if (!r.ok) { return; }
  let C4 = p.C4;
  let S = 3u * C4;
  let rq = r.base + r.t * S;
  let rg = (r.b * p.T + r.t) * C4 + r.h * V;
  ${each(V, (c) => `let q${c} = qkv[rq + ${c}u] * p.scale;`)}
  ${each(V, (c) => `let g${c} = dy[rg + ${c}u];`)}
  ${each(V, (c) => `var dq${c} = vec4f(0.0);`)}
  let lrow = lse[r.bh * p.T + r.t];
  let drow = dqkv[rq].x;
  for (var j = 0u; j <= r.t; j++) {
    let rk = r.base + j * S + C4;
    let sc = ${dotRow(V, "q", "qkv", "rk")};
    let dp = ${dotRow(V, "g", "qkv", "rk + C4")};
    let dsc = exp(sc - lrow) * (dp - drow);
    ${each(V, (c) => `dq${c} += dsc * qkv[rk + ${c}u];`, "\n    ")}
  }
  ${each(V, (c) => `dqkv[rq + ${c}u] = dq${c} * p.scale;`)}
}
`;
}

/**
 * Decode: one workgroup per (sequence, head); keys in tiles of WG, one score per thread. All threads
 * redo the tile's max and sum in the same order (so m and l agree everywhere); thread (c, g) owns
 * output vec4 c over the keys g, g + G, ... of each tile, and the G partials are summed in order at
 * the end. Bindings: params, y, q, kCache, vCache, lengths.
 */
function decodeSource(HD: number): string {
  const V = HD / 4, G = Math.floor(WG / V);
  return /* wgsl */ `
struct Params { nSeq: u32, C4: u32, H: u32, maxT: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
const V: u32 = ${V}u;
const G: u32 = ${G}u;
@group(0) @binding(1) var<storage, read_write> y: array<vec4f>;
@group(0) @binding(2) var<storage, read> q: array<vec4f>;
@group(0) @binding(3) var<storage, read> kCache: array<vec4f>;
@group(0) @binding(4) var<storage, read> vCache: array<vec4f>;
@group(0) @binding(5) var<storage, read> lengths: array<u32>;
var<workgroup> qs: array<vec4f, V>;
var<workgroup> sp: array<f32, ${WG}>;
var<workgroup> pw: array<f32, ${WG}>;
var<workgroup> part: array<vec4f, ${WG}>;
var<workgroup> lenw: u32;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let blk = wid.x + wid.y * nwg.x;
  if (blk >= p.nSeq * p.H) { return; }
  let s = blk / p.H;
  let h = blk % p.H;
  for (var c = li; c < V; c += ${WG}u) { qs[c] = q[s * p.C4 + h * V + c] * p.scale; }
  if (li == 0u) { lenw = min(lengths[s], p.maxT); }
  // The loop bound must be provably uniform for the barriers inside.
  let len = workgroupUniformLoad(&lenw);
  let c = li % V;
  let g = li / V;
  var m: f32 = ${NEG};
  var l: f32 = 0.0;
  var a = vec4f(0.0);
  for (var k0 = 0u; k0 < len; k0 += ${WG}u) {
    let j = k0 + li;
    var sc: f32 = ${NEG};
    if (j < len) {
      let at = (s * p.maxT + j) * p.C4 + h * V;
      sc = 0.0;
      for (var d = 0u; d < V; d++) { sc += dot(qs[d], kCache[at + d]); }
    }
    sp[li] = sc;
    workgroupBarrier();
    var mt = m;
    for (var r = 0u; r < ${WG}u; r++) { mt = max(mt, sp[r]); }
    pw[li] = exp(sc - mt);
    workgroupBarrier();
    let corr = exp(m - mt);
    var tileSum: f32 = 0.0;
    for (var r = 0u; r < ${WG}u; r++) { tileSum += pw[r]; }
    l = l * corr + tileSum;
    a *= corr;
    if (g < G) {
      for (var r = g; r < ${WG}u && k0 + r < len; r += G) {
        a += pw[r] * vCache[(s * p.maxT + k0 + r) * p.C4 + h * V + c];
      }
    }
    m = mt;
    // sp and pw are rewritten by the next tile only after everyone has read them.
    workgroupBarrier();
  }
  part[li] = a;
  workgroupBarrier();
  for (var cc = li; cc < V; cc += ${WG}u) {
    var num = vec4f(0.0);
    for (var gg = 0u; gg < G; gg++) { num += part[gg * V + cc]; }
    // An empty cache (length 0) attends to nothing: output 0 rather than 0/0.
    y[s * p.C4 + h * V + cc] = select(vec4f(0.0), num / l, l > 0.0);
  }
}
`;
}

/** The Params block of the training kernels, for `blocks` workgroups. */
function uniform(plan: Plan, B: number, T: number, C: number, H: number, blocks: number): TensorView {
  return plan.gpu.uniform(
    packUniform([["u", B], ["u", T], ["u", C / 4], ["u", H], ["u", blocks], ["f", 1 / Math.sqrt(C / H)]]),
    "attention.params",
  );
}

/**
 * Record causal self-attention: y = softmax(q k^T / sqrt(hd), causal) v per (b, h), and lse[(b*H+h)*T + t]
 * = log Σ_j exp(s_tj) for backward. `y` and `lse` are overwritten. qkv: [B*T, 3C], y: [B*T, C],
 * lse: [B*H*T].
 */
export function attentionForward(
  plan: Plan,
  y: TensorView,
  lse: TensorView,
  qkv: TensorView,
  B: number,
  T: number,
  C: number,
  H: number,
): void {
  const HD = headSize("attentionForward", C, H, [
    ["y", y, B * T * C],
    ["lse", lse, B * H * T],
    ["qkv", qkv, B * T * 3 * C],
  ]);
  const blocks = B * H * Math.ceil(T / WG);
  const u = uniform(plan, B, T, C, H, blocks);
  plan.add(forwardSource(HD), [u, y, lse, qkv], blocks, "attention_forward");
}

/**
 * Record the attention backward: dqkv [B*T, 3C] (overwritten) from dy [B*T, C] and the forward's qkv, y
 * and lse. Three deterministic passes, no atomics: D = rowsum(dy ∘ y) staged in dqkv's dq slots; dk, dv
 * per key; dq per query. P is recomputed from q, k and lse in both of the last two.
 */
export function attentionBackward(
  plan: Plan,
  dqkv: TensorView,
  dy: TensorView,
  qkv: TensorView,
  y: TensorView,
  lse: TensorView,
  B: number,
  T: number,
  C: number,
  H: number,
): void {
  const HD = headSize("attentionBackward", C, H, [
    ["dqkv", dqkv, B * T * 3 * C],
    ["dy", dy, B * T * C],
    ["qkv", qkv, B * T * 3 * C],
    ["y", y, B * T * C],
    ["lse", lse, B * H * T],
  ]);
  const blocks = B * H * Math.ceil(T / WG);
  const u = uniform(plan, B, T, C, H, blocks);
  plan.add(deltaSource(HD), [u, dqkv, dy, y], Math.ceil((B * T * H) / WG_D), "attention_backward_delta");
  plan.add(keySource(HD), [u, dqkv, dy, qkv, lse], blocks, "attention_backward_dkdv");
  plan.add(querySource(HD), [u, dqkv, dy, qkv, lse], blocks, "attention_backward_dq");
}

/**
 * Record one KV-cached decode step: for each sequence s < nSeq, y[s] = attention of the query row q[s]
 * ([nSeq, C]) over kCache/vCache [nSeq, maxT, C] at positions 0 .. lengths[s]-1 (u32 per sequence, a
 * storage buffer the caller rewrites between steps; the new token's own k and v must already be
 * stored). `y` [nSeq, C] is overwritten; a sequence with length 0 gets zeros.
 */
export function attentionDecode(
  plan: Plan,
  y: TensorView,
  q: TensorView,
  kCache: TensorView,
  vCache: TensorView,
  lengths: TensorView,
  nSeq: number,
  C: number,
  H: number,
  maxT: number,
): void {
  const HD = headSize("attentionDecode", C, H, [
    ["y", y, nSeq * C],
    ["q", q, nSeq * C],
    ["kCache", kCache, nSeq * maxT * C],
    ["vCache", vCache, nSeq * maxT * C],
    ["lengths", lengths, nSeq],
  ]);
  const u = plan.gpu.uniform(
    packUniform([["u", nSeq], ["u", C / 4], ["u", H], ["u", maxT], ["f", 1 / Math.sqrt(HD)]]),
    "attention.decode.params",
  );
  plan.add(decodeSource(HD), [u, y, q, kCache, vCache, lengths], nSeq * H, "attention_decode");
}
