/**
 * Causal multi-head self-attention, FlashAttention style: the T×T score matrix is never stored.
 *
 * Layouts (docs/engine.md): `qkv` [B*T, 3C] holds q | k | v per row, head h in columns h*hd .. h*hd+hd-1
 * of each block; `y` [B*T, C]; `lse` [B*H*T] at (b*H + h)*T + t holds the row's log-sum-exp of the scaled
 * scores s_ij = q_i·k_j / sqrt(hd), j ≤ i, which is all backward needs to rebuild P = exp(S - lse).
 *
 * One thread owns R consecutive rows (queries, or keys for dk/dv) of one (b, h) and keeps them, and
 * their outputs, in hd/4 named vec4 registers each, generated for the head size. The other side's rows
 * are read once per thread for all R rows: straight from the storage buffers (every thread of a
 * workgroup reads the same row at about the same time, so caches serve it), or, in the staged
 * candidates, from a tile of them that the workgroup loads into workgroup memory between two barriers.
 * Threads per workgroup, R and the staging are a candidate of `attention_candidates.ts`: fixed on CPU
 * adapters (64 threads, R = 4, from storage), tuned per shape class on GPUs (`tune.ts`), and every
 * candidate gives the same bits (see {@link forwardSource}).
 *
 * No arrays in the CPU family's kernels: Mesa's llvmpipe (lavapipe) takes time roughly quadratic in an
 * array's size to compile a non-unrolled loop that indexes it, so workgroup tiles of K/V as wide as a
 * workgroup made the hd=64 kernels take minutes to compile; the register form compiles in about a second.
 * The staged GPU candidates keep their tiles small (16 or 32 rows: at most 16.3 KiB at hd=64, see
 * `attentionSharedBytes`); a loop over such a tile compiles in 2-4 s per kernel on lavapipe at hd=64,
 * where unrolling it took 30-76 s. Every sum runs in a fixed order, so results are bit-for-bit
 * deterministic, and no output element is written by two threads. Head sizes must be
 * multiples of 4 (vec4 loads) and at most 256.
 * @module
 */
import {
  checkLengths,
  computeMain,
  type Gpu,
  grid,
  Plan,
  storage,
  type TensorView,
  uniformLayout,
} from "./gpu.ts";
import { DROPOUT_WGSL, DropoutKey, keepThreshold } from "./dropout.ts";
import {
  ATTENTION_CANDIDATES,
  ATTENTION_CPU,
  type AttentionCandidate,
  attentionCandidate,
  attentionFits,
  type AttentionPass,
  attentionSharedBytes,
} from "./attention_candidates.ts";
import { attentionClass, chooseCandidate, type Retargetable, timePlan, type Timing } from "./tune.ts";

/** Threads per workgroup of the decode kernel: keys of a tile. */
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
  for (const [name, v, need] of views) checkLengths(where, need, { [name]: v });
  return hd;
}

/** `f(c)` for each c < V (a vec4 of a head row, a row of a tile), joined: one generated statement each. */
function each(V: number, f: (c: number) => string, sep = "\n  "): string {
  return Array.from({ length: V }, (_, c) => f(c)).join(sep);
}

/**
 * Params of the training kernels; sizes in vec4 units: C4 = C/4, V = hd/4. `blocks` = workgroups used,
 * `scale` = 1/sqrt(hd). Row r of qkv starts at vec4 r*3*C4 (q, then k at + C4, v at + 2*C4), of y and dy
 * at r*C4. A workgroup takes WG * R consecutive rows of one (b, h); in the kernels that read from storage
 * threads past T return at once (there are no barriers), in the staged ones they help load.
 */
const PARAMS = uniformLayout({ B: "u32", T: "u32", C4: "u32", H: "u32", blocks: "u32", scale: "f32" });
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
 * The header of a training kernel for `WG` threads a workgroup; with dropout also the key (bound after
 * the storage buffers, at `keyBinding`) and `dropScale(rowKey, key)`: 1/(1-p) if probability (row, key) is
 * kept, else 0.
 */
