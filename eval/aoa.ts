/**
 * Age of acquisition (Chang & Bergen 2022) as the BabyLM 2026 pipeline's AoA task computes it
 * (babylm-org/babylm-eval `strict/evaluation_pipeline/AoA_word/` and `utils.AoAEvaluator`, at 3d57ddc).
 *
 * Surprisal. For every CDI word of `cdi_childes.json` longer than one character and every one of its
 * contexts, the text `context.trim() + " " + word.trim()` is tokenized as the zero-shot tasks do and the
 * surprisal is −Σ ln p over the tokens overlapping the word (the word's own leading-space token
 * included), in nats, at every word checkpoint of a run. A context the model cannot hold gives NaN, as
 * the pipeline's failed calls do.
 *
 * Model AoA of a word. Its surprisals are averaged over contexts per checkpoint (NaN if any context is
 * NaN, as numpy's mean; such a checkpoint is left out of the fit). With at least 3
 * checkpoints, a 4-parameter sigmoid f(x) = a / (1 + exp(−b (x − c))) + d is fitted by bounded least
 * squares to −surprisal against x = log10(words + 1), from a = range, b = 1, c = mean x, d = min, with
 * bounds a ∈ [0, 10·range + 1], b ∈ [0, 100], c ∈ [min x − 1, max x + 1], d ∈ [min − 2·range − 1, max + 1]
 * (in −surprisal). The threshold is halfway between chance, n_subword · ln(vocab_size), and the lowest
 * mean surprisal; the AoA is the x where f crosses it, kept only if 10^x − 1 lies within the checkpoints.
 * n_subword is the word's token count after "The " minus that of "The" (at least 1).
 *
 * Child AoA of a word: the same sigmoid fitted to the proportion of children producing it at 16…30
 * months (NaN ages dropped, at least 3 left) from a = 1, b = 0.1, c = mean age, d = 0, bounds
 * a ∈ [0, 2], b ∈ [0, 1], c ∈ [first, last age], d ∈ [−0.5, 0.5]; the AoA is the age at proportion
 * 0.5, kept only within the ages.
 *
 * Score: Pearson r over the words with both AoAs; 0 when fewer than 3 words remain or p > 0.1.
 *
 * Fitting. The pipeline calls scipy's `curve_fit` (trust-region reflective, at most 1000 or 20000
 * evaluations); here a Levenberg-Marquardt with the bounds enforced by projection and an active set,
 * in float64, run to convergence. Both reach the least-squares optimum where it is unique; a test
 * compares them word by word on the Chang & Bergen data when scipy is installed.
 * @module
 */
import { parseCsv } from "./csv.ts";
import { DataError } from "./readers.ts";
import { completionSpan, type Span } from "./score.ts";
import { pearson, studentTwoSided } from "./stats.ts";
import type { TextCodec } from "./types.ts";

/** One checkpoint's AoA surprisals: per word, per context, −Σ ln p of the word (NaN: not scorable). */
export interface AoaSurprisalResult {
  kind: "aoa_surprisal";
  words: string[];
  contexts: string[][];
  surprisal: number[][];
  /** Each word's token count after "The " (aoa.ts `subwordLength`) and the tokenizer's vocab_size. */
  subwordTokens: number[];
  vocabSize: number;
  /** Mean of the finite surprisals, for learning curves. */
  meanSurprisal: number;
}

/** The CDI words and their contexts. */
export interface AoaWords {
  words: string[];
  contexts: string[][];
}

/**
 * `cdi_childes.json`: an object from word to a list of `{context, ...}`. Words of one character and
 * words with fewer than `minContext` contexts are dropped, as the pipeline's `load_eval`.
 */
export function parseCdiChildes(text: string, file: string, minContext = 0): AoaWords {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new DataError(
      file,
      undefined,
      `expected a JSON object, found invalid JSON (${(e as Error).message})`,
    );
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new DataError(file, undefined, "expected a JSON object from word to a list of contexts");
  }
  const out: AoaWords = { words: [], contexts: [] };
  for (const [word, list] of Object.entries(data as Record<string, unknown>)) {
    if (!Array.isArray(list)) {
      throw new DataError(file, undefined, `word ${JSON.stringify(word)}: expected a list of contexts`);
    }
    if (word.length <= 1 || list.length < minContext) continue;
    out.words.push(word);
    out.contexts.push(list.map((c, i) => {
      const ctx = (c as { context?: unknown } | null)?.context;
      if (typeof ctx !== "string") {
        throw new DataError(
          file,
          undefined,
          `word ${JSON.stringify(word)}, entry ${i}: expected a "context" string`,
        );
      }
      return ctx;
    }));
  }
  return out;
}

