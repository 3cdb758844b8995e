/**
 * The corpus of the interaction rounds, as the baseline builds it: every source (a BabyLM `.train`
 * file, or an embedded generated text) is tokenized whole, cut into `numRounds` chunks of equal token
 * count (the last chunk also takes the remainder), and round r takes one not-yet-used chunk of every
 * source, cuts it into datapoints of `datapointLength` tokens (the short tail is dropped) and keeps the
 * first `contextLength` tokens of each as the student's context; the rest is the corpus continuation.
 *
 * Which chunk a round takes is a pure function of (seed, round): each source's chunk order is a seeded
 * permutation, and round r takes entry r. So the draws are reproducible, disjoint across rounds and
 * resumable with no saved state. (The baseline pops a random remaining chunk with Python's global RNG;
 * the distribution over orders is the same, the exact draws are not.)
 *
 * Memory: text is tokenized piece by piece (about 1 MB of text at a time) and tokens are kept as
 * Uint16Array when every id fits, so the 100M-word corpus (~500 MB of text) takes ~300 MB of tokens.
 * Pieces are cut only between a newline preceded by a visible character and a line that starts with a
 * visible character (or one space and then one). GPT-2's pre-tokenizer makes that lone newline a
 * pre-token of its own whether or not the text goes on, so the piecewise tokens equal those of the whole
 * text (tests/corpus_test.ts checks it against the GPT-2 tokenizer).
 * Browser-safe: no file access here (`cli/corpus_dir.ts` reads corpus folders).
 * @module
 */
import { countWords, type WordMeasure } from "./words.ts";
import { deriveSeed, Rng } from "../model/random.ts";

/** Text to token ids, adding no special tokens. */
export type Encode = (text: string) => ArrayLike<number>;

/**
 * How lines are joined before tokenizing. `raw`: the text as it is. `baseline`: as the baseline's
 * `' '.join(f.readlines())`, which puts a space after every newline that is not the file's last
 * character (and turns "\r\n" and "\r" into "\n", as Python's text mode does).
 */
export type LineJoin = "raw" | "baseline";

/** A tokenized source. */
export interface TokenizedSource {
  name: string;
  tokens: Uint16Array | Uint32Array;
  /** Words of the whole source, by the {@link TokenizeOptions.wordMeasure} (default: whitespace words). */
  words: number;
  /**
   * Cumulative (tokens, words) at every piece boundary, starting with (0, 0) and ending with
   * (tokens.length, words): chunk word counts are interpolated between these marks.
   */
  marks: { tokens: number[]; words: number[] };
}

/** Options of {@link tokenizeSource}. */
export interface TokenizeOptions {
  lineJoin?: LineJoin;
  /** Target characters per piece handed to `encode` (default 1 MiB). */
  pieceChars?: number;
  /** Called after every piece with the characters read so far. */
  onProgress?: (chars: number) => void;
  /**
   * How words are counted (words.ts): whitespace words (the default, the Strict tracks) or
   * English-equivalent words from UTF-8 bytes (the multilingual track; Chinese has no spaces).
   */
  wordMeasure?: WordMeasure;
}

/** A growable Uint32Array. */
class TokenBuffer {
  data = new Uint32Array(1 << 16);
  length = 0;
  max = 0;
  push(ids: ArrayLike<number>, where: string): void {
    if (this.length + ids.length > this.data.length) {
      const grown = new Uint32Array(Math.max(this.data.length * 2, this.length + ids.length));
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    }
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) {
        throw new Error(`${where}: encode returned ${id}, expected a non-negative integer token id`);
      }
      if (id > this.max) this.max = id;
      this.data[this.length++] = id;
    }
  }
  /** The tokens, as Uint16Array when every id fits in 16 bits. */
  finish(): Uint16Array | Uint32Array {
    const out = this.data.subarray(0, this.length);
    return this.max < 65536 ? Uint16Array.from(out) : out.slice();
  }
}

/**
 * Where a piece may end at or after `from`: after "<visible>\n", before "[ ]<visible>" (in baseline mode,
 * where a space is inserted there, before "<visible>"). -1 if nowhere.
 */
