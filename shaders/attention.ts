/**
 * Causal multi-head self-attention, FlashAttention style: the T×T score matrix is never stored.
 *
 * Layouts (docs/engine.md): `qkv` [B*T, 3C] holds q | k | v per row, head h in columns h*hd .. h*hd+hd-1
 * of each block; `y` [B*T, C]; `lse` [B*H*T] at (b*H + h)*T + t holds the row's log-sum-exp of the scaled
 * scores s_ij = q_i·k_j / sqrt(hd), j ≤ i, which is all backward needs to rebuild P = exp(S - lse).
 *
 * Each workgroup owns a block of rows (queries, or keys for dk/dv) of one (b, h) and streams the other
 * side through workgroup memory in tiles, in phases like a small GEMM: scores for all (row, column)
 * pairs of the tile into workgroup memory, a per-row softmax step, then each thread updates a few vec4
 * outputs (row, 4 columns) it owns in registers. Keeping per-thread state small matters on Mesa's
 * llvmpipe, which compiled a thread-per-row version (hd/4 vec4 registers per row) for about a minute.
 * Every sum runs in a fixed order, so results are bit-for-bit deterministic, and no output element is
 * written by two threads. Head sizes must be multiples of 4 (vec4 loads) and at most 256.
 * @module
 */
import { packUniform, type Plan, type TensorView } from "../model/gpu.ts";

/** Threads per workgroup of every kernel. */
const WG = 64;
/** Rows (queries, or keys for dk/dv) owned by one workgroup of the training kernels. */
const BR = 16;
/** Largest tile of streamed rows; smaller when the head size would overflow workgroup memory. */
const MAX_TILE = 32;
/** Threads per workgroup of the elementwise D pass. */
const WG_D = 256;
/** Largest head size: the decode kernel gives each vec4 of a head row at least one thread. */
const MAX_HD = 4 * WG;
/** A finite stand-in for -infinity (WGSL has no infinity literal); exp(NEG - m) underflows to 0. */
const NEG = "-3.0e38";

/** Largest power of two in [min, MAX_TILE] with `perRow * tile + fixed` floats fitting workgroup memory. */
function tileFor(plan: Plan, perRow: number, fixed: number, min: number): number {
  const bytes = plan.gpu.limits.maxComputeWorkgroupStorageSize;
  const room = Math.floor(bytes / 4) - fixed;
  let tile = MAX_TILE;
  while (tile > min && tile * perRow > room) tile /= 2;
  if (tile * perRow > room) {
    throw new Error(
      `attention: a tile of ${tile} rows needs ${(tile * perRow + fixed) * 4} bytes of workgroup ` +
        `memory; the adapter has ${bytes}`,
    );
  }
  return tile;
}

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

/** `f(r)` for r < R, joined: one generated statement per owned output vec4 (kept in registers). */
function each(R: number, f: (r: number) => string, sep = "\n  "): string {
  return Array.from({ length: R }, (_, r) => f(r)).join(sep);
}

/** Owned-output header: thread li owns vec4 e = li + r*WG of a [rows × V] block, as (row i, column c). */
function owned(r: number, V: number, rows: number): string {
  return `let e${r} = li + ${r * WG}u; let i${r} = min(e${r} / ${V}u, ${
    rows - 1
  }u); let c${r} = e${r} % ${V}u;` +
    ` let own${r} = e${r} < ${rows * V}u;`;
}

/**
 * Params of the training kernels; sizes in vec4 units: C4 = C/4, V = hd/4. `blocks` = workgroups used.
 * Row r of qkv starts at vec4 r*3*C4, of y and dy at r*C4.
 */
const HEADER = /* wgsl */ `
struct Params { B: u32, T: u32, C4: u32, H: u32, blocks: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
`;

/**
 * Forward: one workgroup per (b, h, BR queries); keys and values in tiles of BC. Per tile: scores into
 * `sp`, then per row the online softmax step m' = max(m, s), corr = e^(m-m'), p = e^(s-m'),
 * l = l corr + Σ p, then each thread's owned outputs a = a corr + Σ_j p_j v_j.
 * Bindings: params, y, lse, qkv.
 */