/** The scored span of one (context, word): the word's overlapping tokens after the context. */
export function aoaSpan(enc: TextCodec, context: string, word: string): Span {
  const w = word.trim();
  return completionSpan(enc, `${context.trim()} ${w}`, w);
}

/** A word's token count in running text: tokens of "The " + word minus those of "The", at least 1. */
export function subwordLength(enc: TextCodec, word: string): number {
  return Math.max(1, enc.encode(`The ${word}`).length - enc.encode("The").length);
}

/** Children's proportions producing each word at each age (months). */
export interface CdiHuman {
  ages: number[];
  words: string[];
  /** proportions[w][k]: word w at ages[k]; NaN where missing. */
  proportions: number[][];
}

/**
 * The pipeline's `cdi_human.csv`: a `word` column and age columns "16" … "30" (those present are
 * used). Wordbank exports such as Chang & Bergen's name the word column `definition`; it is taken when
 * there is no `word` column.
 */
export function parseCdiHuman(text: string, file: string): CdiHuman {
  const rows = parseCsv(text, file);
  if (rows.length === 0) throw new DataError(file, 1, "expected a header row, found an empty file");
  const header = rows[0].fields;
  let iWord = header.indexOf("word");
  if (iWord < 0) iWord = header.indexOf("definition");
  if (iWord < 0) {
    throw new DataError(file, 1, `expected a column "word" (or "definition"), found ${header.join(",")}`);
  }
  const ageCols: Array<[number, number]> = [];
  for (let age = 16; age <= 30; age++) {
    const i = header.indexOf(String(age));
    if (i >= 0) ageCols.push([age, i]);
  }
  if (ageCols.length === 0) throw new DataError(file, 1, 'expected age columns "16" … "30", found none');
  const out: CdiHuman = { ages: ageCols.map(([a]) => a), words: [], proportions: [] };
  for (const { fields, line } of rows.slice(1)) {
    if (fields.length === 1 && fields[0] === "") continue;
    if (fields.length !== header.length) {
      throw new DataError(file, line, `expected ${header.length} fields, found ${fields.length}`);
    }
    out.words.push(fields[iWord]);
    out.proportions.push(ageCols.map(([age, i]) => {
      const f = fields[i].trim();
      if (f === "" || f === "NA" || f === "NaN" || f === "nan") return NaN;
      const v = Number(f);
      if (!Number.isFinite(v)) {
        throw new DataError(
          file,
          line,
          `column "${age}": expected a number, found ${JSON.stringify(fields[i])}`,
        );
      }
      return v;
    }));
  }
  return out;
}

/** Sigmoid parameters [a, b, c, d] of a / (1 + exp(−b (x − c))) + d. */
export type Sigmoid = [number, number, number, number];

/** The sigmoid at x. */
export function sigmoidAt([a, b, c, d]: Sigmoid, x: number): number {
  return a / (1 + Math.exp(-b * (x - c))) + d;
}