function safeCut(text: string, from: number, lineJoin: LineJoin): number {
  const re = lineJoin === "baseline" ? /\S\n(?=\S)/g : /\S\n(?= ?\S)/g;
  re.lastIndex = Math.max(0, from - 1);
  const m = re.exec(text);
  return m ? m.index + 2 : -1;
}

/**
 * Tokenize one source given as a string or as a stream of text pieces (any split). Throws when the
 * source has no tokens.
 */
export async function tokenizeSource(
  name: string,
  text: string | Iterable<string> | AsyncIterable<string>,
  encode: Encode,
  { lineJoin = "raw", pieceChars = 1 << 20, onProgress, wordMeasure }: TokenizeOptions = {},
): Promise<TokenizedSource> {
  const buf = new TokenBuffer();
  const marks = { tokens: [0], words: [0] };
  let words = 0, chars = 0, pending = "";
  // In baseline mode a piece that ends with "\n" owes the next piece the space joined after it.
  let owedSpace = false;
  const emit = (raw: string, final: boolean) => {
    let piece = raw;
    if (lineJoin === "baseline") {
      const body = final ? raw.replace(/\n$/, "") : raw.slice(0, -1);
      piece = (owedSpace ? " " : "") + body.replaceAll("\n", "\n ") + (final ? raw.slice(body.length) : "\n");
      owedSpace = !final;
    }
    if (piece === "") return;
    buf.push(encode(piece), `source ${name}`);
    words += countWords(piece, wordMeasure);
    marks.tokens.push(buf.length);
    marks.words.push(words);
    onProgress?.(chars);
  };
  const pieces = typeof text === "string" ? [text] : text;
  for await (const part of pieces) {
    pending += part;
    chars += part.length;
    if (lineJoin === "baseline") {
      // Python's universal newlines; a trailing "\r" waits for a possible "\n".
      const keep = pending.endsWith("\r") ? 1 : 0;
      pending = pending.slice(0, pending.length - keep).replace(/\r\n?/g, "\n") +
        pending.slice(pending.length - keep);
    }
    for (;;) {
      if (pending.length < pieceChars) break;
      const cut = safeCut(pending, pieceChars, lineJoin);
      if (cut < 0 || cut >= pending.length) break;
      emit(pending.slice(0, cut), false);
      pending = pending.slice(cut);
    }
  }
  if (lineJoin === "baseline") pending = pending.replace(/\r\n?/g, "\n");
  emit(pending, true);
  const tokens = buf.finish();
  if (tokens.length === 0) throw new Error(`source ${name} is empty: it has no tokens`);
  return { name, tokens, words, marks };
}

/** Tokenize in-memory sources (e.g. {@link embeddedSources} of grammar.ts) one after another. */
export async function tokenizeTexts(
  sources: readonly { name: string; text: string }[],
  encode: Encode,
  options: TokenizeOptions = {},
): Promise<TokenizedSource[]> {
  const out: TokenizedSource[] = [];
  for (const s of sources) out.push(await tokenizeSource(s.name, s.text, encode, options));
  return out;
}

/** Settings of a {@link Corpus}. */
export interface CorpusOptions {
  numRounds: number;
  datapointLength: number;
  contextLength: number;
  seed: number;
}

/** A student context with its corpus continuation. */
export interface Datapoint {
  source: string;
  chunk: number;
  /** Index of the datapoint within its chunk. */
  index: number;
  context: Uint32Array;
  /** The `datapointLength - contextLength` tokens that follow the context in the corpus. */
  continuation: Uint32Array;
}

/** The chunk one source contributes to a round. */
export interface RoundChunk {
  source: string;
  chunk: number;
  /** Token range [start, end) in the source. */
  start: number;
  end: number;
  /** Estimated words of the chunk (by the sources' word measure). */
  words: number;
  datapoints: number;
}

/** The tokenized sources cut into chunks, with the seeded per-round draw. */
export class Corpus {
  readonly sources: readonly TokenizedSource[];
  readonly options: Readonly<CorpusOptions>;
  /** Sources too short to give every round a datapoint (chunks shorter than a datapoint). */
  readonly warnings: string[] = [];
  #orders: number[][];

