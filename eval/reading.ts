/**
 * The reading task (eye tracking and self-paced reading), as `evaluation_pipeline/reading/run.py`
 * of the BabyLM 2025 pipeline computes it for causal models.
 *
 * Surprisal. `pred` is the surprisal of `word` given the context `item`; `prev_pred` the same for
 * `prev_word` given `prev_item` (missing where pandas reads `prev_item` as NA: empty or "None"). As
 * in the pipeline's `get_p2`: the word is tokenized on its own (no leading space, no special
 * tokens); its first token is predicted after `tokenize(item)` (BOS first if the tokenizer adds
 * one); every further token k is predicted after `tokenize(item + decode(t_0) + … + decode(t_k−1))`,
 * with the id `tokenize(decode(t_k))[0]`; the word's probability is the product. We report −log2 p
 * (bits); the pipeline uses −ln p. Scaling a predictor changes no R², t or p-value (interaction
 * terms scale with it), only the coefficient (per bit here, per nat there).
 *
 * Regressions (statsmodels OLS, intercept included; rows with a missing value in the model's
 * columns are dropped, per model):
 * - without spillover, every DV: DV ~ S + L + C + S:L + S:C + L:C, and the same + pred, where
 *   S = Subtlex_log10, L = length, C = context_length;
 * - with one-word spillover, every DV: DV ~ S + L + C + PL + PP + all 10 pairwise products of those
 *   five, and the same + pred, where PL = prev_length, PP = prev_pred.
 * DVs: RTfirstfix, RTfirstpass, RTgopast, RTrightbound, self_paced_reading_time, ELAN, LAN, N400,
 * P600, EPNP, PNP. Score of a DV = (R²_model − R²_baseline) / (1 − R²_baseline) × 100. The eye-tracking
 * score is the mean over the four RT* measures without spillover; the self-paced reading score is
 * that of self_paced_reading_time with spillover.
 * @module
 */
import type { ReadingRow } from "./readers.ts";
import { ols, pearson } from "./stats.ts";
import { type Span, withBos } from "./score.ts";
import type { TextCodec } from "./types.ts";

/** Dependent variables, in the pipeline's order. */
export const READING_DVS = [
  "RTfirstfix",
  "RTfirstpass",
  "RTgopast",
  "RTrightbound",
  "self_paced_reading_time",
  "ELAN",
  "LAN",
  "N400",
  "P600",
  "EPNP",
  "PNP",
] as const;

/** The eye-tracking measures averaged into the eye-tracking score (the pipeline's `"RT" in dv`). */
export const EYE_TRACKING_DVS = ["RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound"];

/** Spans whose log-probabilities sum to ln p(word | context), following the pipeline's `get_p2`. */
export function wordSpans(enc: TextCodec, context: string, word: string, where: string): Span[] {
  const target = enc.encode(word);
  if (target.length === 0) throw new Error(`${where}: the word ${JSON.stringify(word)} has no tokens`);
  const spans: Span[] = [];
  let ctx = context;
  for (let k = 0; k < target.length; k++) {
    let id = target[k];
    if (k > 0) {
      const t = enc.decode([target[k]]);
      const re = enc.encode(t);
      if (re.length === 0) {
        throw new Error(`${where}: token ${target[k]} of ${JSON.stringify(word)} re-encodes to nothing`);
      }
      id = re[0];
    }
    const ids = withBos(enc, enc.encode(ctx));
    if (ids.length === 0) {
      throw new Error(`${where}: the context ${JSON.stringify(ctx)} has no tokens and there is no BOS`);
    }
    spans.push({ ids: [...ids, id], from: ids.length });
    ctx += enc.decode([target[k]]);
  }
  return spans;
}

/** All spans of the reading rows, and how to turn their sums into `pred` / `prev_pred` (bits). */
export function readingSpans(
  enc: TextCodec,
  rows: ReadingRow[],
  file: string,
): { spans: Span[]; finish(sums: Float64Array): { pred: Float64Array; prevPred: Float64Array } } {
  const spans: Span[] = [];
  const cur: Array<[number, number]> = [], prev: Array<[number, number] | null> = [];
  for (const r of rows) {
    const a = spans.length;
    spans.push(...wordSpans(enc, r.item, r.word, `${file}:${r.line}`));
    cur.push([a, spans.length]);
    if (r.prevItem === null || r.prevWord === null) prev.push(null);
    else {
      const b = spans.length;
      spans.push(...wordSpans(enc, r.prevItem, r.prevWord, `${file}:${r.line} (prev_word)`));
      prev.push([b, spans.length]);
    }
  }
  const bits = (sums: Float64Array, [a, b]: [number, number]) => {
    let s = 0;
    for (let i = a; i < b; i++) s += sums[i];
    return -s / Math.LN2;
  };
  return {
    spans,
    finish: (sums) => ({
      pred: Float64Array.from(cur, (r) => bits(sums, r)),
      prevPred: Float64Array.from(prev, (r) => (r === null ? NaN : bits(sums, r))),
    }),
  };
}

