/**
 * Causal multi-head self-attention, FlashAttention style: the T×T score matrix is never stored.
 *
 * Layouts (docs/engine.md): `qkv` [B*T, 3C] holds q | k | v per row, head h in columns h*hd .. h*hd+hd-1
 * of each block; `y` [B*T, C]; `lse` [B*H*T] at (b*H + h)*T + t holds the row's log-sum-exp of the scaled
 * scores s_ij = q_i·k_j / sqrt(hd), j ≤ i, which is all backward needs to rebuild P = exp(S - lse).
 *
 * One thread owns R consecutive rows (queries, or keys for dk/dv) of one (b, h) and keeps them, and
 * their outputs, in hd/4 named vec4 registers each, generated for the head size; the other side's rows
 * are read straight from the storage buffers, once per thread for all R rows (every thread of a
 * workgroup reads the same row at about the same time, so caches serve it). R is 4 on CPU adapters
 * and 1 on GPUs ({@link rowsPerThread}). No arrays: Mesa's llvmpipe (lavapipe) takes time roughly quadratic in an array's size to compile
 * a non-unrolled loop that indexes it, so workgroup tiles of K/V made the hd=64 kernels take minutes
 * to compile; this form compiles in about a second. Every sum runs in a fixed order, so results are
 * bit-for-bit deterministic, and no output element is written by two threads. Head sizes must be
 * multiples of 4 (vec4 loads) and at most 256.
 * @module
 */
import { checkLengths, computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";
import { DROPOUT_WGSL, type DropoutKey, keepThreshold } from "./dropout.ts";

/** Threads per workgroup: rows of one (b, h) in the training kernels, keys of a tile in decode. */
const WG = 64;
/**
 * Rows (queries, or keys in the dK/dV pass) per thread of the training kernels: each key's or query's
 * vectors are loaded once for all of a thread's rows. On CPU adapters loads are what costs (docs/engine.md),
 * and 4 rows make the kernels 3-3.5x faster than 1 on llvmpipe (8 rows: 6x, but a backward kernel takes
 * 25 s to compile); on GPUs each row holds 32 vec4 registers, so one row per thread keeps them in registers.
 */
export function rowsPerThread(gpu: { cpuLike: boolean }): number {
  return gpu.cpuLike ? 4 : 1;
}
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
  for (const [name, v, need] of views) checkLengths(where, need, { [name]: v });
  return hd;
}

/** `f(c)` for each vec4 c < V of a head row, joined: one generated statement or term per register. */
function each(V: number, f: (c: number) => string, sep = "\n  "): string {
  return Array.from({ length: V }, (_, c) => f(c)).join(sep);
}

/**
 * Params of the training kernels; sizes in vec4 units: C4 = C/4, V = hd/4. `blocks` = workgroups used,
 * `scale` = 1/sqrt(hd). Row r of qkv starts at vec4 r*3*C4 (q, then k at + C4, v at + 2*C4), of y and dy
 * at r*C4. A workgroup takes WG * R consecutive rows of one (b, h); threads past T return at once (there
 * are no barriers).
 */
const PARAMS = uniformLayout({ B: "u32", T: "u32", C4: "u32", H: "u32", blocks: "u32", scale: "f32" });
const HEADER = PARAMS.wgsl + /* wgsl */ `const WG: u32 = ${WG}u;
`;
/**
 * With dropout on the probabilities: the same fields, then the site's generator word, the keep threshold
 * and the kept probabilities' scale 1/(1-p) (shaders/dropout.ts).
 */
const DROP_PARAMS = uniformLayout({
  B: "u32",
  T: "u32",
  C4: "u32",
  H: "u32",
  blocks: "u32",
  scale: "f32",
  site: "u32",
  threshold: "u32",
  keepScale: "f32",
});

/**
 * The header of a training kernel; with dropout also the key (bound after the storage buffers, at
 * `keyBinding`) and `dropScale(rowKey, key)`: 1/(1-p) if probability (row, key) is kept, else 0.
 */