function forwardSource(HD: number, BC: number): string {
  const V = HD / 4, R = Math.ceil((BR * V) / WG);
  return HEADER + /* wgsl */ `
const V: u32 = ${V}u;
const BR: u32 = ${BR}u;
const BC: u32 = ${BC}u;
@group(0) @binding(1) var<storage, read_write> y: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read> qkv: array<vec4f>;
var<workgroup> qs: array<vec4f, ${BR * V}>;
var<workgroup> ks: array<vec4f, ${BC * V}>;
var<workgroup> vs: array<vec4f, ${BC * V}>;
var<workgroup> sp: array<f32, ${BR * BC}>;
var<workgroup> rowM: array<f32, BR>;
var<workgroup> rowL: array<f32, BR>;
var<workgroup> rowCorr: array<f32, BR>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let blk = wid.x + wid.y * nwg.x;
  if (blk >= p.blocks) { return; }
  let nqb = (p.T + BR - 1u) / BR;
  let q0 = (blk % nqb) * BR;
  let bh = blk / nqb;
  let b = bh / p.H;
  let h = bh % p.H;
  let C4 = p.C4;
  // q is pre-multiplied by the scale so a score is one dot product.
  for (var e = li; e < BR * V; e += ${WG}u) {
    let t = q0 + e / V;
    var x = vec4f(0.0);
    if (t < p.T) { x = qkv[(b * p.T + t) * 3u * C4 + h * V + e % V] * p.scale; }
    qs[e] = x;
  }
  for (var i = li; i < BR; i += ${WG}u) {
    rowM[i] = ${NEG};
    rowL[i] = 0.0;
  }
  ${each(R, (r) => owned(r, V, BR))}
  ${each(R, (r) => `var a${r} = vec4f(0.0);`)}
  // Keys 0 .. last query of this block (causal).
  let kEnd = min(p.T, q0 + BR);
  for (var k0 = 0u; k0 < kEnd; k0 += BC) {
    workgroupBarrier();
    for (var e = li; e < BC * V; e += ${WG}u) {
      let j = k0 + e / V;
      var kx = vec4f(0.0);
      var vx = vec4f(0.0);
      if (j < p.T) {
        let at = (b * p.T + j) * 3u * C4 + h * V + e % V;
        kx = qkv[at + C4];
        vx = qkv[at + 2u * C4];
      }
      ks[e] = kx;
      vs[e] = vx;
    }
    workgroupBarrier();
    for (var e = li; e < BR * BC; e += ${WG}u) {
      let i = e / BC;
      let j = e % BC;
      var sc: f32 = ${NEG};
      if (k0 + j <= q0 + i && k0 + j < p.T) {
        sc = 0.0;
        for (var c = 0u; c < V; c++) { sc += dot(qs[i * V + c], ks[j * V + c]); }
      }
      sp[e] = sc;
    }
    workgroupBarrier();
    for (var i = li; i < BR; i += ${WG}u) {
      let m = rowM[i];
      var mt = m;
      for (var j = 0u; j < BC; j++) { mt = max(mt, sp[i * BC + j]); }
      let corr = exp(m - mt);
      var l = rowL[i] * corr;
      for (var j = 0u; j < BC; j++) {
        let pj = exp(sp[i * BC + j] - mt);
        sp[i * BC + j] = pj;
        l += pj;
      }
      rowM[i] = mt;
      rowL[i] = l;
      rowCorr[i] = corr;
    }
    workgroupBarrier();
    ${
    each(R, (r) =>
      `{
      var acc = a${r} * rowCorr[i${r}];
      for (var j = 0u; j < BC; j++) { acc += sp[i${r} * BC + j] * vs[j * V + c${r}]; }
      a${r} = acc;
    }`, "\n    ")
  }
  }
  // rowM and rowL were last written before the final tile's last barrier.
  ${
    each(R, (r) =>
      `if (own${r} && q0 + i${r} < p.T) { y[(b * p.T + q0 + i${r}) * C4 + h * V + c${r}] = a${r} / rowL[i${r}]; }`)
  }
  for (var i = li; i < BR; i += ${WG}u) {
    if (q0 + i < p.T) { lse[bh * p.T + q0 + i] = rowM[i] + log(rowL[i]); }
  }
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
 * Backward pass 2: one workgroup per (b, h, BR keys); queries i ≥ the block's first key in tiles of BQ.
 * Per tile: P_ji = exp(s_ij - lse_i) and dS_ji = P (dy_i·v_j - D_i) into workgroup memory, then each
 * thread's owned outputs dv_j += Σ_i P_ji dy_i, dk_j += Σ_i dS_ji q_i (dk scaled at the end).
 * Bindings: params, dqkv, dy, qkv, lse.
 */
function keySource(HD: number, BQ: number): string {
  const V = HD / 4, R = Math.ceil((BR * V) / WG);
  return HEADER + /* wgsl */ `
const V: u32 = ${V}u;
const BK: u32 = ${BR}u;
const BQ: u32 = ${BQ}u;
@group(0) @binding(1) var<storage, read_write> dqkv: array<vec4f>;
@group(0) @binding(2) var<storage, read> dy: array<vec4f>;
@group(0) @binding(3) var<storage, read> qkv: array<vec4f>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
var<workgroup> ks: array<vec4f, ${BR * V}>;
var<workgroup> vs: array<vec4f, ${BR * V}>;
var<workgroup> qs: array<vec4f, ${BQ * V}>;
var<workgroup> gs: array<vec4f, ${BQ * V}>;
var<workgroup> pw: array<f32, ${BR * BQ}>;
var<workgroup> dsw: array<f32, ${BR * BQ}>;
var<workgroup> ls: array<f32, BQ>;
var<workgroup> ds: array<f32, BQ>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let blk = wid.x + wid.y * nwg.x;
  if (blk >= p.blocks) { return; }
  let nkb = (p.T + BK - 1u) / BK;
  let j0 = (blk % nkb) * BK;
  let bh = blk / nkb;
  let b = bh / p.H;
  let h = bh % p.H;
  let C4 = p.C4;
  // k is pre-multiplied by the scale so a score is one dot product.
  for (var e = li; e < BK * V; e += ${WG}u) {
    let j = j0 + e / V;
    var kx = vec4f(0.0);
    var vx = vec4f(0.0);
    if (j < p.T) {
      let at = (b * p.T + j) * 3u * C4 + h * V + e % V;
      kx = qkv[at + C4] * p.scale;
      vx = qkv[at + 2u * C4];
    }
    ks[e] = kx;
    vs[e] = vx;
  }
  ${each(R, (r) => owned(r, V, BR))}
  ${each(R, (r) => `var dk${r} = vec4f(0.0);`)}
  ${each(R, (r) => `var dv${r} = vec4f(0.0);`)}
  // Queries from the first key of this block to the end (causal), in tiles starting at qt (not named
  // i0: the owned-row variables are i0, i1, ...).
  for (var qt = j0; qt < p.T; qt += BQ) {
    workgroupBarrier();
    for (var e = li; e < BQ * V; e += ${WG}u) {
      let i = qt + e / V;
      var qx = vec4f(0.0);
      var gx = vec4f(0.0);
      if (i < p.T) {
        qx = qkv[(b * p.T + i) * 3u * C4 + h * V + e % V];
        gx = dy[(b * p.T + i) * C4 + h * V + e % V];
      }
      qs[e] = qx;
      gs[e] = gx;
    }
    for (var e = li; e < BQ; e += ${WG}u) {
      let i = min(qt + e, p.T - 1u);
      ls[e] = lse[bh * p.T + i];
      ds[e] = dqkv[(b * p.T + i) * 3u * C4 + h * V].x;
    }
    workgroupBarrier();
    for (var e = li; e < BK * BQ; e += ${WG}u) {
      let j = e / BQ;
      let i = e % BQ;
      var pr: f32 = 0.0;
      var dsc: f32 = 0.0;
      if (qt + i >= j0 + j && qt + i < p.T) {
        var sc: f32 = 0.0;
        var dp: f32 = 0.0;
        for (var c = 0u; c < V; c++) {
          sc += dot(qs[i * V + c], ks[j * V + c]);
          dp += dot(gs[i * V + c], vs[j * V + c]);
        }
        pr = exp(sc - ls[i]);
        dsc = pr * (dp - ds[i]);
      }
      pw[e] = pr;
      dsw[e] = dsc;
    }
    workgroupBarrier();
    ${
    each(R, (r) =>
      `{
      var gv = dv${r};
      var gk = dk${r};
      for (var i = 0u; i < BQ; i++) {
        gv += pw[i${r} * BQ + i] * gs[i * V + c${r}];
        gk += dsw[i${r} * BQ + i] * qs[i * V + c${r}];
      }
      dv${r} = gv;
      dk${r} = gk;
    }`, "\n    ")
  }
  }
  ${
    each(R, (r) =>
      `if (own${r} && j0 + i${r} < p.T) {
    let at = (b * p.T + j0 + i${r}) * 3u * C4 + h * V + c${r};
    dqkv[at + C4] = dk${r} * p.scale;
    dqkv[at + 2u * C4] = dv${r};
  }`)
  }
}
`;
}

/**
 * Backward pass 3: one workgroup per (b, h, BR queries); keys j ≤ the block's last query in tiles of BC.
 * Per tile: dS_ij = exp(s_ij - lse_i) (dy_i·v_j - D_i) into workgroup memory, then each thread's owned
 * outputs dq_i += Σ_j dS_ij k_j (scaled at the end). D_i is read from the dq slot, which is overwritten
 * only after the first tile's barriers. Bindings: params, dqkv, dy, qkv, lse.
 */
function querySource(HD: number, BC: number): string {
  const V = HD / 4, R = Math.ceil((BR * V) / WG);
  return HEADER + /* wgsl */ `