  constructor(sources: readonly TokenizedSource[], options: CorpusOptions) {
    const { numRounds, datapointLength, contextLength, seed } = options;
    const posInt = (k: string, v: number) => {
      if (!Number.isInteger(v) || v < 1) throw new Error(`corpus: ${k} must be a positive integer, got ${v}`);
    };
    posInt("numRounds", numRounds);
    posInt("datapointLength", datapointLength);
    posInt("contextLength", contextLength);
    if (contextLength >= datapointLength) {
      throw new Error(
        `corpus: contextLength (${contextLength}) must be smaller than datapointLength (${datapointLength}), ` +
          "so every datapoint has a continuation",
      );
    }
    if (!Number.isInteger(seed)) throw new Error(`corpus: seed must be an integer, got ${seed}`);
    if (sources.length === 0) throw new Error("corpus: no sources");
    const names = new Set<string>();
    for (const s of sources) {
      if (names.has(s.name)) throw new Error(`corpus: two sources are named ${s.name}`);
      names.add(s.name);
      if (s.tokens.length < numRounds) {
        throw new Error(
          `corpus: source ${s.name} has ${s.tokens.length} tokens, fewer than numRounds (${numRounds}): ` +
            "it cannot be cut into one chunk per round",
        );
      }
      if (Math.floor(s.tokens.length / numRounds) < datapointLength) {
        this.warnings.push(
          `source ${s.name}: chunks of ${Math.floor(s.tokens.length / numRounds)} tokens are shorter than ` +
            `one datapoint (${datapointLength}); it gives no datapoints in most rounds`,
        );
      }
    }
    this.sources = sources;
    this.options = { ...options };
    this.#orders = sources.map((s) =>
      new Rng(deriveSeed(seed, "corpus-chunks", s.name)).shuffle(
        Array.from({ length: numRounds }, (_, i) => i),
      )
    );
  }

  /** Token range [start, end) of chunk `chunk` of source `s`: equal chunks, the last takes the rest. */
  chunkRange(s: number, chunk: number): [number, number] {
    const n = this.sources[s].tokens.length, r = this.options.numRounds;
    const size = Math.floor(n / r);
    return [chunk * size, chunk === r - 1 ? n : (chunk + 1) * size];
  }

  /** The chunk of every source that round `round` (0-based) uses. */
  roundChunks(round: number): RoundChunk[] {
    this.#checkRound(round);
    return this.sources.map((src, s) => {
      const chunk = this.#orders[s][round];
      const [start, end] = this.chunkRange(s, chunk);
      const words = wordsAt(src, end) - wordsAt(src, start);
      return {
        source: src.name,
        chunk,
        start,
        end,
        words: Math.round(words),
        datapoints: Math.floor((end - start) / this.options.datapointLength),
      };
    });
  }

  /** Estimated words of a round's chunks (the text the round's datapoints come from). */
  roundWords(round: number): number {
    return this.roundChunks(round).reduce((a, c) => a + c.words, 0);
  }

  /**
   * The datapoints of round `round`: every source in order, every datapoint of its chunk in order.
   * With `max` > 0 and more datapoints than that, a seeded subset of `max` of them (order kept), the
   * same for the same (seed, round).
   */
  roundDatapoints(round: number, { max = 0 }: { max?: number } = {}): Datapoint[] {
    const { datapointLength: L, contextLength: C } = this.options;
    const chunks = this.roundChunks(round);
    const refs: [number, number][] = [];
    chunks.forEach((c, s) => {
      for (let i = 0; i < c.datapoints; i++) refs.push([s, i]);
    });
    let chosen = refs;
    if (max > 0 && refs.length > max) {
      const idx = new Rng(deriveSeed(this.options.seed, "corpus-subset", round))
        .shuffle(refs.map((_, i) => i)).slice(0, max).sort((a, b) => a - b);
      chosen = idx.map((i) => refs[i]);
    }
    return chosen.map(([s, i]) => {
      const start = chunks[s].start + i * L;
      const tokens = this.sources[s].tokens;
      return {
        source: chunks[s].source,
        chunk: chunks[s].chunk,
        index: i,
        context: Uint32Array.from(tokens.subarray(start, start + C)),
        continuation: Uint32Array.from(tokens.subarray(start + C, start + L)),
      };
    });
  }

  /** Sizes per source, for logs. */
  summary(): { source: string; tokens: number; words: number; chunkTokens: number }[] {
    return this.sources.map((s) => ({
      source: s.name,
      tokens: s.tokens.length,
      words: s.words,
      chunkTokens: Math.floor(s.tokens.length / this.options.numRounds),
    }));
  }

  #checkRound(round: number): void {
    if (!Number.isInteger(round) || round < 0 || round >= this.options.numRounds) {
      throw new Error(`corpus: round must be an integer in [0, ${this.options.numRounds - 1}], got ${round}`);
    }
  }
}

