/**
 * Train a byte-level BPE tokenizer (GPT-2's scheme) on a corpus streamed as text chunks.
 *
 * 1. Count words: the text is cut into lines (each keeps its `\n`, as the Hugging Face trainer reads
 *    files line by line), every line into pre-tokens with GPT-2's pattern, and each distinct pre-token
 *    is counted once. Only the counts stay in memory, never the corpus.
 * 2. Merge: every distinct pre-token becomes a sequence of byte symbols (ids 0..255). Pair counts are
 *    kept for the whole corpus (each word weighted by its count) with an index from each pair to the
 *    words holding it, and a max-heap of (count, pair). Each step pops the most frequent pair, merges
 *    it in only the words the index names, and updates the counts of the neighbouring pairs alone.
 *    Heap entries are checked lazily: an entry whose count is stale is pushed again with the current
 *    count (counts of old pairs only fall; pairs that grow are pushed after every merge).
 *    Ties go to the smaller (left, right) symbol ids, so training is deterministic.
 * 3. Write: special tokens first, then the 256 bytes in byte order, then merged tokens in the order
 *    they were made (a merge that makes an existing string reuses its id, as Hugging Face does).
 *
 * The result is a standard Hugging Face tokenizer.json (see {@link byteLevelBpeJson}). By default the
 * single special token is GPT-2's `<|endoftext|>` at id 0, used as BOS, EOS and padding exactly as the
 * baseline uses GPT-2's; the Tokenizer wrapper finds it by name.
 * @module
 */
import { BYTE_TO_CHAR, byteLevelBpeJson, GPT2_PATTERN, type SpecialToken } from "./bpe_format.ts";

/** Word counts of a corpus: distinct pre-token -> occurrences, plus totals for reports. */
export interface WordCounts {
  counts: Map<string, number>;
  /** Whitespace-separated words seen (what "100M words" counts). */
  words: number;
  /** Pre-tokens seen. */
  pretokens: number;
  /** UTF-16 code units read. */
  chars: number;
}

/**
 * Counts pre-tokens of text fed in chunks of any size: the text is cut at newlines and each line is
 * pre-tokenized on its own, so chunk boundaries never change the result.
 */
export class WordCounter {
  readonly counts = new Map<string, number>();
  words = 0;
  pretokens = 0;
  chars = 0;
  #rest = "";

  /** Add a chunk of text (any cut: mid-line and mid-character chunks are fine). */
  add(chunk: string): void {
    this.chars += chunk.length;
    // Only the new chunk is searched for newlines, so a long line fed in many pieces stays linear.
    let nl = chunk.indexOf("\n");
    if (nl < 0) {
      this.#rest += chunk;
      return;
    }
    this.#line(this.#rest + chunk.slice(0, nl + 1));
    let start = nl + 1;
    for (nl = chunk.indexOf("\n", start); nl >= 0; nl = chunk.indexOf("\n", start)) {
      this.#line(chunk.slice(start, nl + 1));
      start = nl + 1;
    }
    this.#rest = chunk.slice(start);
  }

  /** End the current text (e.g. a file): a last line without a newline is counted on its own. */
  flush(): void {
    if (this.#rest !== "") this.#line(this.#rest);
    this.#rest = "";
  }

  /** Flush and return the counts; call once at the end. */
  finish(): WordCounts {
    this.flush();
    return { counts: this.counts, words: this.words, pretokens: this.pretokens, chars: this.chars };
  }

  #line(line: string): void {
    const pieces = line.match(GPT2_PATTERN);
    if (pieces === null) return;
    const counts = this.counts;
    // A word is a run of non-space characters. A piece is either all whitespace or an optional space
    // then non-space characters, so a word starts at a non-space piece that begins with a space or
    // follows a whitespace piece (or the line start).
    let afterSpace = true;
    for (const p of pieces) {
      counts.set(p, (counts.get(p) ?? 0) + 1);
      if (isSpace(p.charCodeAt(p.length - 1))) afterSpace = true;
      else {
        if (afterSpace || p.charCodeAt(0) === 32) this.words++;
        afterSpace = false;
      }
    }
    this.pretokens += pieces.length;
  }
}

/** Whitespace as JavaScript's `\s` sees it, for the code units that occur in practice. */
function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