const V: u32 = ${V}u;
const BR: u32 = ${BR}u;
const BC: u32 = ${BC}u;
@group(0) @binding(1) var<storage, read_write> dqkv: array<vec4f>;
@group(0) @binding(2) var<storage, read> dy: array<vec4f>;
@group(0) @binding(3) var<storage, read> qkv: array<vec4f>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
var<workgroup> qs: array<vec4f, ${BR * V}>;
var<workgroup> gs: array<vec4f, ${BR * V}>;
var<workgroup> ks: array<vec4f, ${BC * V}>;
var<workgroup> vs: array<vec4f, ${BC * V}>;
var<workgroup> dsw: array<f32, ${BR * BC}>;
var<workgroup> ls: array<f32, BR>;
var<workgroup> ds: array<f32, BR>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let blk = wid.x + wid.y * nwg.x;
  if (blk >= p.blocks) { return; }
  let nqb = (p.T + BR - 1u) / BR;
  let q0 = (blk % nqb) * BR;
  let bh = blk / nqb;
  let b = bh / p.H;
  let h = bh % p.H;
  let C4 = p.C4;
  for (var e = li; e < BR * V; e += ${WG}u) {
    let t = q0 + e / V;
    var qx = vec4f(0.0);
    var gx = vec4f(0.0);
    if (t < p.T) {
      qx = qkv[(b * p.T + t) * 3u * C4 + h * V + e % V] * p.scale;
      gx = dy[(b * p.T + t) * C4 + h * V + e % V];
    }
    qs[e] = qx;
    gs[e] = gx;
  }
  for (var i = li; i < BR; i += ${WG}u) {
    let t = min(q0 + i, p.T - 1u);
    ls[i] = lse[bh * p.T + t];
    ds[i] = dqkv[(b * p.T + t) * 3u * C4 + h * V].x;
  }
  ${each(R, (r) => owned(r, V, BR))}
  ${each(R, (r) => `var dq${r} = vec4f(0.0);`)}
  let kEnd = min(p.T, q0 + BR);
  for (var k0 = 0u; k0 < kEnd; k0 += BC) {
    workgroupBarrier();
    for (var e = li; e < BC * V; e += ${WG}u) {
      let j = k0 + e / V;
      var kx = vec4f(0.0);
      var vx = vec4f(0.0);
      if (j < p.T) {
        let at = (b * p.T + j) * 3u * C4 + h * V + e % V;
        kx = qkv[at + C4];
        vx = qkv[at + 2u * C4];
      }
      ks[e] = kx;
      vs[e] = vx;
    }
    workgroupBarrier();
    for (var e = li; e < BR * BC; e += ${WG}u) {
      let i = e / BC;
      let j = e % BC;
      var dsc: f32 = 0.0;
      if (k0 + j <= q0 + i && q0 + i < p.T) {
        var sc: f32 = 0.0;
        var dp: f32 = 0.0;
        for (var c = 0u; c < V; c++) {
          sc += dot(qs[i * V + c], ks[j * V + c]);
          dp += dot(gs[i * V + c], vs[j * V + c]);
        }
        dsc = exp(sc - ls[i]) * (dp - ds[i]);
      }
      dsw[e] = dsc;
    }
    workgroupBarrier();
    ${
    each(R, (r) =>
      `{
      var g = dq${r};
      for (var j = 0u; j < BC; j++) { g += dsw[i${r} * BC + j] * ks[j * V + c${r}]; }
      dq${r} = g;
    }`, "\n    ")
  }
  }
  ${
    each(R, (r) =>
      `if (own${r} && q0 + i${r} < p.T) { dqkv[(b * p.T + q0 + i${r}) * 3u * C4 + h * V + c${r}] = dq${r} * p.scale; }`)
  }
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