function header(drop: boolean, keyBinding: number): string {
  if (!drop) return HEADER;
  return DROP_PARAMS.wgsl + /* wgsl */ `const WG: u32 = ${WG}u;
@group(0) @binding(${keyBinding}) var<uniform> dkey: DropKey;
${DROPOUT_WGSL}
fn dropScale(rowKey: u32, col: u32) -> f32 { return select(0.0, p.keepScale, dropKeep(rowKey, col, p.threshold)); }
`;
}

/**
 * Shared start of the training kernels: this thread's first row t0 of (b, h) (it owns rows t0 .. t0 + R - 1
 * that are < T), `base` = vec4 of row 0, head h; `last` = its last row inside the sequence.
 */
function rowOf(V: number, R: number): string {
  return /* wgsl */ `
const V: u32 = ${V}u;
const R: u32 = ${R}u;
struct Row { b: u32, h: u32, bh: u32, t: u32, last: u32, base: u32, ok: bool }
fn rowOf(blk: u32, li: u32) -> Row {
  let nb = (p.T + WG * R - 1u) / (WG * R);
  let bh = blk / nb;
  let t = (blk % nb) * WG * R + li * R;
  let b = bh / p.H;
  let h = bh % p.H;
  return Row(b, h, bh, t, min(t + R - 1u, p.T - 1u), b * p.T * 3u * p.C4 + h * V, blk < p.blocks && t < p.T);
}
`;
}

/**
 * The padding mask's declaration and this thread's sequence start `ks` (keyStart[b]), or nothing without
 * a mask. Key j of sequence b is visible to query i iff j ≤ i and (j ≥ ks or i < ks): real queries skip the
 * left padding, and padding queries attend among themselves (causally), so every row stays finite and no
 * padding row reaches a real one.
 */
function maskOf(masked: boolean, binding: number): { decl: string; start: string } {
  if (!masked) return { decl: "", start: "" };
  return {
    decl: `@group(0) @binding(${binding}) var<storage, read> keyStart: array<u32>;\n`,
    start: "let ks = keyStart[r.b];\n  ",
  };
}

/** A joiner of `f(rr)` over a thread's R rows. */
function rowsOf(R: number): (f: (rr: number) => string, sep?: string) => string {
  return (f, sep = "\n  ") => Array.from({ length: R }, (_, rr) => f(rr)).join(sep);
}

/**
 * Forward: a thread owns R consecutive queries t0 .. t0+R-1 and walks keys j ≤ its last query four at a
 * time, loading each key's k and v once for all R rows, with an online softmax per row (running max m,
 * sum l, unnormalised output a): m' = max(m, s), a = a e^(m-m') + Σ e^(s_j-m') v_j, l likewise. Keys past
 * a row's own position are masked to -inf; every row sees key 0 first, so m is finite from then on.
 * With dropout (`drop`), the output sums the kept probabilities scaled by 1/(1-p) while l and lse stay
 * those of the whole softmax, as transformers drops after the softmax. The mask of (query i, key j) is
 * keyed by row (b*H + h)*T + i and column j. Bindings: params, y, lse, qkv (then the key).
 */