/** Solve the n×n system A x = r (row-major, pivoting); undefined when singular. */
function solve(A: number[][], r: number[]): number[] | undefined {
  const n = r.length;
  const M = A.map((row, i) => [...row, r[i]]);
  for (let k = 0; k < n; k++) {
    let p = k;
    for (let i = k + 1; i < n; i++) if (Math.abs(M[i][k]) > Math.abs(M[p][k])) p = i;
    if (!(Math.abs(M[p][k]) > 1e-300)) return undefined;
    [M[k], M[p]] = [M[p], M[k]];
    for (let i = k + 1; i < n; i++) {
      const f = M[i][k] / M[k][k];
      for (let j = k; j <= n; j++) M[i][j] -= f * M[k][j];
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let i = n - 1; i >= 0; i--) {
    let s = M[i][n];
    for (let j = i + 1; j < n; j++) s -= M[i][j] * x[j];
    x[i] = s / M[i][i];
  }
  return x;
}

/**
 * Bounded least-squares fit of the sigmoid to (x, y) from `p0`: Levenberg-Marquardt steps on the
 * parameters not held at a bound by the gradient, projected onto the box. Undefined when no finite
 * fit exists (non-finite data or start outside the bounds).
 */
export function fitSigmoid(
  x: ArrayLike<number>,
  y: ArrayLike<number>,
  p0: Sigmoid,
  lower: Sigmoid,
  upper: Sigmoid,
  maxIterations = 5000,
): Sigmoid | undefined {
  const n = x.length;
  if (n === 0 || p0.some((v, i) => !(v >= lower[i] && v <= upper[i]))) return undefined;
  const clip = (p: number[]): Sigmoid =>
    p.map((v, i) => Math.min(upper[i], Math.max(lower[i], v))) as Sigmoid;
  const cost = (p: Sigmoid) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += (sigmoidAt(p, x[i]) - y[i]) ** 2;
    return s / 2;
  };
  let p = [...p0] as Sigmoid;
  let f = cost(p);
  if (!Number.isFinite(f)) return undefined;
  let lambda = 1e-3;
  for (let it = 0; it < maxIterations; it++) {
    const [a, b, c] = p;
    const JtJ = [0, 1, 2, 3].map(() => [0, 0, 0, 0]);
    const g = [0, 0, 0, 0];
    for (let i = 0; i < n; i++) {
      const s = 1 / (1 + Math.exp(-b * (x[i] - c)));
      const ds = s * (1 - s);
      const J = [s, a * ds * (x[i] - c), -a * ds * b, 1];
      const r = sigmoidAt(p, x[i]) - y[i];
      for (let j = 0; j < 4; j++) {
        g[j] += J[j] * r;
        for (let k = 0; k < 4; k++) JtJ[j][k] += J[j] * J[k];
      }
    }
    // A parameter at a bound whose gradient points out of the box stays there this step.
    const free = [0, 1, 2, 3].filter((j) =>
      !((p[j] <= lower[j] && g[j] > 0) || (p[j] >= upper[j] && g[j] < 0))
    );
    if (free.length === 0) break;
    let improved = false;
    while (lambda < 1e20) {
      const A = free.map((j) =>
        free.map((k) => JtJ[j][k] + (j === k ? lambda * Math.max(JtJ[j][j], 1e-12) : 0))
      );
      const step = solve(A, free.map((j) => -g[j]));
      if (step) {
        const q = [...p];
        free.forEach((j, m) => (q[j] += step[m]));
        const cand = clip(q);
        const fc = cost(cand);
        if (Number.isFinite(fc) && fc < f) {
          const moved = cand.reduce((s, v, j) => s + (v - p[j]) ** 2, 0);
          const size = p.reduce((s, v) => s + v * v, 0);
          const small = f - fc <= 1e-15 * f || moved <= 1e-24 * (1 + size);
          p = cand;
          f = fc;
          lambda = Math.max(lambda / 3, 1e-15);
          improved = !small;
          if (small) return p;
          break;
        }
      }
      lambda *= 4;
    }
    if (!improved) break;
  }
  return p;
}

/** x where the sigmoid equals `level`, or undefined when the curve never reaches it. */
function crossing([a, b, c, d]: Sigmoid, level: number): number | undefined {
  if (b <= 1e-6 || a <= 1e-6 || level <= d || level >= a + d) return undefined;
  return c - Math.log(a / (level - d) - 1) / b;
}

/** A child's age of acquisition (months): the fitted age at proportion 0.5, within the ages given. */
export function childAoa(ages: number[], proportions: number[]): number | undefined {
  const xs: number[] = [], ys: number[] = [];
  proportions.forEach((v, k) => {
    if (!Number.isNaN(v)) {
      xs.push(ages[k]);
      ys.push(v);
    }
  });
  if (xs.length < 3) return undefined;
  const mean = xs.reduce((s, v) => s + v, 0) / xs.length;
  const p = fitSigmoid(xs, ys, [1, 0.1, mean, 0], [0, 0, xs[0], -0.5], [2, 1, xs[xs.length - 1], 0.5]);
  if (!p || p[1] <= 0 || p[0] <= 0) return undefined;
  const [a, , , d] = p;
  if (0.5 <= d || 0.5 >= a + d) return undefined;
  const aoa = p[2] - Math.log(a / (0.5 - d) - 1) / p[1];
  return aoa < xs[0] || aoa > xs[xs.length - 1] ? undefined : aoa;
}

/**
 * A model's AoA of a word, as log10(words + 1): `surprisals[k]` is its mean surprisal (nats) after
 * `words[k]` training words (ascending, distinct). Undefined when fewer than 3 points are finite, the fit
 * never crosses the threshold, or the crossing lies outside the checkpoints.
 */
