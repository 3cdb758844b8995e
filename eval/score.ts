/**
 * Completion scoring as the BabyLM pipeline does it for causal models
 * (`sentence_zero_shot/dataset.py`, `compute_results.py`), and batched log-probability sums.
 *
 * A candidate is a full sentence and a completion (a suffix of it). The sentence is tokenized with
 * the model's tokenizer (BOS in front if the tokenizer adds one); the completion's tokens are those
 * whose character span ends after the completion's first character (`end > start_char`), i.e. every
 * token that overlaps it, including a token that a BPE merge stretched across the boundary. Token 0
 * has no prediction, so it never counts. The candidate's score is the sum of ln p over those tokens.
 *
 * Token ends are found without offsets from the tokenizer: the end of token i is the number of
 * characters of the sentence covered by `decode(ids[0..i])` (a trailing partial character, which
 * byte-level BPE decodes to U+FFFD, counts as covered, as Hugging Face offsets do). Ends grow with
 * i, so the first overlapping token is found by binary search (log n decodes per sentence). A
 * tokenizer whose decode does not give the sentence back either supplies `tokenEnds` or falls back
 * to tokenizing the prefix: the completion starts at the first token where the prefix's tokens and
 * the sentence's tokens differ (a token merged across the boundary differs, so it counts).
 * @module
 */
import type { Scorer, TextCodec } from "./types.ts";

/** A token sequence and the first position whose log-probability is summed (positions from..n-1). */
export interface Span {
  ids: number[];
  from: number;
}

/** Token ids of `text` as the model sees them: BOS first when the tokenizer adds one. */
export function withBos(enc: TextCodec, ids: number[]): number[] {
  if (!enc.addsBos) return ids;
  if (enc.bosId === undefined) throw new Error("tokenizer: addsBos is set but bosId is undefined");
  return [enc.bosId, ...ids];
}

/** Characters of `text` covered by `decoded` (a decode of the first tokens of `text`). */
function covered(decoded: string, text: string): number {
  const m = Math.min(decoded.length, text.length);
  let c = 0;
  while (c < m && decoded.charCodeAt(c) === text.charCodeAt(c)) c++;
  if (c === decoded.length) return c;
  // The decode runs into a character it only partly covers: count that character (1 or 2 UTF-16 units).
  const cp = text.codePointAt(c);
  return c + (cp !== undefined && cp > 0xffff ? 2 : 1);
}

/** Index of the first token of `ids` (the encoding of `text`) whose end exceeds `startChar`. */
export function firstOverlapping(enc: TextCodec, text: string, ids: number[], startChar: number): number {
  if (enc.tokenEnds) {
    const ends = enc.tokenEnds(text);
    if (ends.length !== ids.length) {
      throw new Error(
        `tokenizer: tokenEnds gave ${ends.length} ends for ${ids.length} tokens of ${JSON.stringify(text)}`,
      );
    }
    const k = ends.findIndex((e) => e > startChar);
    return k < 0 ? ids.length : k;
  }
  if (startChar <= 0) return 0;
  if (enc.decode(ids) !== text) {
    // Not round-tripping: the prefix-tokenization rule (see the module notes).
    const pre = enc.encode(text.slice(0, startChar));
    let k = 0;
    while (k < pre.length && k < ids.length && pre[k] === ids[k]) k++;
    return k;
  }
  let lo = 0, hi = ids.length; // answer in [lo, hi]
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (covered(enc.decode(ids.slice(0, mid + 1)), text) > startChar) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * The span scored for `sentence` with completion `completion` (a suffix of it): the model's token
 * ids and the first summed position. With `completion === sentence` it is the whole sentence
 * (from position 1, the first predicted token).
 */
export function completionSpan(enc: TextCodec, sentence: string, completion: string): Span {
  if (!sentence.endsWith(completion)) {
    throw new Error(
      `completion ${JSON.stringify(completion)} is not a suffix of ${JSON.stringify(sentence)}`,
    );
  }
  const content = enc.encode(sentence);
  const k = firstOverlapping(enc, sentence, content, sentence.length - completion.length);
  const ids = withBos(enc, content);
  const shift = ids.length - content.length;
  return { ids, from: Math.max(1, k + shift) };
}

/** Options of {@link scoreSpans}. */
export interface ScoreOptions {
  /** Sequences per `tokenLogprobs` call. */
  batchSize: number;
  /** Called after every call with the number of sequences it scored. */
  onProgress?: (n: number) => void;
  /** Name used in error messages. */
  label?: string;
  /** A sequence longer than the scorer holds: an error (default), or NaN for its sum. */
  unfit?: "error" | "nan";
}

/**
 * Sum of ln p over positions `from..n-1` of every span. Spans are sorted by length (so each batch
 * holds similar lengths and little padding), scored in batches, and the sums returned in input order.
 * A span of up to `contextLength + 1` tokens fits: the model reads all but the last token.
 */
export async function scoreSpans(scorer: Scorer, spans: Span[], opts: ScoreOptions): Promise<Float64Array> {
  const label = opts.label ?? "scoring";
  const max = (scorer.contextLength ?? Infinity) + 1;
  const fits = (i: number) => spans[i].ids.length <= max;
  const out = new Float64Array(spans.length);
  const longest = spans.reduce((m, s) => Math.max(m, s.ids.length), 0);
  if (longest > max) {
    if (opts.unfit !== "nan") {
      const n = spans.filter((s) => s.ids.length > max).length;
      throw new Error(
        `${label}: ${n} of ${spans.length} sequences exceed the ${max} tokens the model scores ` +
          `(${max - 1} positions; the longest has ${longest})`,
      );
    }
    spans.forEach((_, i) => {
      if (!fits(i)) out[i] = NaN;
    });
    opts.onProgress?.(spans.filter((s) => s.ids.length > max).length);
  }
  const order = spans.map((_, i) => i).filter(fits)
    .sort((a, b) => spans[a].ids.length - spans[b].ids.length || a - b);
  const bs = Math.max(1, Math.floor(opts.batchSize));
  for (let b = 0; b < order.length; b += bs) {
    const idx = order.slice(b, b + bs);
    const seqs = idx.map((i) => spans[i].ids);
    const lps = await scorer.tokenLogprobs(seqs);
    if (lps.length !== seqs.length) {
      throw new Error(`${label}: the scorer returned ${lps.length} results for ${seqs.length} sequences`);
    }
    idx.forEach((i, j) => {
      const { ids, from } = spans[i];
      const lp = lps[j];
      if (lp.length !== Math.max(0, ids.length - 1)) {
        throw new Error(
          `${label}: expected ${
            ids.length - 1
          } log-probabilities for a sequence of ${ids.length}, got ${lp.length}`,
        );
      }
      let s = 0;
      for (let t = Math.max(1, from); t < ids.length; t++) s += lp[t - 1];
      out[i] = s;
    });
    opts.onProgress?.(idx.length);
  }
  return out;
}
