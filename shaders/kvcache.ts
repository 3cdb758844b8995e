/**
 * Kernels for KV-cached decoding: store keys and values into the per-layer cache, embed one new token
 * per sequence at its own position, and gather each sequence's last row.
 *
 * Cache layout: [nSeq, maxT, C] (sequence s, position t, head h in columns h*hd..).
 * @module
 */
import { computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";

const WG = 256;

const KV_STORE_PARAMS = uniformLayout({ nSeq: "u32", rows: "u32", C: "u32", maxT: "u32" });
/** `first` = 1 for the first wte chunk, which also adds the position embedding. */
const EMBED_AT_PARAMS = uniformLayout({ nSeq: "u32", C: "u32", v0: "u32", v1: "u32", first: "u32" });
const GATHER_PARAMS = uniformLayout({ nSeq: "u32", T: "u32", C: "u32" });
const COPY_PARAMS = uniformLayout({ rows: "u32", C: "u32", ld: "u32", offset: "u32" });
const ADVANCE_PARAMS = uniformLayout({ nSeq: "u32", maxNew: "u32" });

/**
 * For every sequence s and source row r < rows: cache[s, base[s] + r, :] = k (and v) of qkv row s*rows + r.
 * Prefill: rows = context length, base = 0. Decode: rows = 1, base = current length.
 */
export const KV_STORE = KV_STORE_PARAMS.wgsl + storage({
  kCache: "read_write array<f32>",
  vCache: "read_write array<f32>",
  qkv: "read array<f32>",
  base: "read array<u32>",
}) + computeMain(WG) + /* wgsl */ `  let i = globalIndex;
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
export const EMBED_AT = EMBED_AT_PARAMS.wgsl + storage({
  out: "read_write array<f32>",
  tokens: "read array<u32>",
  pos: "read array<u32>",
  wte: "read array<f32>",
  wpe: "read array<f32>",
}) + computeMain(WG) + /* wgsl */ `  let i = globalIndex;
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
export const GATHER_ROWS = GATHER_PARAMS.wgsl +
  storage({ out: "read_write array<f32>", x: "read array<f32>", idx: "read array<u32>" }) + computeMain(WG) +
  /* wgsl */ `  let i = globalIndex;
  if (i >= p.nSeq * p.C) { return; }
  let s = i / p.C;
  let c = i % p.C;
  out[i] = x[(s * p.T + idx[s]) * p.C + c];
}
`;

/**
 * Record a store of k and v from `qkv` ([nSeq*rows, 3C]) into the caches [nSeq, maxT, C] at per-sequence
 * `base` positions (u32 [nSeq]).
 */
export function kvStore(
  plan: Plan,
  args: {
    kCache: TensorView;
    vCache: TensorView;
    qkv: TensorView;
    base: TensorView;
    nSeq: number;
    rows: number;
    C: number;
    maxT: number;
  },
): void {
  const { kCache, vCache, qkv, base, nSeq, rows, C, maxT } = args;
  const u = plan.params(KV_STORE_PARAMS, { nSeq, rows, C, maxT }, "kvstore.params");
  plan.add(KV_STORE, [u, kCache, vCache, qkv, base], Math.ceil((nSeq * rows * C) / WG), "kv_store");
}

/** Record out[s] = wte[tokens[s]] + wpe[pos[s]] for out [nSeq, C], one dispatch per wte chunk. */
export function embedAt(
  plan: Plan,
  args: {
    out: TensorView;
    tokens: TensorView;
    pos: TensorView;
    wte: { view: TensorView; v0: number; v1: number }[];
    wpe: TensorView;
    nSeq: number;
    C: number;
  },
): void {
  const { out, tokens, pos, wte, wpe, nSeq, C } = args;
  wte.forEach((chunk, i) => {
    const u = plan.params(
      EMBED_AT_PARAMS,
      { nSeq, C, v0: chunk.v0, v1: chunk.v1, first: i === 0 ? 1 : 0 },
      "embedat.params",
    );
    plan.add(EMBED_AT, [u, out, tokens, pos, chunk.view, wpe], Math.ceil((nSeq * C) / WG), "embed_at");
  });
}

/** Record out[s] = x[s*T + idx[s]] for rows of width C (idx: u32 [nSeq]). */
export function gatherRows(
  plan: Plan,
  { out, x, idx, nSeq, T, C }: {
    out: TensorView;
    x: TensorView;
    idx: TensorView;
    nSeq: number;
    T: number;
    C: number;
  },
): void {
  const u = plan.params(GATHER_PARAMS, { nSeq, T, C }, "gather.params");
  plan.add(GATHER_ROWS, [u, out, x, idx], Math.ceil((nSeq * C) / WG), "gather_rows");
}

/** out[r, c] = x[r * ld + offset + c] for c < C: e.g. the q block of a qkv row. */
export const COPY_COLUMNS = COPY_PARAMS.wgsl +
  storage({ out: "read_write array<f32>", x: "read array<f32>" }) + computeMain(WG) + /* wgsl */
  `  let i = globalIndex;
  if (i >= p.rows * p.C) { return; }
  let r = i / p.C;
  out[i] = x[r * p.ld + p.offset + i % p.C];
}
`;

/**
 * After a decode step: history[s, step] = tokens[s]; pos[s] += 1; lens[s] = pos[s] + 1.
 * `step` is a one-element buffer the caller rewrites each step.
 */
export const ADVANCE = ADVANCE_PARAMS.wgsl + storage({
  history: "read_write array<u32>",
  pos: "read_write array<u32>",
  lens: "read_write array<u32>",
  tokens: "read array<u32>",
  step: "read array<u32>",
}) + computeMain(WG) + /* wgsl */ `  let s = globalIndex;
  if (s >= p.nSeq) { return; }
  if (step[0] < p.maxNew) { history[s * p.maxNew + step[0]] = tokens[s]; }
  pos[s] = pos[s] + 1u;
  lens[s] = pos[s] + 1u;
}
`;

/** Record out = the `C` columns at `offset` of each row of x (row stride ld). */
export function copyColumns(
  plan: Plan,
  { out, x, rows, C, ld, offset }: {
    out: TensorView;
    x: TensorView;
    rows: number;
    C: number;
    ld: number;
    offset: number;
  },
): void {
  const u = plan.params(COPY_PARAMS, { rows, C, ld, offset }, "copycols.params");
  plan.add(COPY_COLUMNS, [u, out, x], Math.ceil((rows * C) / WG), "copy_columns");
}

/**
 * Record the end of a decode step: append tokens to the history [nSeq, maxNew] and move every sequence
 * one position on (pos and lens, u32 [nSeq]); `step` is the one-element step counter.
 */
export function advance(
  plan: Plan,
  args: {
    history: TensorView;
    pos: TensorView;
    lens: TensorView;
    tokens: TensorView;
    step: TensorView;
    nSeq: number;
    maxNew: number;
  },
): void {
  const { history, pos, lens, tokens, step, nSeq, maxNew } = args;
  const u = plan.params(ADVANCE_PARAMS, { nSeq, maxNew }, "advance.params");
  plan.add(ADVANCE, [u, history, pos, lens, tokens, step], Math.ceil(nSeq / WG), "advance");
}

/** counter[0] += 1: moves the decode step on the GPU, so several steps can share one submission. */
export const INCREMENT = storage({ counter: "read_write array<u32>" }, 0) + computeMain(1) + /* wgsl */ `
  counter[0] = counter[0] + 1u;
}
`;

/** Record counter[0] += 1. */
export function increment(plan: Plan, counter: TensorView): void {
  plan.add(INCREMENT, [counter], 1, "increment");
}