export function modelAoa(
  words: number[],
  surprisals: number[],
  vocabSize: number,
  subwordTokens = 1,
): number | undefined {
  if (words.length !== surprisals.length) throw new Error("modelAoa: words and surprisals differ in length");
  if (words.length < 3) return undefined;
  const steps: number[] = [], neg: number[] = [];
  words.forEach((w, k) => {
    if (!Number.isNaN(surprisals[k])) {
      steps.push(w);
      neg.push(-surprisals[k]);
    }
  });
  if (steps.length === 0) return undefined;
  const chance = subwordTokens * Math.log(vocabSize);
  const minSurprisal = Math.min(...neg.map((v) => -v));
  const threshold = chance - 0.5 * (chance - minSurprisal);
  const x = steps.map((s) => Math.log10(s + 1));
  const lo = Math.min(...neg), hi = Math.max(...neg), range = hi - lo;
  const xmin = Math.min(...x), xmax = Math.max(...x);
  const mean = x.reduce((s, v) => s + v, 0) / x.length;
  const p = fitSigmoid(
    x,
    neg,
    [range, 1, mean, lo],
    [0, 0, xmin - 1, lo - 2 * range - 1],
    [10 * range + 1, 100, xmax + 1, hi + 1],
  );
  if (!p) return undefined;
  const logAoa = crossing(p, -threshold);
  if (logAoa === undefined) return undefined;
  const step = 10 ** logAoa - 1;
  return step < steps[0] || step > steps[steps.length - 1] ? undefined : logAoa;
}

/** One word's surprisal curve over checkpoints. */
export interface WordCurve {
  word: string;
  /** Mean surprisal over contexts at each checkpoint (NaN where none was finite). */
  meanSurprisal: number[];
  subwordTokens: number;
}

/** The AoA score and what it was computed from. */
export interface AoaScore {
  /** Pearson r of model and child AoA; 0 when fewer than 3 words or p > 0.1. */
  score: number;
  /** Pearson r and its two-sided p before the p > 0.1 rule (NaN with fewer than 3 words). */
  r: number;
  p: number;
  words: Array<{ word: string; modelAoa: number; childAoa: number }>;
}

/**
 * The score over words: child AoA from `cdi` (exact word match), model AoA from each curve over
 * `checkpointWords` (ascending words seen).
 */
export function aoaScore(
  checkpointWords: number[],
  curves: WordCurve[],
  cdi: CdiHuman,
  vocabSize: number,
): AoaScore {
  const index = new Map<string, number>();
  cdi.words.forEach((w, i) => {
    if (!index.has(w)) index.set(w, i);
  });
  const words: AoaScore["words"] = [];
  for (const c of curves) {
    const i = index.get(c.word);
    if (i === undefined) continue;
    const child = childAoa(cdi.ages, cdi.proportions[i]);
    if (child === undefined) continue;
    const model = modelAoa(checkpointWords, c.meanSurprisal, vocabSize, c.subwordTokens);
    if (model === undefined) continue;
    words.push({ word: c.word, modelAoa: model, childAoa: child });
  }
  if (words.length < 3) return { score: 0, r: NaN, p: NaN, words };
  const r = pearson(words.map((w) => w.modelAoa), words.map((w) => w.childAoa));
  const df = words.length - 2;
  const p = Math.abs(r) >= 1 ? 0 : studentTwoSided(r * Math.sqrt(df / (1 - r * r)), df);
  return { score: p > 0.1 ? 0 : r, r, p, words };
}

/** One word checkpoint's AoA surprisals and the words seen it is plotted at. */
export interface AoaCheckpoint {
  name: string;
  words: number;
  result: AoaSurprisalResult;
}

/**
 * Per-word curves over checkpoints (ascending, distinct words seen): the mean over contexts, NaN when any
 * context is NaN (numpy's mean, as in the pipeline; the fit then drops that checkpoint).
 */
export function aoaCurves(points: AoaCheckpoint[]): WordCurve[] {
  for (let k = 1; k < points.length; k++) {
    if (!(points[k].words > points[k - 1].words)) {
      throw new Error(
        `aoa: checkpoints must have increasing words seen; ${points[k - 1].name} and ${
          points[k].name
        } do not`,
      );
    }
  }
  const first = points[0]?.result;
  if (!first) return [];
  return first.words.map((word, w) => ({
    word,
    subwordTokens: first.subwordTokens[w],
    meanSurprisal: points.map(({ result }) => {
      // Reused reports hold NaN as null (JSON).
      const xs = (result.surprisal[w] ?? []).map((v) => v ?? NaN);
      return xs.length === 0 ? NaN : xs.reduce((s, v) => s + v, 0) / xs.length;
    }),
  }));
}

/** The pipeline's `surprisal.json`: metadata and one row per (checkpoint, word, context). */
export function surprisalJson(points: AoaCheckpoint[], model: string): string {
  const results = points.flatMap(({ name, words, result }) =>
    result.words.flatMap((word, w) =>
      result.contexts[w].map((context, k) => ({
        step: name,
        word_count: words,
        target_word: word,
        context_id: k,
        context,
        surprisal: result.surprisal[w][k],
      }))
    )
  );
  const metadata = {
    model_name: model,
    use_bos_only: false,
    total_steps: points.length,
    completed_steps: points.length,
  };
  return JSON.stringify({ metadata, results }) + "\n";
}