/** Count the words of a corpus given as chunks of text (e.g. lines, or file pieces). */
export async function wordCounts(chunks: AsyncIterable<string> | Iterable<string>): Promise<WordCounts> {
  const counter = new WordCounter();
  for await (const chunk of chunks) counter.add(chunk);
  return counter.finish();
}

/** Options of {@link trainBpe}. */
export interface BpeTrainOptions {
  /** Target vocabulary size, special tokens and the 256 bytes included. */
  vocabSize: number;
  /** Stop merging when the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
  /** Special tokens, ids 0.. in this order (default: GPT-2's `<|endoftext|>` only). */
  specialTokens?: string[];
  /** Called every `progressEvery` merges and at the end. */
  onMerge?: (done: number, target: number) => void;
  progressEvery?: number;
}

/** A trained byte-level BPE. */
export interface TrainedBpe {
  /** Token strings (byte-level characters) by id. */
  tokens: string[];
  /** Merges in rank order, as pairs of token strings. */
  merges: Array<[string, string]>;
  specials: SpecialToken[];
}

/** Pair key: left * 2^21 + right, exact in a double for symbol ids below 2^21. */
const SHIFT = 2097152;

/** A max-heap of (count, key) ordered by count, then by smaller key. */
class PairHeap {
  #count = new Float64Array(1024);
  #key = new Float64Array(1024);
  size = 0;

  #before(i: number, j: number): boolean {
    const a = this.#count[i], b = this.#count[j];
    return a > b || (a === b && this.#key[i] < this.#key[j]);
  }