/** Cumulative words before token offset `t`, interpolated linearly inside the piece holding it. */
function wordsAt(src: TokenizedSource, t: number): number {
  const { tokens, words } = src.marks;
  let lo = 0, hi = tokens.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (tokens[mid] <= t) lo = mid;
    else hi = mid;
  }
  if (t <= tokens[lo]) return words[lo];
  if (t >= tokens[hi]) return words[hi];
  return words[lo] + (words[hi] - words[lo]) * (t - tokens[lo]) / (tokens[hi] - tokens[lo]);
}

/**
 * Serialise tokenized sources (to cache tokenization, which takes minutes for the 100M corpus):
 * "BLMTOK1\n", a little-endian u32 header length, a JSON header, then every source's tokens
 * (4-byte aligned, in the header's order).
 */
export function encodeTokenCache(
  sources: readonly TokenizedSource[],
  meta: Record<string, unknown> = {},
): Uint8Array {
  const magic = new TextEncoder().encode("BLMTOK1\n");
  const header = new TextEncoder().encode(JSON.stringify({
    meta,
    sources: sources.map((s) => ({
      name: s.name,
      bits: s.tokens.BYTES_PER_ELEMENT * 8,
      length: s.tokens.length,
      words: s.words,
      marks: s.marks,
    })),
  }));
  const pad = (n: number) => (n + 3) & ~3;
  let size = pad(magic.length + 4 + header.length);
  for (const s of sources) size += pad(s.tokens.byteLength);
  const out = new Uint8Array(size);
  out.set(magic, 0);
  new DataView(out.buffer).setUint32(magic.length, header.length, true);
  out.set(header, magic.length + 4);
  let at = pad(magic.length + 4 + header.length);
  for (const s of sources) {
    out.set(new Uint8Array(s.tokens.buffer, s.tokens.byteOffset, s.tokens.byteLength), at);
    at += pad(s.tokens.byteLength);
  }
  return out;
}

/** Read what {@link encodeTokenCache} wrote; `where` names the file in errors. */
export function decodeTokenCache(
  bytes: Uint8Array,
  where = "token cache",
): { meta: Record<string, unknown>; sources: TokenizedSource[] } {
  const magic = "BLMTOK1\n";
  if (new TextDecoder().decode(bytes.subarray(0, magic.length)) !== magic) {
    throw new Error(`${where}: not a token cache (expected the magic "BLMTOK1")`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hlen = view.getUint32(magic.length, true);
  const header = JSON.parse(
    new TextDecoder().decode(bytes.subarray(magic.length + 4, magic.length + 4 + hlen)),
  );
  const pad = (n: number) => (n + 3) & ~3;
  let at = pad(magic.length + 4 + hlen);
  const sources: TokenizedSource[] = [];
  for (const h of header.sources) {
    const bytesLen = h.length * (h.bits / 8);
    if (at + bytesLen > bytes.length) throw new Error(`${where}: truncated in source ${h.name}`);
    const copy = bytes.slice(at, at + bytesLen);
    const tokens = h.bits === 16 ? new Uint16Array(copy.buffer) : new Uint32Array(copy.buffer);
    sources.push({ name: h.name, tokens, words: h.words, marks: h.marks });
    at += pad(bytesLen);
  }
  return { meta: header.meta, sources };
}