/**
 * Record causal self-attention: y = softmax(q k^T / sqrt(hd), causal) v per (b, h), and lse[(b*H+h)*T + t]
 * = log Σ_j exp(s_tj) for backward. `y` is overwritten. qkv: [B*T, 3C], y: [B*T, C], lse: [B*H*T].
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
  const HD = headSize("attentionForward", C, H, [["y", y, B * T * C], ["lse", lse, B * H * T], [
    "qkv",
    qkv,
    B * T * 3 * C,
  ]]);
  const BC = tileFor(plan, 2 * HD + BR, BR * HD + 3 * BR, 1);
  const blocks = B * H * Math.ceil(T / BR);
  plan.add(
    forwardSource(HD, BC),
    [uniform(plan, B, T, C, H, blocks), y, lse, qkv],
    blocks,
    "attention_forward",
  );
}

/**
 * Record the attention backward: dqkv [B*T, 3C] (overwritten) from dy [B*T, C], the forward's qkv, y and
 * lse. Three deterministic passes, no atomics: D = rowsum(dy ∘ y); dk, dv per key block; dq per query
 * block. P is recomputed from q, k and lse in both of the last two.
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
  const blocks = B * H * Math.ceil(T / BR);
  const u = uniform(plan, B, T, C, H, blocks);
  plan.add(deltaSource(HD), [u, dqkv, dy, y], Math.ceil((B * T * H) / WG_D), "attention_backward_delta");
  const BQ = tileFor(plan, 2 * HD + 2 * BR + 2, 2 * BR * HD, 1);
  plan.add(keySource(HD, BQ), [u, dqkv, dy, qkv, lse], blocks, "attention_backward_dkdv");
  const BC = tileFor(plan, 2 * HD + BR, 2 * BR * HD + 2 * BR, 1);
  plan.add(querySource(HD, BC), [u, dqkv, dy, qkv, lse], blocks, "attention_backward_dq");
}

/**
 * Record one KV-cached decode step: for each sequence s < nSeq, y[s] = attention of the query row q[s]
 * ([nSeq, C]) over kCache/vCache [nSeq, maxT, C] at positions 0 .. lengths[s]-1 (u32 per sequence, a
 * storage buffer the caller rewrites between steps; the new token's own k, v must already be stored).
 * `y` [nSeq, C] is overwritten; a sequence with length 0 gets zeros.
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

/** The shared Params block of the training kernels. */
function uniform(plan: Plan, B: number, T: number, C: number, H: number, blocks: number): TensorView {
  return plan.gpu.uniform(
    packUniform([["u", B], ["u", T], ["u", C / 4], ["u", H], ["u", blocks], ["f", 1 / Math.sqrt(C / H)]]),
    "attention.params",
  );
}