function forwardSource(HD: number, R: number, drop = false, masked = false): string {
  const V = HD / 4;
  const rows = rowsOf(R);
  const mask = maskOf(masked, drop ? 5 : 4);
  const key = (n: number) => `let r${n} = base + min(j + ${n}u, r.last) * S + C4;`;
  const kv = (n: number, c: number) => `qkv[r${n} + ${c}u]`;
  // The weights of the values: the probabilities, or with dropout the kept ones, scaled.
  const w = (rr: number) => drop ? `pd${rr}` : `pr${rr}`;
  return header(drop, 4) + rowOf(V, R) + /* wgsl */ `
${
    storage({ y: "read_write array<vec4f>", lse: "read_write array<f32>", qkv: "read array<vec4f>" })
  }${mask.decl}${computeMain(WG)}  let r = rowOf(wgIndex, li);
  if (!r.ok) { return; }
  ${mask.start}let C4 = p.C4;
  let S = 3u * C4;
  let base = r.base;
  ${
    drop
      ? `let stream = dropStream(p.site);\n  ${
        rows((rr) => `let dr${rr} = dropRow(stream, r.bh * p.T + r.t + ${rr}u);`)
      }`
      : ""
  }
  // q is pre-multiplied by the scale so a score is one dot product; rows past T repeat the last one.
  ${rows((rr) => `let rq${rr} = base + min(r.t + ${rr}u, r.last) * S;`)}
  ${rows((rr) => each(V, (c) => `let q${rr}_${c} = qkv[rq${rr} + ${c}u] * p.scale;`))}
  ${rows((rr) => each(V, (c) => `var a${rr}_${c} = vec4f(0.0);`))}
  ${
    rows((rr) =>
      `var m${rr}: f32 = ${NEG};
  var l${rr}: f32 = 0.0;`
    )
  }
  // With the padding mask, a thread whose rows are all real starts at the 4-key group holding ks.
  for (var j = ${masked ? "select(0u, ks & ~3u, r.t >= ks)" : "0u"}; j <= r.last; j += 4u) {
    // k rows of keys j .. j+3 (clamped to the last row to stay in the sequence; the extra ones are masked).
    ${each(4, key, "\n    ")}
    ${each(4, (n) => each(V, (c) => `let k${n}_${c} = ${kv(n, c)};`, " "), "\n    ")}
    let jj = vec4u(j, j + 1u, j + 2u, j + 3u);
    ${
    rows((rr) => {
      const dots = (n: number) => each(V, (c) => `dot(q${rr}_${c}, k${n}_${c})`, " + ");
      return `var sc${rr} = vec4f(${dots(0)},
      ${dots(1)},
      ${dots(2)},
      ${dots(3)});
    ${
        masked
          ? `let ok${rr} = (jj <= vec4u(r.t + ${rr}u)) & ((jj >= vec4u(ks)) | vec4<bool>(r.t + ${rr}u < ks));`
          : `let ok${rr} = jj <= vec4u(r.t + ${rr}u);`
      }
    sc${rr} = select(vec4f(${NEG}), sc${rr}, ok${rr});
    let mt${rr} = max(m${rr}, max(max(sc${rr}.x, sc${rr}.y), max(sc${rr}.z, sc${rr}.w)));
    let corr${rr} = exp(m${rr} - mt${rr});
    ${
        // A masked group may come before the row's first visible key, while m is still -inf: its
        // probabilities must be 0, not exp(-inf - -inf).
        masked
          ? `let pr${rr} = select(vec4f(0.0), exp(sc${rr} - vec4f(mt${rr})), ok${rr});`
          : `let pr${rr} = exp(sc${rr} - vec4f(mt${rr}));`}
    l${rr} = l${rr} * corr${rr} + (pr${rr}.x + pr${rr}.y + pr${rr}.z + pr${rr}.w);
    m${rr} = mt${rr};${
        drop
          ? `
    let pd${rr} = pr${rr} * vec4f(${each(4, (n) => `dropScale(dr${rr}, j + ${n}u)`, ", ")});`
          : ""
      }`;
    }, "\n    ")
  }
    // v of a key sits C4 after its k; each v vector is loaded once for all rows.
    ${
    each(
      V,
      (c) =>
        `{
      let v0 = qkv[r0 + C4 + ${c}u]; let v1 = qkv[r1 + C4 + ${c}u]; let v2 = qkv[r2 + C4 + ${c}u]; let v3 = qkv[r3 + C4 + ${c}u];
      ${
          rows(
            (rr) =>
              `a${rr}_${c} = a${rr}_${c} * corr${rr} + ${w(rr)}.x * v0 + ${w(rr)}.y * v1 + ${
                w(rr)
              }.z * v2 + ${w(rr)}.w * v3;`,
            "\n      ",
          )
        }
    }`,
      "\n    ",
    )
  }
  }
  ${
    rows((rr) =>
      `if (r.t + ${rr}u < p.T) {
    let ry = (r.b * p.T + r.t + ${rr}u) * C4 + r.h * V;
    let inv = 1.0 / l${rr};
    ${each(V, (c) => `y[ry + ${c}u] = a${rr}_${c} * inv;`, "\n    ")}
    lse[r.bh * p.T + r.t + ${rr}u] = m${rr} + log(l${rr});
  }`
    )
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
${storage({ dqkv: "read_write array<vec4f>", dy: "read array<vec4f>", y: "read array<vec4f>" })}
${computeMain(WG_D)}  let i = globalIndex;
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

/** Bindings of backward passes 2 and 3 (after params). */
const GRAD_BINDINGS = storage({
  dqkv: "read_write array<vec4f>",
  dy: "read array<vec4f>",
  qkv: "read array<vec4f>",
  lse: "read array<f32>",
});

/**
 * Backward pass 2: a thread owns R consecutive keys j0 .. j0+R-1 and walks queries i ≥ j0, loading each
 * query's q, dy, lse and D once for all R keys. With P_ij = exp(s_ij - lse_i), dP_ij = dy_i·v_j and
 * dS = P (dP - D): dv_j = Σ_i P_ij dy_i, dk_j = scale Σ_i dS_ij q_i (queries before a key are masked to
 * P = 0). Reads D_i from the dq slots, which this pass does not write. With dropout's scaled mask M,
 * dP_ij = M_ij dy_i·v_j and dv_j = Σ_i M_ij P_ij dy_i, and D_i = dy_i·y_i still. Bindings: params, dqkv,
 * dy, qkv, lse (then the key).
 */
function keySource(HD: number, R: number, drop = false, masked = false): string {
  const V = HD / 4;
  const rows = rowsOf(R);
  const mask = maskOf(masked, drop ? 6 : 5);
  // Query i sees key j = r.t + rr (see maskOf).
  const sees = (rr: number) =>
    masked ? `i >= r.t + ${rr}u && (r.t + ${rr}u >= ks || i < ks)` : `i >= r.t + ${rr}u`;
  return header(drop, 5) + rowOf(V, R) + /* wgsl */ `
${GRAD_BINDINGS}${mask.decl}${computeMain(WG)}  let r = rowOf(wgIndex, li);
  if (!r.ok) { return; }
  ${mask.start}let C4 = p.C4;
  let S = 3u * C4;
  ${rows((rr) => `let rk${rr} = r.base + min(r.t + ${rr}u, r.last) * S + C4;`)}
  // k is pre-multiplied by the scale so a score is one dot product.
  ${rows((rr) => each(V, (c) => `let k${rr}_${c} = qkv[rk${rr} + ${c}u] * p.scale;`))}
  ${rows((rr) => each(V, (c) => `let v${rr}_${c} = qkv[rk${rr} + C4 + ${c}u];`))}
  ${rows((rr) => each(V, (c) => `var dk${rr}_${c} = vec4f(0.0);`))}
  ${rows((rr) => each(V, (c) => `var dv${rr}_${c} = vec4f(0.0);`))}
  let gBase = r.b * p.T * C4 + r.h * V;
  ${drop ? "let stream = dropStream(p.site);" : ""}
  // With the padding mask, padding keys are seen by padding queries only.
  for (var i = r.t; i < ${masked ? "select(p.T, ks, r.last < ks)" : "p.T"}; i++) {
    let rq = r.base + i * S;
    let rg = gBase + i * C4;
    ${drop ? "let dri = dropRow(stream, r.bh * p.T + i);" : ""}
    ${each(V, (c) => `let q${c} = qkv[rq + ${c}u];`, " ")}
    ${each(V, (c) => `let g${c} = dy[rg + ${c}u];`, " ")}
    let li_ = lse[r.bh * p.T + i];
    let di = dqkv[rq].x;
    ${
    rows((rr) =>
      `{
      let pr = select(0.0, exp((${each(V, (c) => `dot(k${rr}_${c}, q${c})`, " + ")}) - li_), ${sees(rr)});
      ${drop ? `let md = dropScale(dri, r.t + ${rr}u);` : ""}
      let dsc = pr * (${drop ? "md * " : ""}(${each(V, (c) => `dot(v${rr}_${c}, g${c})`, " + ")}) - di);
      ${drop ? "let pv = pr * md;" : "let pv = pr;"}
      ${each(V, (c) => `dv${rr}_${c} += pv * g${c};`, " ")}
      ${each(V, (c) => `dk${rr}_${c} += dsc * q${c};`, " ")}
    }`, "\n    ")
  }
  }
  ${
    rows((rr) =>
      `if (r.t + ${rr}u < p.T) {
    ${each(V, (c) => `dqkv[rk${rr} + ${c}u] = dk${rr}_${c} * p.scale;`, " ")}
    ${each(V, (c) => `dqkv[rk${rr} + C4 + ${c}u] = dv${rr}_${c};`, " ")}
  }`
    )
  }
}
`;
}

/**
 * Backward pass 3: a thread owns R consecutive queries and walks keys j ≤ its last one, loading each key's
 * k and v once for all R rows: dq_i = scale Σ_j dS_ij k_j (keys past a query masked to dS = 0). Reads D_i
 * from its own dq slot, then overwrites it (no other thread touches it). With dropout, dS_ij =
 * P_ij (M_ij dy_i·v_j - D_i). Bindings: params, dqkv, dy, qkv, lse (then the key).
 */
function querySource(HD: number, R: number, drop = false, masked = false): string {
  const V = HD / 4;
  const rows = rowsOf(R);
  const mask = maskOf(masked, drop ? 6 : 5);
  // Query r.t + rr sees key j (see maskOf).
  const sees = (rr: number) =>
    masked ? `j <= r.t + ${rr}u && (j >= ks || r.t + ${rr}u < ks)` : `j <= r.t + ${rr}u`;
  return header(drop, 5) + rowOf(V, R) + /* wgsl */ `
