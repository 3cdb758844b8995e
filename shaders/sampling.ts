/**
 * Sampling the next token on the GPU, one workgroup per sequence: temperature, top-k, top-p (nucleus),
 * greedy (temperature 0), end-of-sequence suppressed before `min_tokens`, and a counter-based seeded
 * RNG keyed by (seed, sequence id, step), so a sequence draws the same tokens whatever batch it is in.
 * Only the chosen ids leave the GPU.
 *
 * Top-k and top-p thresholds are found by an exact binary search over the f32 bit patterns of the
 * unnormalised probabilities e_j = exp(z_j - max z) in (0, 1]; positive floats order like their bits.
 * The nucleus is the largest threshold tau whose mass sum(e_j >= tau) still reaches top_p of the total,
 * i.e. tokens are taken in descending order until their mass reaches top_p (the crossing token kept),
 * as the usual sort-and-cumsum implementations do (tied tokens at the boundary are all kept).
 * @module
 */
import { computeMain, type Plan, storage, type TensorView, uniformLayout } from "./gpu.ts";

const WG = 256;

const PARAMS = uniformLayout({
  nSeq: "u32",
  V: "u32",
  eosId: "u32",
  minTokens: "u32",
  temperature: "f32",
  topP: "f32",
  topK: "u32",
  seed: "u32",
});

/** Bindings: params, tokens out [nSeq], counts (generated so far) [nSeq], logits [nSeq, V] (overwritten), seqIds, step. */
export const SAMPLE = PARAMS.wgsl + storage({
  tokens: "read_write array<u32>",
  counts: "read_write array<u32>",
  logits: "read_write array<f32>",
  seqIds: "read array<u32>",
  step: "read array<u32>",
}) + /* wgsl */ `
var<workgroup> redF: array<f32, ${WG}>;
var<workgroup> redU: array<u32, ${WG}>;
var<workgroup> prefix: array<f32, ${WG}>;
var<workgroup> chosen: u32;
var<workgroup> lastKept: array<u32, ${WG}>;

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

fn sumF(li: u32, v: f32) -> f32 {
  redF[li] = v;
  workgroupBarrier();
  for (var o = ${WG / 2}u; o > 0u; o = o >> 1u) {
    if (li < o) { redF[li] = redF[li] + redF[li + o]; }
    workgroupBarrier();
  }
  // A uniform load, so loops that branch on the sum keep their barriers in uniform control flow.
  let r = workgroupUniformLoad(&redF[0]);
  workgroupBarrier();
  return r;
}

fn sumU(li: u32, v: u32) -> u32 {
  redU[li] = v;
  workgroupBarrier();
  for (var o = ${WG / 2}u; o > 0u; o = o >> 1u) {
    if (li < o) { redU[li] = redU[li] + redU[li + o]; }
    workgroupBarrier();
  }
  // A uniform load, so loops that branch on the sum keep their barriers in uniform control flow.
  let r = workgroupUniformLoad(&redU[0]);
  workgroupBarrier();
  return r;
}

${computeMain(WG)}  let s = wgIndex;
  if (s >= p.nSeq) { return; }
  let V = p.V;
  let base = s * V;
  let per = (V + ${WG - 1}u) / ${WG}u;
  let lo = min(li * per, V);
  let hi = min(lo + per, V);
  let suppressEos = counts[s] < p.minTokens;

  // Greedy: argmax, lowest index on ties.
  if (p.temperature <= 0.0) {
    var best = -3.0e38;
    var bestI = V;
    for (var j = lo; j < hi; j++) {
      let z = logits[base + j];
      if (suppressEos && j == p.eosId) { continue; }
      if (z > best) { best = z; bestI = j; }
    }
    redF[li] = best;
    redU[li] = bestI;
    workgroupBarrier();
    for (var o = ${WG / 2}u; o > 0u; o = o >> 1u) {
      if (li < o) {
        let a = redF[li]; let b = redF[li + o];
        if (b > a || (b == a && redU[li + o] < redU[li])) { redF[li] = b; redU[li] = redU[li + o]; }
      }
      workgroupBarrier();
    }
    if (li == 0u) { tokens[s] = redU[0]; counts[s] = counts[s] + 1u; }
    return;
  }

  // e_j = exp((z_j - max z) / T), written over the logits; suppressed tokens get 0.
  var m = -3.0e38;
  for (var j = lo; j < hi; j++) {
    if (suppressEos && j == p.eosId) { continue; }
    m = max(m, logits[base + j]);
  }
  redF[li] = m;
  workgroupBarrier();
  for (var o = ${WG / 2}u; o > 0u; o = o >> 1u) {
    if (li < o) { redF[li] = max(redF[li], redF[li + o]); }
    workgroupBarrier();
  }
  let zmax = redF[0];
  workgroupBarrier();
  for (var j = lo; j < hi; j++) {
    var e = 0.0;
    if (!(suppressEos && j == p.eosId)) { e = exp((logits[base + j] - zmax) / p.temperature); }
    logits[base + j] = e;
  }
  storageBarrier();
  workgroupBarrier();

  // Top-k: the largest tau (as f32 bits) with count(e >= tau) >= k.
  var tauK = 0u;
  if (p.topK > 0u && p.topK < V) {
    var a = 0u;                 // count(e >= a) >= k holds
    var b = 0x3f800001u;        // just above 1.0: count is 0
    loop {
      if (b - a <= 1u) { break; }
      let mid = a + (b - a) / 2u;
      let t = bitcast<f32>(mid);
      var c = 0u;
      for (var j = lo; j < hi; j++) { if (logits[base + j] >= t) { c++; } }
      if (sumU(li, c) >= p.topK) { a = mid; } else { b = mid; }
    }
    tauK = a;
  }
  let tk = bitcast<f32>(tauK);

  // Top-p among the top-k survivors: the largest tau with mass(e >= tau) >= topP * mass(all kept).
  var part = 0.0;
  for (var j = lo; j < hi; j++) { let e = logits[base + j]; if (e >= tk && e > 0.0) { part += e; } }
  let total = sumF(li, part);
  var tau = tauK;
  if (p.topP < 1.0) {
    let goal = p.topP * total;
    var a = tauK;
    var b = 0x3f800001u;
    loop {
      if (b - a <= 1u) { break; }
      let mid = a + (b - a) / 2u;
      let t = bitcast<f32>(mid);
      var mass = 0.0;
      for (var j = lo; j < hi; j++) { let e = logits[base + j]; if (e >= t && e >= tk) { mass += e; } }
      if (sumF(li, mass) >= goal) { a = mid; } else { b = mid; }
    }
    tau = a;
  }
  let tf = max(bitcast<f32>(tau), tk);

  // Draw u in [0, kept mass) and find its token by a prefix over the threads' contiguous blocks.
  var mine = 0.0;
  var myLast = 0xffffffffu;
  for (var j = lo; j < hi; j++) { let e = logits[base + j]; if (e >= tf && e > 0.0) { mine += e; myLast = j; } }
  prefix[li] = mine;
  lastKept[li] = myLast;
  if (li == 0u) { chosen = 0xffffffffu; }
  workgroupBarrier();
  if (li == 0u) {
    var acc = 0.0;
    for (var t = 0u; t < ${WG}u; t++) { let v = prefix[t]; prefix[t] = acc; acc += v; }
    redF[0] = acc;
  }
  workgroupBarrier();
  let kept = redF[0];
  let r = pcg(p.seed ^ pcg(seqIds[s] ^ pcg(step[0] + 0x9e3779b9u)));
  let u = f32(r >> 8u) * (1.0 / 16777216.0) * kept;
  let start = prefix[li];
  if (u >= start && u < start + mine) {
    var acc = start;
    var pick = 0xffffffffu;
    var last = 0xffffffffu;
    for (var j = lo; j < hi; j++) {
      let e = logits[base + j];
      if (e >= tf && e > 0.0) {
        last = j;
        acc += e;
        if (u < acc) { pick = j; break; }
      }
    }
    if (pick == 0xffffffffu) { pick = last; }
    chosen = pick;
  }
  workgroupBarrier();
  if (li == 0u) {
    var c = chosen;
    // Rounding can leave u at the very top of the range: take the last kept token, from the last thread
    // that kept one (WG steps, not V: one thread may loop only so often on llvmpipe).
    if (c == 0xffffffffu) {
      for (var t = ${WG}u; t > 0u; t--) { if (lastKept[t - 1u] != 0xffffffffu) { c = lastKept[t - 1u]; break; } }
    }
    tokens[s] = c;
    counts[s] = counts[s] + 1u;
  }
}
`;