/** One DV's pair of regressions. */
export interface ReadingFit {
  dv: string;
  /** Coefficient of `pred` (per bit of surprisal), its t-value and two-sided p-value. */
  coefficient: number;
  t: number;
  p: number;
  r2: number;
  r2Baseline: number;
  deltaR2: number;
  aic: number;
  deltaAic: number;
  /** Rows in the model with surprisal. */
  n: number;
  /** ΔR² / (1 − R²_baseline) × 100. */
  score: number;
  /** Why the fit failed (e.g. a constant surprisal from an untrained model); the numbers are then NaN. */
  error?: string;
}

/** Results of the reading task. */
export interface ReadingResult {
  kind: "reading";
  rows: number;
  /** Mean of the RT* scores without spillover. */
  eyeTracking: number;
  /** Score of self_paced_reading_time with spillover. */
  selfPaced: number;
  noSpillover: ReadingFit[];
  spillover: ReadingFit[];
  /** Pearson correlation of pred with each DV (pairwise complete). */
  correlations: Record<string, number>;
  meanSurprisalBits: number;
}

type Col = (r: number) => number;

function fitPair(dv: string, y: Col, base: Array<[string, Col]>, pred: Col, n: number): ReadingFit {
  try {
    return fitPairOrThrow(dv, y, base, pred, n);
  } catch (e) {
    const error = `${dv}: ${(e as Error).message}`;
    return {
      dv,
      coefficient: NaN,
      t: NaN,
      p: NaN,
      r2: NaN,
      r2Baseline: NaN,
      deltaR2: NaN,
      aic: NaN,
      deltaAic: NaN,
      n: 0,
      score: NaN,
      error,
    };
  }
}

function fitPairOrThrow(dv: string, y: Col, base: Array<[string, Col]>, pred: Col, n: number): ReadingFit {
  const ok = (cols: Col[]) => {
    const rows: number[] = [];
    for (let i = 0; i < n; i++) if (cols.every((c) => Number.isFinite(c(i)))) rows.push(i);
    return rows;
  };
  const design = (rows: number[], cols: Array<[string, Col]>) => ({
    y: rows.map(y),
    X: cols.map(([, c]) => rows.map(c)),
    names: cols.map(([name]) => name),
  });
  const b = design(ok([y, ...base.map(([, c]) => c)]), base);
  const fb = ols(b.y, b.X, b.names);
  const withPred: Array<[string, Col]> = [...base, ["pred", pred]];
  const m = design(ok([y, ...withPred.map(([, c]) => c)]), withPred);
  const fm = ols(m.y, m.X, m.names);
  const j = fm.k - 1; // pred is the last column
  return {
    dv,
    coefficient: fm.coef[j],
    t: fm.t[j],
    p: fm.p[j],
    r2: fm.r2,
    r2Baseline: fb.r2,
    deltaR2: fm.r2 - fb.r2,
    aic: fm.aic,
    deltaAic: fm.aic - fb.aic,
    n: fm.n,
    score: ((fm.r2 - fb.r2) / (1 - fb.r2)) * 100,
  };
}

/** Products of every pair of the named columns, in the formula's order (i < j). */
function interactions(cols: Array<[string, Col]>): Array<[string, Col]> {
  const out: Array<[string, Col]> = [];
  for (let i = 0; i < cols.length; i++) {
    for (let j = i + 1; j < cols.length; j++) {
      const [a, fa] = cols[i], [b, fb] = cols[j];
      out.push([`${a}:${b}`, (r) => fa(r) * fb(r)]);
    }
  }
  return out;
}

/** The regressions and scores from the rows and their surprisals. */
export function readingRegressions(
  rows: ReadingRow[],
  pred: Float64Array,
  prevPred: Float64Array,
): ReadingResult {
  const n = rows.length;
  const num = (name: string): Col => (r) => rows[r].num[name];
  const p: Col = (r) => pred[r];
  const main: Array<[string, Col]> = [
    ["Subtlex_log10", num("Subtlex_log10")],
    ["length", num("length")],
    ["context_length", num("context_length")],
  ];
  const spillMain: Array<[string, Col]> = [...main, ["prev_length", num("prev_length")], [
    "prev_pred",
    (r) => prevPred[r],
  ]];
  const noSpillover = READING_DVS.map((dv) => fitPair(dv, num(dv), [...main, ...interactions(main)], p, n));
  const spillover = READING_DVS.map((dv) =>
    fitPair(dv, num(dv), [...spillMain, ...interactions(spillMain)], p, n)
  );
  const correlations: Record<string, number> = {};
  for (const dv of READING_DVS) {
    const idx = rows.map((_, i) => i).filter((i) =>
      Number.isFinite(pred[i]) && Number.isFinite(rows[i].num[dv])
    );
    correlations[dv] = pearson(idx.map((i) => pred[i]), idx.map((i) => rows[i].num[dv]));
  }
  const eye = noSpillover.filter((f) => EYE_TRACKING_DVS.includes(f.dv));
  let mean = 0;
  for (const v of pred) mean += v;
  return {
    kind: "reading",
    rows: n,
    eyeTracking: eye.reduce((s, f) => s + f.score, 0) / eye.length,
    selfPaced: spillover.find((f) => f.dv === "self_paced_reading_time")!.score,
    noSpillover,
    spillover,
    correlations,
    meanSurprisalBits: mean / Math.max(1, n),
  };
}