${GRAD_BINDINGS}${mask.decl}${computeMain(WG)}  let r = rowOf(wgIndex, li);
  if (!r.ok) { return; }
  ${mask.start}let C4 = p.C4;
  let S = 3u * C4;
  ${rows((rr) => `let rq${rr} = r.base + min(r.t + ${rr}u, r.last) * S;`)}
  ${rows((rr) => `let rg${rr} = (r.b * p.T + min(r.t + ${rr}u, r.last)) * C4 + r.h * V;`)}
  ${rows((rr) => each(V, (c) => `let q${rr}_${c} = qkv[rq${rr} + ${c}u] * p.scale;`))}
  ${rows((rr) => each(V, (c) => `let g${rr}_${c} = dy[rg${rr} + ${c}u];`))}
  ${rows((rr) => each(V, (c) => `var dq${rr}_${c} = vec4f(0.0);`))}
  ${rows((rr) => `let lrow${rr} = lse[r.bh * p.T + min(r.t + ${rr}u, r.last)];`)}
  ${rows((rr) => `let drow${rr} = dqkv[rq${rr}].x;`)}
  ${
    drop
      ? `let stream = dropStream(p.site);
  ${rows((rr) => `let dr${rr} = dropRow(stream, r.bh * p.T + min(r.t + ${rr}u, r.last));`)}`
      : ""
  }
  for (var j = ${masked ? "select(0u, ks, r.t >= ks)" : "0u"}; j <= r.last; j++) {
    let rk = r.base + j * S + C4;
    ${each(V, (c) => `let k${c} = qkv[rk + ${c}u];`, " ")}
    ${each(V, (c) => `let v${c} = qkv[rk + C4 + ${c}u];`, " ")}
    ${
    rows((rr) =>
      `{
      let sc = ${each(V, (c) => `dot(q${rr}_${c}, k${c})`, " + ")};
      let dp = ${each(V, (c) => `dot(g${rr}_${c}, v${c})`, " + ")};
      let dsc = select(0.0, exp(sc - lrow${rr}) * (${
        drop ? `dropScale(dr${rr}, j) * ` : ""
      }dp - drow${rr}), ${sees(rr)});
      ${each(V, (c) => `dq${rr}_${c} += dsc * k${c};`, " ")}
    }`, "\n    ")
  }
  }
  ${
    rows((rr) =>
      `if (r.t + ${rr}u < p.T) {
    ${each(V, (c) => `dqkv[rq${rr} + ${c}u] = dq${rr}_${c} * p.scale;`, " ")}
  }`
    )
  }
}
`;
}

/** Params of the decode kernel: C4 = C/4, `scale` = 1/sqrt(hd). */
const DECODE_PARAMS = uniformLayout({ nSeq: "u32", C4: "u32", H: "u32", maxT: "u32", scale: "f32" });

/**
 * Decode: one workgroup per (sequence, head); keys in tiles of WG, one score per thread. All threads
 * redo the tile's max and sum in the same order (so m and l agree everywhere); thread (c, g) owns
 * output vec4 c over the keys g, g + G, ... of each tile, and the G partials are summed in order at
 * the end. Bindings: params, y, q, kCache, vCache, lengths.
 */
function decodeSource(HD: number): string {
  const V = HD / 4, G = Math.floor(WG / V);
  return DECODE_PARAMS.wgsl + storage({
    y: "read_write array<vec4f>",
    q: "read array<vec4f>",
    kCache: "read array<vec4f>",
    vCache: "read array<vec4f>",
    lengths: "read array<u32>",
  }) + /* wgsl */ `