/** Sampling settings; temperature 0 is greedy, topK 0 and topP 1 disable those filters. */
export interface SamplingParams {
  temperature: number;
  topP: number;
  topK: number;
  minTokens: number;
  eosId: number;
  seed: number;
}

/** The buffers of one {@link sample} step. */
export interface SampleArgs {
  /** The chosen token per sequence, u32 [nSeq] (written). */
  tokens: TensorView;
  /** Tokens generated so far per sequence, u32 [nSeq] (incremented). */
  counts: TensorView;
  /** [nSeq, V], overwritten with unnormalised probabilities. */
  logits: TensorView;
  /** A stable id per sequence for the RNG, u32 [nSeq]. */
  seqIds: TensorView;
  /** One-element step number, rewritten by the caller (or the GPU) each step. */
  step: TensorView;
  nSeq: number;
  V: number;
  settings: SamplingParams;
}

/** Record one sampling step: a token per sequence from its logits row. */
export function sample(plan: Plan, args: SampleArgs): void {
  const { tokens, counts, logits, seqIds, step, nSeq, V, settings: s } = args;
  if (!(s.temperature >= 0)) throw new Error(`temperature must be >= 0, got ${s.temperature}`);
  if (!(s.topP > 0 && s.topP <= 1)) throw new Error(`top_p must be in (0, 1], got ${s.topP}`);
  if (!(Number.isInteger(s.topK) && s.topK >= 0)) {
    throw new Error(`top_k must be an integer >= 0, got ${s.topK}`);
  }
  const u = plan.params(PARAMS, { nSeq, V, ...s, seed: s.seed >>> 0 }, "sample.params");
  plan.add(SAMPLE, [u, tokens, counts, logits, seqIds, step], nSeq, "sample");
}