  #swap(i: number, j: number): void {
    const c = this.#count[i], k = this.#key[i];
    this.#count[i] = this.#count[j];
    this.#key[i] = this.#key[j];
    this.#count[j] = c;
    this.#key[j] = k;
  }

  push(count: number, key: number): void {
    if (this.size === this.#count.length) {
      const c = new Float64Array(this.size * 2), k = new Float64Array(this.size * 2);
      c.set(this.#count);
      k.set(this.#key);
      this.#count = c;
      this.#key = k;
    }
    let i = this.size++;
    this.#count[i] = count;
    this.#key[i] = key;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  /** Remove the top; returns [count, key]. */
  pop(): [number, number] {
    const top: [number, number] = [this.#count[0], this.#key[0]];
    this.size--;
    this.#count[0] = this.#count[this.size];
    this.#key[0] = this.#key[this.size];
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let best = i;
      if (l < this.size && this.#before(l, best)) best = l;
      if (r < this.size && this.#before(r, best)) best = r;
      if (best === i) break;
      this.#swap(i, best);
      i = best;
    }
    return top;
  }
}

/**
 * Learn merges from word counts until the vocabulary (specials + 256 bytes + merged tokens) reaches
 * `opts.vocabSize`, no pair is left, or the best pair is rarer than `minFrequency`.
 */
export function trainBpeFromCounts(counts: ReadonlyMap<string, number>, opts: BpeTrainOptions): TrainedBpe {
  const specials = opts.specialTokens ?? ["<|endoftext|>"];
  const minFrequency = opts.minFrequency ?? 2;
  const base = specials.length + 256;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < base) {
    throw new Error(
      `BPE training: vocabSize must be an integer >= ${base} (${specials.length} special tokens + 256 bytes), ` +
        `got ${opts.vocabSize}`,
    );
  }
  if (opts.vocabSize - specials.length > SHIFT) {
    throw new Error(
      `BPE training: vocabSize ${opts.vocabSize} exceeds the limit of ${SHIFT + specials.length}`,
    );
  }
  if (new Set(specials).size !== specials.length || specials.some((s) => s === "")) {
    throw new Error(
      `BPE training: special tokens must be distinct and non-empty, got ${JSON.stringify(specials)}`,
    );
  }

  // Words as byte symbols, all in one array: word w is sym[start[w] .. start[w] + len[w]).
  const utf8 = new TextEncoder();
  const nWords = counts.size;
  const start = new Int32Array(nWords), len = new Int32Array(nWords), weight = new Float64Array(nWords);
  let total = 0;
  for (const word of counts.keys()) total += utf8.encode(word).length;
  const sym = new Int32Array(total);
  let w = 0, at = 0;
  for (const [word, c] of counts) {
    const bytes = utf8.encode(word);
    sym.set(bytes, at);
    start[w] = at;
    len[w] = bytes.length;
    weight[w] = c;
    at += bytes.length;
    w++;
  }

  // Symbols: 0..255 are bytes; merged tokens follow. Strings are byte-level characters.
  const symStr: string[] = BYTE_TO_CHAR.slice();
  const symId = new Map<string, number>(symStr.map((s, i) => [s, i]));
  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  const touched: number[] = [];

  const inc = (key: number, c: number, word: number) => {
    pairCount.set(key, (pairCount.get(key) ?? 0) + c);
    const list = where.get(key);
    if (list === undefined) where.set(key, [word]);
    else if (list[list.length - 1] !== word) list.push(word);
    touched.push(key);
  };
  const dec = (key: number, c: number) => {
    const n = (pairCount.get(key) ?? 0) - c;
    if (n > 0) pairCount.set(key, n);
    else {
      // No word holds the pair any more: drop its index too.
      pairCount.delete(key);
      where.delete(key);
    }
  };

  for (let w = 0; w < nWords; w++) {
    for (let i = start[w], end = start[w] + len[w] - 1; i < end; i++) {
      inc(sym[i] * SHIFT + sym[i + 1], weight[w], w);
    }
    touched.length = 0;
  }
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push(c, key);

  const merges: Array<[string, string]> = [];
  const seen = new Int32Array(nWords).fill(-1);
  const target = opts.vocabSize - specials.length;
  const every = opts.progressEvery ?? 1000;
  while (symStr.length < target && heap.size > 0) {
    const [stored, key] = heap.pop();
    const current = pairCount.get(key) ?? 0;
    if (current === 0) continue;
    if (stored !== current) {
      // Stale: a lower current count goes back in; a higher one already has its own entry.
      if (stored > current) heap.push(current, key);
      continue;
    }
    if (current < minFrequency) break;
    const a = Math.floor(key / SHIFT), b = key - a * SHIFT;
    const text = symStr[a] + symStr[b];
    let z = symId.get(text);
    if (z === undefined) {
      z = symStr.length;
      symStr.push(text);
      symId.set(text, z);
    }
    const stamp = merges.length;
    merges.push([symStr[a], symStr[b]]);
    const words = where.get(key)!;
    where.delete(key);
    pairCount.delete(key);
    for (const w of words) {
      if (seen[w] === stamp) continue;
      seen[w] = stamp;
      const c = weight[w], s = start[w], end = s + len[w];
      let j = s;
      for (let i = s; i < end;) {
        if (i + 1 < end && sym[i] === a && sym[i + 1] === b) {
          // The left neighbour is already rewritten (it may be a `z` from this pass); the right one is not.
          if (j > s) {
            const left = sym[j - 1] * SHIFT;
            if (left + a !== key) dec(left + a, c);
            inc(left + z, c, w);
          }
          if (i + 2 < end) {
            const right = sym[i + 2];
            if (b * SHIFT + right !== key) dec(b * SHIFT + right, c);
            inc(z * SHIFT + right, c, w);
          }
          sym[j++] = z;
          i += 2;
        } else {
          sym[j++] = sym[i++];
        }
      }
      len[w] = j - s;
    }
    for (const k of touched) {
      const c = pairCount.get(k);
      if (c !== undefined) heap.push(c, k);
    }
    touched.length = 0;
    if (merges.length % every === 0) opts.onMerge?.(merges.length, target - 256);
  }
  opts.onMerge?.(merges.length, target - 256);
  const tokens = [...specials, ...symStr];
  return { tokens, merges, specials: specials.map((content, id) => ({ id, content })) };
}

/** The tokenizer.json text of a trained BPE. */
export function trainedBpeJson(bpe: TrainedBpe): string {
  const vocab = new Map(bpe.tokens.map((t, i) => [t, i]));
  return byteLevelBpeJson({ vocab, merges: bpe.merges, specials: bpe.specials });
}

/** Count words of the streamed corpus, then learn merges; returns the model and the counts. */
export async function trainBpe(
  chunks: AsyncIterable<string> | Iterable<string>,
  opts: BpeTrainOptions,
): Promise<{ bpe: TrainedBpe; counts: WordCounts }> {
  const counts = await wordCounts(chunks);
  return { bpe: trainBpeFromCounts(counts.counts, opts), counts };
}