const V: u32 = ${V}u;
const G: u32 = ${G}u;
var<workgroup> qs: array<vec4f, V>;
var<workgroup> sp: array<f32, ${WG}>;
var<workgroup> pw: array<f32, ${WG}>;
var<workgroup> part: array<vec4f, ${WG}>;
var<workgroup> lenw: u32;
${computeMain(WG)}  let blk = wgIndex;
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

function checkRows(where: string, R: number): void {
  if (!(Number.isInteger(R) && R >= 1 && R <= 8)) {
    throw new Error(`${where}: rows per thread R=${R} must be 1..8`);
  }
}

/** The Params block of the training kernels, for `blocks` workgroups (with dropout's fields when on). */
function params(plan: Plan, { B, T, C, H }: AttentionShape, blocks: number, drop?: AttentionDropout) {
  const base = { B, T, C4: C / 4, H, blocks, scale: 1 / Math.sqrt(C / H) };
  if (!drop) return plan.params(PARAMS, base, "attention.params");
  const { site, rate } = drop;
  return plan.params(
    DROP_PARAMS,
    { ...base, site, threshold: keepThreshold(rate), keepScale: 1 / (1 - rate) },
    "attention.params",
  );
}

/**
 * Dropout on the attention probabilities (transformers' `attn_dropout`), at GPT-2's site `site` of the
 * generator (shaders/dropout.ts `DROPOUT_SITE.attn(layer)`). Rate 0 records no dropout work.
 */