function header(WG: number, drop: boolean, keyBinding: number): string {
  const wg = `const WG: u32 = ${WG}u;\n`;
  if (!drop) return PARAMS.wgsl + wg;
  return DROP_PARAMS.wgsl + wg + /* wgsl */ `@group(0) @binding(${keyBinding}) var<uniform> dkey: DropKey;
${DROPOUT_WGSL}
fn dropScale(rowKey: u32, col: u32) -> f32 { return select(0.0, p.keepScale, dropKeep(rowKey, col, p.threshold)); }
`;
}

/**
 * Shared start of the training kernels: this thread's first row t0 of (b, h) (it owns rows t0 .. t0 + R - 1
 * that are < T), `base` = vec4 of row 0, head h; `last` = its last row inside the sequence. Staged kernels
 * also get `wgRows(blk)`: the workgroup's first row and its last one inside the sequence, uniform values
 * (they depend on the workgroup only) that bound the loops holding barriers.
 */
function rowOf(V: number, R: number, staged: boolean): string {
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
${
    staged
      ? `fn wgRows(blk: u32) -> vec2u {
  let nb = (p.T + WG * R - 1u) / (WG * R);
  let t0 = (blk % nb) * WG * R;
  return vec2u(t0, min(t0 + WG * R - 1u, p.T - 1u));
}
`
      : ""
  }`;
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

/** The staged kernels' workgroup loads of one tile: `body` for element e < `count`, e = li, li + WG, .... */
function tileLoads(WG: number, count: number, body: string): string {
  return each(
    Math.ceil(count / WG),
    (n) => `{ let e = li + ${n * WG}u; if (e < ${count}u) { ${body} } }`,
    "\n    ",
  );
}

/**
 * A staged kernel's walk over the other side's rows: from `start` to `end` (exclusive), uniform WGSL
 * expressions that may use `w` = wgRows(wgIndex), in tiles of `tile` rows from `x0` = start; per tile the
 * `loads`, a barrier, this thread's work (skipped by threads past the sequence), and a barrier before the
 * tile is overwritten. A bound that depends on the padding mask (`readBack`) is read back through
 * `workgroupUniformLoad` so the analysis sees it uniform, and is then `start` or `end` in `work`.
 */
function stagedLoop(
  x0: string,
  { start, end, tile, loads, work, readBack }: {
    start: string;
    end: string;
    tile: number;
    loads: string;
    work: string;
    readBack?: "start" | "end";
  },
): string {
  const read = readBack
    ? `if (li == 0u) { bound = ${readBack === "start" ? start : end}; }
  let ${readBack} = workgroupUniformLoad(&bound);`
    : "";
  return /* wgsl */ `let w = wgRows(wgIndex);
  ${read}
  for (var ${x0} = ${readBack === "start" ? "start" : start}; ${x0} < ${
    readBack === "end" ? "end" : end
  }; ${x0} += ${tile}u) {
    ${loads}
    workgroupBarrier();
    if (r.ok) {
      ${work}
    }
    workgroupBarrier();
  }`;
}

/**
 * Forward: a thread owns R consecutive queries t0 .. t0+R-1 and walks keys j ≤ its last query four at a
 * time, loading each key's k and v once for all R rows, with an online softmax per row (running max m,
 * sum l, unnormalised output a): m' = max(m, s), a = a e^(m-m') + Σ e^(s_j-m') v_j, l likewise. Keys past
 * a row's own position are masked to -inf; every row sees key 0 first, so m is finite from then on.
 * With dropout (`drop`), the output sums the kept probabilities scaled by 1/(1-p) while l and lse stay
 * those of the whole softmax, as transformers drops after the softmax. The mask of (query i, key j) is
 * keyed by row (b*H + h)*T + i and column j. Bindings: params, y, lse, qkv (then the key).
 *
 * Why every candidate gives the same bits: a row's groups are the 4-key groups [4m, 4m+3] in increasing
 * order whatever the candidate, each computed by the same expressions. A thread (or a staged workgroup)
 * may walk more groups than a row needs: those past the row are all masked, so with m finite (the row has
 * seen its own key) corr = exp(m - m) = 1 and p = exp(-3e38 - m) = 0, and l * 1 + 0 = l, a * 1 + 0 * v = a
 * exactly; under the padding mask, groups before the row's first visible key have m = -3e38, corr =
 * exp(0) = 1 and p selected to 0, the same no-op. A staged workgroup reads k and v from its tile instead
 * of storage: the same values.
 */
function forwardSource(HD: number, c: AttentionCandidate, drop = false, masked = false): string {
  const V = HD / 4, { WG, R, tile } = c;
  const rows = rowsOf(R);
  const mask = maskOf(masked, drop ? 5 : 4);
  // The weights of the values: the probabilities, or with dropout the kept ones, scaled.
  const w = (rr: number) => drop ? `pd${rr}` : `pr${rr}`;
  // One group of keys j .. j+3, their k in k{n}_{c}, v vector c of key n at `v(n, c)`.
  const group = (v: (n: number, c: number) => string) =>
    /* wgsl */ `let jj = vec4u(j, j + 1u, j + 2u, j + 3u);
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
    // Each v vector is loaded once for all rows.
    ${
      each(
        V,
        (c) =>
          `{
      let v0 = ${v(0, c)}; let v1 = ${v(1, c)}; let v2 = ${v(2, c)}; let v3 = ${v(3, c)};
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
    }`;
  // With the padding mask, a thread (a staged workgroup) whose rows are all real starts at the 4-key
  // group holding ks.
  const loop = tile === 0
    ? /* wgsl */ `for (var j = ${masked ? "select(0u, ks & ~3u, r.t >= ks)" : "0u"}; j <= r.last; j += 4u) {
    // k rows of keys j .. j+3 (clamped to the last row to stay in the sequence; the extra ones are masked).
    ${each(4, (n) => `let r${n} = base + min(j + ${n}u, r.last) * S + C4;`, "\n    ")}
    ${each(4, (n) => each(V, (c) => `let k${n}_${c} = qkv[r${n} + ${c}u];`, " "), "\n    ")}
    // v of a key sits C4 after its k.
    ${group((n, c) => `qkv[r${n} + C4 + ${c}u]`)}
  }`
    : stagedLoop("j0", {
      start: masked ? "select(0u, ks & ~3u, w.x >= ks)" : "0u",
      end: "w.y + 1u",
      tile,
      readBack: masked ? "start" : undefined,
      // Keys past the workgroup's last row are clamped to it (masked for every row).
      loads: tileLoads(
        WG,
        tile * V,
        `let at = base + min(j0 + e / V, w.y) * S + C4 + e % V; kt[e] = qkv[at]; vt[e] = qkv[at + C4];`,
      ),
      work: `for (var g = 0u; g < ${tile}u; g += 4u) {
      let j = j0 + g;
      if (j <= r.last) {
    ${each(4, (n) => each(V, (c) => `let k${n}_${c} = kt[(g + ${n}u) * V + ${c}u];`, " "), "\n    ")}
    ${group((n, c) => `vt[(g + ${n}u) * V + ${c}u]`)}
      }
      }`,
    });
  return header(WG, drop, 4) + rowOf(V, R, tile > 0) +
    (tile > 0
      ? `var<workgroup> kt: array<vec4f, ${tile * V}>;
var<workgroup> vt: array<vec4f, ${tile * V}>;
${masked ? "var<workgroup> bound: u32;\n" : ""}`
      : "") + /* wgsl */
    `
${
      storage({ y: "read_write array<vec4f>", lse: "read_write array<f32>", qkv: "read array<vec4f>" })
    }${mask.decl}${computeMain(WG)}  ${tile > 0 ? "if (wgIndex >= p.blocks) { return; }" : ""}
  let r = rowOf(wgIndex, li);
  ${tile > 0 ? "" : "if (!r.ok) { return; }"}
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
  ${loop}
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
  return PARAMS.wgsl + /* wgsl */ `
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
 *
 * Every candidate adds the queries of a key one at a time in increasing i; the queries a thread (a staged
 * workgroup) walks that a key does not see have P selected to 0, so they add 0 * dy and 0 * q: exact
 * no-ops on values that started at +0. A staged workgroup stages q, dy, lse and D of `tile` queries.
 */
function keySource(HD: number, c: AttentionCandidate, drop = false, masked = false): string {
  const V = HD / 4, { WG, R, tile } = c;
  const rows = rowsOf(R);
  const mask = maskOf(masked, drop ? 6 : 5);
  // Query i sees key j = r.t + rr (see maskOf).
  const sees = (rr: number) =>
    masked ? `i >= r.t + ${rr}u && (r.t + ${rr}u >= ks || i < ks)` : `i >= r.t + ${rr}u`;
  const dri = drop ? "let dri = dropRow(stream, r.bh * p.T + i);" : "";
  // Query i's terms; its q in q{c}, dy in g{c}, lse in li_, D in di, its dropout row key in dri.
  const query = `${
    rows((rr) =>
      `{
      let pr = select(0.0, exp((${each(V, (c) => `dot(k${rr}_${c}, q${c})`, " + ")}) - li_), ${sees(rr)});
      ${drop ? `let md = dropScale(dri, r.t + ${rr}u);` : ""}
      let dsc = pr * (${drop ? "md * " : ""}(${each(V, (c) => `dot(v${rr}_${c}, g${c})`, " + ")}) - di);
      ${drop ? "let pv = pr * md;" : "let pv = pr;"}
      ${each(V, (c) => `dv${rr}_${c} += pv * g${c};`, " ")}
      ${each(V, (c) => `dk${rr}_${c} += dsc * q${c};`, " ")}
    }`, "\n    ")
  }`;
  // With the padding mask, padding keys are seen by padding queries only.
  const loop = tile === 0
    ? /* wgsl */ `for (var i = r.t; i < ${masked ? "select(p.T, ks, r.last < ks)" : "p.T"}; i++) {
    let rq = r.base + i * S;
    let rg = gBase + i * C4;
    ${dri}
    ${each(V, (c) => `let q${c} = qkv[rq + ${c}u];`, " ")}
    ${each(V, (c) => `let g${c} = dy[rg + ${c}u];`, " ")}
    let li_ = lse[r.bh * p.T + i];
    let di = dqkv[rq].x;
    ${query}
  }`
    : stagedLoop("i0", {
      start: "w.x",
      // Under the mask, ks if all the workgroup's keys are padding.
      end: masked ? "select(p.T, ks, w.y < ks)" : "p.T",
      tile,
      readBack: masked ? "end" : undefined,
      // Queries past the sequence are clamped to its last row (and skipped).
      loads: tileLoads(
        WG,
        tile * V,
        `let i = min(i0 + e / V, p.T - 1u); qt[e] = qkv[r.base + i * S + e % V]; gt[e] = dy[gBase + i * C4 + e % V];`,
      ) + "\n    " +
        tileLoads(
          WG,
          tile,
          `let i = min(i0 + e, p.T - 1u); lt[e] = lse[r.bh * p.T + i]; dt[e] = dqkv[r.base + i * S].x;`,
        ),
      work: `for (var u = 0u; u < ${tile}u; u++) {
      let i = i0 + u;
      if (i >= r.t && i < ${masked ? "end" : "p.T"}) {
    ${dri}
    ${each(V, (c) => `let q${c} = qt[u * V + ${c}u];`, " ")}
    ${each(V, (c) => `let g${c} = gt[u * V + ${c}u];`, " ")}
    let li_ = lt[u];
    let di = dt[u];
    ${query}
      }
      }`,
    });
  const staged = tile > 0
    ? `var<workgroup> qt: array<vec4f, ${tile * V}>;
var<workgroup> gt: array<vec4f, ${tile * V}>;
var<workgroup> lt: array<f32, ${tile}>;
var<workgroup> dt: array<f32, ${tile}>;
${masked ? "var<workgroup> bound: u32;\n" : ""}`
    : "";
  return header(WG, drop, 5) + rowOf(V, R, tile > 0) + staged + /* wgsl */ `
${GRAD_BINDINGS}${mask.decl}${computeMain(WG)}  ${tile > 0 ? "if (wgIndex >= p.blocks) { return; }" : ""}
  let r = rowOf(wgIndex, li);
  ${tile > 0 ? "" : "if (!r.ok) { return; }"}
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
  ${loop}
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
 *
 * Every candidate adds the keys of a query one at a time in increasing j; keys it does not see have dS
 * selected to 0 and add 0 * k, an exact no-op. A staged workgroup stages k and v of `tile` keys.
 */
function querySource(HD: number, c: AttentionCandidate, drop = false, masked = false): string {
  const V = HD / 4, { WG, R, tile } = c;
  const rows = rowsOf(R);
  const mask = maskOf(masked, drop ? 6 : 5);
  // Query r.t + rr sees key j (see maskOf).
  const sees = (rr: number) =>
    masked ? `j <= r.t + ${rr}u && (j >= ks || r.t + ${rr}u < ks)` : `j <= r.t + ${rr}u`;
  // Key j's terms; its k in k{c}, v in v{c}.
  const key = rows((rr) =>
    `{
      let sc = ${each(V, (c) => `dot(q${rr}_${c}, k${c})`, " + ")};
      let dp = ${each(V, (c) => `dot(g${rr}_${c}, v${c})`, " + ")};
      let dsc = select(0.0, exp(sc - lrow${rr}) * (${
      drop ? `dropScale(dr${rr}, j) * ` : ""
    }dp - drow${rr}), ${sees(rr)});
      ${each(V, (c) => `dq${rr}_${c} += dsc * k${c};`, " ")}
    }`, "\n    ");
  const loop = tile === 0
    ? /* wgsl */ `for (var j = ${masked ? "select(0u, ks, r.t >= ks)" : "0u"}; j <= r.last; j++) {
    let rk = r.base + j * S + C4;
    ${each(V, (c) => `let k${c} = qkv[rk + ${c}u];`, " ")}
    ${each(V, (c) => `let v${c} = qkv[rk + C4 + ${c}u];`, " ")}
    ${key}
  }`
    : stagedLoop("j0", {
      start: masked ? "select(0u, ks, w.x >= ks)" : "0u",
      end: "w.y + 1u",
      tile,
      readBack: masked ? "start" : undefined,
      loads: tileLoads(
        WG,
        tile * V,
        `let at = r.base + min(j0 + e / V, w.y) * S + C4 + e % V; kt[e] = qkv[at]; vt[e] = qkv[at + C4];`,
      ),
      work: `for (var u = 0u; u < ${tile}u; u++) {
      let j = j0 + u;
      if (j <= r.last) {
    ${each(V, (c) => `let k${c} = kt[u * V + ${c}u];`, " ")}
    ${each(V, (c) => `let v${c} = vt[u * V + ${c}u];`, " ")}
    ${key}
      }
      }`,
    });
  return header(WG, drop, 5) + rowOf(V, R, tile > 0) +
    (tile > 0
      ? `var<workgroup> kt: array<vec4f, ${tile * V}>;
var<workgroup> vt: array<vec4f, ${tile * V}>;
${masked ? "var<workgroup> bound: u32;\n" : ""}`
      : "") + /* wgsl */
    `
${GRAD_BINDINGS}${mask.decl}${computeMain(WG)}  ${tile > 0 ? "if (wgIndex >= p.blocks) { return; }" : ""}
  let r = rowOf(wgIndex, li);
  ${tile > 0 ? "" : "if (!r.ok) { return; }"}
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
  ${loop}
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

/** The WGSL of `pass` for candidate `c`. */
function passSource(pass: AttentionPass, HD: number, c: AttentionCandidate, drop: boolean, masked: boolean) {
  const f = pass === "forward" ? forwardSource : pass === "dkdv" ? keySource : querySource;
  return f(HD, c, drop, masked);
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
  /**
   * Run this candidate (by name, `ATTENTION_CANDIDATES`) instead of the adapter's: the CPU family's fixed
   * one, or the tuner's choice on GPUs. Tests and the bench.
   */
  candidate?: string;
}

/** One training pass to record: its shape, head size, dropout, mask and views (after the params). */
interface PassRecord {
  pass: AttentionPass;
  shape: AttentionShape;
  HD: number;
  drop?: AttentionDropout;
  masked: boolean;
  views: TensorView[];
  label: string;
}

/** Workgroups of a training pass under candidate `c`: one per WG * R rows of each (b, h). */
function blocksOf({ B, T, H }: AttentionShape, c: AttentionCandidate): number {
  return B * H * Math.ceil(T / (c.WG * c.R));
}

/** The Params values for `blocks` workgroups. */
function paramValues({ B, T, C, H }: AttentionShape, blocks: number) {
  return { B, T, C4: C / 4, H, blocks, scale: 1 / Math.sqrt(C / H) };
}

/** The dropout Params values: `v`'s, then the site, the keep threshold and the kept scale. */
function dropValues(v: ReturnType<typeof paramValues>, { site, rate }: AttentionDropout) {
  return { ...v, site, threshold: keepThreshold(rate), keepScale: 1 / (1 - rate) };
}

/** A Params block owned by `plan` for `blocks` workgroups (with dropout's fields when on). */
function recordParams(
  plan: Plan,
  shape: AttentionShape,
  blocks: number,
  drop?: AttentionDropout,
): TensorView {
  const v = paramValues(shape, blocks);
  return drop
    ? plan.params(DROP_PARAMS, dropValues(v, drop), "attention.params")
    : plan.params(PARAMS, v, "attention.params");
}

/** The bytes of that Params block, to rewrite it in place. */
function packParams(shape: AttentionShape, blocks: number, drop?: AttentionDropout): ArrayBuffer {
  const v = paramValues(shape, blocks);
  return drop ? DROP_PARAMS.pack(dropValues(v, drop)) : PARAMS.pack(v);
}

/** Throws unless candidate `c` fits the device for `pass` at head size HD. */
function checkFits(gpu: Gpu, r: PassRecord, c: AttentionCandidate): void {
  if (!attentionFits(c, r.pass, r.HD, r.masked, gpu.limits)) {
    throw new RangeError(
      `attention ${r.pass}: candidate ${c.name} needs ${c.WG} threads and ${
        attentionSharedBytes(c, r.pass, r.HD, r.masked)
      } bytes of workgroup memory at hd=${r.HD}; the device allows ${gpu.limits.maxComputeInvocationsPerWorkgroup} and ${gpu.limits.maxComputeWorkgroupStorageSize}`,
    );
  }
}

/**
 * Record `r` with candidate `c`; returns the dispatch's index (-1 when nothing was recorded) and how to
 * point it at another candidate in place (pipeline, bind group, workgroups and its own uniform block).
 */
function launch(plan: Plan, r: PassRecord, c: AttentionCandidate): Retargetable {
  checkFits(plan.gpu, r, c);
  const blocks = blocksOf(r.shape, c);
  const u = recordParams(plan, r.shape, blocks, r.drop);
  const before = plan.dispatches.length;
  plan.add(passSource(r.pass, r.HD, c, !!r.drop, r.masked), [u, ...r.views], blocks, r.label);
  const index = plan.dispatches.length > before ? before : -1;
  return {
    index,
    retarget(name: string) {
      const gpu = plan.gpu, to = attentionCandidate(name), d = plan.dispatches[index];
      checkFits(gpu, r, to);
      const n = blocksOf(r.shape, to);
      gpu.writeBytes(u.buffer, u.offset, packParams(r.shape, n, r.drop));
      const pipeline = gpu.pipeline(passSource(r.pass, r.HD, to, !!r.drop, r.masked));
      Object.assign(d, {
        pipeline,
        bindGroup: gpu.bindGroup(pipeline, [u, ...r.views], d.label),
        workgroups: grid(gpu, n),
      });
    },
  };
}

/**
 * Record a training pass: with `candidate` when pinned, the CPU family's fixed candidate on CPU adapters,
 * else the tuner's choice for its shape class.
 */
function recordPass(plan: Plan, r: PassRecord): void {
  const pinned = r.shape.candidate ?? (plan.gpu.cpuLike ? ATTENTION_CPU : undefined);
  if (pinned) {
    launch(plan, r, attentionCandidate(pinned));
    return;
  }
  const { B, T, H } = r.shape;
  const cls = attentionClass(r.pass, r.HD, T, B * H, r.masked, !!r.drop);
  chooseCandidate(
    plan,
    cls,
    (name) => launch(plan, r, attentionCandidate(name)),
    (warn) => timePass(plan.gpu, r, warn),
  );
}

/**
 * Time every candidate that fits the device on pass `r`'s shape (fresh zero-filled buffers, a padding
 * mask of zeros and a fresh dropout key where `r` has them): what the tuner compares.
 */
async function timePass(gpu: Gpu, r: PassRecord, warn: (m: string) => void): Promise<Timing> {
  const { B, T, C, H } = r.shape;
  const t = (n: number, label: string) => gpu.tensor(n, `tune.attention.${label}`);
  const qkv = t(B * T * 3 * C, "qkv"), lse = t(B * H * T, "lse");
  const out = r.pass === "forward" ? t(B * T * C, "y") : t(B * T * 3 * C, "dqkv");
  const dy = r.pass === "forward" ? undefined : t(B * T * C, "dy");
  const keyStart = r.masked ? t(B, "keyStart") : undefined;
  const key = r.drop ? new DropoutKey(gpu, 1) : undefined;
  const drop = r.drop && key ? { ...r.drop, key } : undefined;
  const extra = [...(key ? [key.view] : []), ...(keyStart ? [keyStart] : [])];
  const views = dy ? [out, dy, qkv, lse, ...extra] : [out, lse, qkv, ...extra];
  const shape = { B, T, C, H };
  const ms: Record<string, number> = {};
  try {
    for (const c of ATTENTION_CANDIDATES) {
      if (!attentionFits(c, r.pass, r.HD, r.masked, gpu.limits)) continue;
      const plan = new Plan(gpu);
      try {
        launch(plan, { ...r, shape, drop, views }, c);
        ms[c.name] = (await timePlan(gpu, plan)) * 1000;
      } catch (e) {
        warn(
          `tuning attention ${r.pass} ${c.name} on B${B} T${T} C${C} H${H} failed (${
            (e as Error).message
          }): left out`,
        );
      } finally {
        plan.destroy();
      }
    }
  } finally {
    for (const v of [qkv, lse, out, dy, keyStart]) if (v) gpu.free(v);
    key?.destroy();
  }
  return { shape: [B, T, C, H], ms };
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
  const HD = headSize("attentionForward", C, H, [
    ["y", y, B * T * C],
    ["lse", lse, B * H * T],
    ["qkv", qkv, B * T * 3 * C],
  ]);
  const drop = dropoutOf(args);
  const views = [y, lse, qkv, ...extraViews("attentionForward", args, drop)];
  recordPass(plan, {
    pass: "forward",
    shape: args,
    HD,
    drop,
    masked: !!args.keyStart,
    views,
    label: "attention_forward",
  });
}

/** The tensors of {@link attentionBackward}: the forward's qkv, y and lse, dy [B*T, C]; dqkv [B*T, 3C] out. */
export interface AttentionBackwardArgs extends AttentionForwardArgs {
  dqkv: TensorView;
  dy: TensorView;
}

/**
 * Record the attention backward: dqkv (overwritten) from dy and the forward's qkv, y and lse. Three
 * deterministic passes, no atomics: D = rowsum(dy ∘ y) staged in dqkv's dq slots; dk, dv per key; dq per
 * query. P is recomputed from q, k and lse in both of the last two, which are tuned separately.
 */
export function attentionBackward(plan: Plan, args: AttentionBackwardArgs): void {
  const { dqkv, dy, qkv, y, lse, B, T, C, H } = args;
  const HD = headSize("attentionBackward", C, H, [
    ["dqkv", dqkv, B * T * 3 * C],
    ["dy", dy, B * T * C],
    ["qkv", qkv, B * T * 3 * C],
    ["y", y, B * T * C],
    ["lse", lse, B * H * T],
  ]);
  const drop = dropoutOf(args);
  const extra = extraViews("attentionBackward", args, drop);
  const masked = !!args.keyStart;
  // D = dy·y needs no mask: y already holds the dropped sum.
  const u = recordParams(plan, args, 0);
  plan.add(deltaSource(HD), [u, dqkv, dy, y], Math.ceil((B * T * H) / WG_D), "attention_backward_delta");
  const views = [dqkv, dy, qkv, lse, ...extra];
  const r = { shape: args, HD, drop, masked, views };
  recordPass(plan, { ...r, pass: "dkdv", label: "attention_backward_dkdv" });
  recordPass(plan, { ...r, pass: "dq", label: "attention_backward_dq" });
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