export interface AttentionDropout {
  key: DropoutKey;
  site: number;
  rate: number;
}

/** The views bound after a training kernel's storage buffers: the dropout key, then the padding mask. */
function extraViews(where: string, args: AttentionForwardArgs, drop?: AttentionDropout): TensorView[] {
  if (args.keyStart) checkLengths(where, args.B, { keyStart: args.keyStart });
  return [...(drop ? [drop.key.view] : []), ...(args.keyStart ? [args.keyStart] : [])];
}

/** The dropout to generate, if any: none at rate 0. */
function dropoutOf(args: { dropout?: AttentionDropout }): AttentionDropout | undefined {
  return args.dropout && args.dropout.rate > 0 ? args.dropout : undefined;
}

/** B sequences of T positions, width C = H heads times the head size (a multiple of 4, at most 256). */
export interface AttentionShape {
  B: number;
  T: number;
  C: number;
  H: number;
  /** Rows per thread of the training kernels, 1..8; default {@link rowsPerThread}. */
  rowsPerThread?: number;
}

/** The tensors of {@link attentionForward}: qkv [B*T, 3C] in; y [B*T, C] and lse [B*H*T] out. */
export interface AttentionForwardArgs extends AttentionShape {
  y: TensorView;
  lse: TensorView;
  qkv: TensorView;
  /** Training mode: drop probabilities (backward must get the same, to regenerate the mask). */
  dropout?: AttentionDropout;
  /**
   * Left padding (u32 [B]): sequence b's first real position. Real queries do not see the keys before it;
   * the padding queries attend among themselves, so their rows stay finite and never reach a real row.
   * Backward must get the same view. Absent: plain causal attention.
   */
  keyStart?: TensorView;
}

/**
 * Record causal self-attention: y = softmax(q k^T / sqrt(hd), causal) v per (b, h), and lse[(b*H+h)*T + t]
 * = log Σ_j exp(s_tj) for backward. `y` and `lse` are overwritten.
 */
export function attentionForward(plan: Plan, args: AttentionForwardArgs): void {
  const { y, lse, qkv, B, T, C, H } = args;
  const R = args.rowsPerThread ?? rowsPerThread(plan.gpu);
  const HD = headSize("attentionForward", C, H, [
    ["y", y, B * T * C],
    ["lse", lse, B * H * T],
    ["qkv", qkv, B * T * 3 * C],
  ]);
  checkRows("attentionForward", R);
  const blocks = B * H * Math.ceil(T / (WG * R));
  const drop = dropoutOf(args);
  const u = params(plan, args, blocks, drop);
  const extra = extraViews("attentionForward", args, drop);
  plan.add(
    forwardSource(HD, R, !!drop, !!args.keyStart),
    [u, y, lse, qkv, ...extra],
    blocks,
    "attention_forward",
  );
}

/** The tensors of {@link attentionBackward}: the forward's qkv, y and lse, dy [B*T, C]; dqkv [B*T, 3C] out. */
export interface AttentionBackwardArgs extends AttentionForwardArgs {
  dqkv: TensorView;
  dy: TensorView;
}

/**
 * Record the attention backward: dqkv (overwritten) from dy and the forward's qkv, y and lse. Three
 * deterministic passes, no atomics: D = rowsum(dy ∘ y) staged in dqkv's dq slots; dk, dv per key; dq per
 * query. P is recomputed from q, k and lse in both of the last two.
 */
export function attentionBackward(plan: Plan, args: AttentionBackwardArgs): void {
  const { dqkv, dy, qkv, y, lse, B, T, C, H } = args;
  const R = args.rowsPerThread ?? rowsPerThread(plan.gpu);
  const HD = headSize("attentionBackward", C, H, [
    ["dqkv", dqkv, B * T * 3 * C],
    ["dy", dy, B * T * C],
    ["qkv", qkv, B * T * 3 * C],
    ["y", y, B * T * C],
    ["lse", lse, B * H * T],
  ]);
  checkRows("attentionBackward", R);
  const blocks = B * H * Math.ceil(T / (WG * R));
  const drop = dropoutOf(args);
  const u = params(plan, args, blocks, drop);
  const extra = extraViews("attentionBackward", args, drop);
  const masked = !!args.keyStart;
  // D = dy·y needs no mask: y already holds the dropped sum. (A dropout Params block starts with PARAMS.)
  plan.add(deltaSource(HD), [u, dqkv, dy, y], Math.ceil((B * T * H) / WG_D), "attention_backward_delta");
  const views = [u, dqkv, dy, qkv, lse, ...extra];
  plan.add(keySource(HD, R, !!drop, masked), views, blocks, "attention_backward_dkdv");
  plan.add(querySource(HD, R, !!drop, masked), views, blocks, "attention_backward_dq");
}

/** The tensors of {@link attentionDecode}. */
export interface AttentionDecodeArgs {
  /** [nSeq, C], overwritten. */
  y: TensorView;
  /** The new token's query per sequence [nSeq, C]. */
  q: TensorView;
  /** [nSeq, maxT, C] each. */
  kCache: TensorView;
  vCache: TensorView;
  /** Cached positions per sequence (u32 [nSeq]), rewritten by the caller between steps. */
  lengths: TensorView;
  nSeq: number;
  C: number;
  H: number;
  maxT: number;
}

/**
 * Record one KV-cached decode step: for each sequence s < nSeq, y[s] = attention of q[s] over the cache at
 * positions 0 .. lengths[s]-1 (the new token's own k and v must already be stored). A sequence with
 * length 0 gets zeros.
 */
export function attentionDecode(plan: Plan, args: AttentionDecodeArgs): void {
  const { y, q, kCache, vCache, lengths, nSeq, C, H, maxT } = args;
  const HD = headSize("attentionDecode", C, H, [
    ["y", y, nSeq * C],
    ["q", q, nSeq * C],
    ["kCache", kCache, nSeq * maxT * C],
    ["vCache", vCache, nSeq * maxT * C],
    ["lengths", lengths, nSeq],
  ]);
  const u = plan.params(
    DECODE_PARAMS,
    { nSeq, C4: C / 4, H, maxT, scale: 1 / Math.sqrt(HD) },
    "attention.decode.params",
  );
  plan.add(decodeSource(HD), [u, y, q, kCache, vCache, lengths], nSeq * H, "attention_decode");
}
