/**
 * A fast encoder for plain byte-level BPE tokenizers (GPT-2's kind): special tokens are cut out of the
 * text, the rest is split with GPT-2's pattern, and each piece's bytes are merged by rank, lowest rank
 * first and leftmost first among equal ranks (as the Rust and JavaScript Hugging Face libraries do).
 * Pieces are cached, so a corpus of 100M words, mostly repeated words, encodes at memory speed.
 *
 * It is written independently of @huggingface/tokenizers; the tests check it against that library.
 * Pure functions over strings: safe in Deno and in the browser.
 * @module
 */
import { BYTE_TO_CHAR, GPT2_PATTERN } from "./bpe_format.ts";

/** Ids must stay below this so heap entries stay exact. */
const SHIFT = 2097152;
/** Heap entries are rank * 2^32 + position (exact in a double while rank < 2^21). */
const POS = 4294967296;
const UTF8 = new TextEncoder();
/** Cached pieces before the cache is emptied (bounds memory on corpora with endless distinct words). */
const CACHE_LIMIT = 200_000;

/** The byte-level BPE content of a tokenizer.json that the encoder needs. */
export interface BpeTables {
  vocab: ReadonlyMap<string, number>;
  merges: ReadonlyArray<readonly [string, string]>;
  /** Added tokens cut out of the text before pre-tokenization (their ids come from here). */
  added: ReadonlyArray<{ content: string; id: number }>;
}

/** Byte-level BPE encoder over merge ranks. */
export class ByteLevelBpeEncoder {
  #byteId = new Int32Array(256);
  /**
   * Left id -> (right id -> rank). Two small-integer lookups are much faster than one Map lookup with
   * a key above 2^31, which V8 stores as a boxed double.
   */
  #rank: Array<Map<number, number> | undefined> = [];
  /** Rank -> id of the merged token. */
  #result: Int32Array;
  #added: Map<string, number>;
  /** Added-token contents, longest first, so the longest one wins at a position. */
  #addedList: string[];
  #cache = new Map<string, number[]>();

  constructor(tables: BpeTables) {
    for (let b = 0; b < 256; b++) {
      const id = tables.vocab.get(BYTE_TO_CHAR[b]);
      if (id === undefined) {
        throw new Error(`byte-level BPE: byte ${b} (${BYTE_TO_CHAR[b]}) is not in the vocab`);
      }
      if (id >= SHIFT) throw new Error(`byte-level BPE: id ${id} is too large (limit ${SHIFT})`);
      this.#byteId[b] = id;
    }
    this.#result = new Int32Array(tables.merges.length);
    tables.merges.forEach(([a, b], r) => {
      const ia = tables.vocab.get(a), ib = tables.vocab.get(b), iz = tables.vocab.get(a + b);
      if (ia === undefined || ib === undefined || iz === undefined) {
        throw new Error(`byte-level BPE: merge ${r} (${a} ${b}) uses a token that is not in the vocab`);
      }
      // A repeated merge takes its last rank, as both Hugging Face libraries build their maps.
      (this.#rank[ia] ??= new Map()).set(ib, r);
      this.#result[r] = iz;
    });
    this.#added = new Map(tables.added.map((t) => [t.content, t.id]));
    this.#addedList = [...this.#added.keys()].filter((s) => s !== "").sort((x, y) => y.length - x.length);
  }

  /** Ids of `text`; added tokens in the text map to their ids. */
  encode(text: string): number[] {
    const out: number[] = [];
    let from = 0;
    // Leftmost occurrence of any added token, the longest one on a tie (as Hugging Face splits).
    for (;;) {
      let at = -1, hit = "";
      for (const s of this.#addedList) {
        const k = text.indexOf(s, from);
        if (k >= 0 && (at < 0 || k < at)) {
          at = k;
          hit = s;
        }
      }
      if (at < 0) break;
      this.#encodeOrdinary(text.slice(from, at), out);
      out.push(this.#added.get(hit)!);
      from = at + hit.length;
    }
    this.#encodeOrdinary(from === 0 ? text : text.slice(from), out);
    return out;
  }

  #encodeOrdinary(text: string, out: number[]): void {
    if (text === "") return;
    const pieces = text.match(GPT2_PATTERN);
    if (pieces === null) return;
    for (const p of pieces) {
      let ids = this.#cache.get(p);
      if (ids === undefined) {
        ids = this.#bpe(p);
        if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
        this.#cache.set(p, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  /** Merge the bytes of one piece: a linked list of symbols and a min-heap of (rank, position). */
  #bpe(piece: string): number[] {
    const bytes = UTF8.encode(piece);
    const n = bytes.length;
    const id = new Int32Array(n), next = new Int32Array(n), prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      id[i] = this.#byteId[bytes[i]];
      next[i] = i + 1;
      prev[i] = i - 1;
    }
    const heap: number[] = [];
    const consider = (i: number) => {
      const j = next[i];
      if (i < 0 || j >= n) return;
      const r = this.#rank[id[i]]?.get(id[j]);
      if (r !== undefined) heapPush(heap, r * POS + i);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    const alive = new Uint8Array(n).fill(1);
    while (heap.length > 0) {
      const e = heapPop(heap);
      const r = Math.floor(e / POS), i = e - r * POS;
      const j = next[i];
      // Stale entries: the symbol was merged away, or its right neighbour changed since.
      if (!alive[i] || j >= n || this.#rank[id[i]]?.get(id[j]) !== r) continue;
      id[i] = this.#result[r];
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] < n) prev[next[j]] = i;
      consider(prev[i]);
      consider(i);
    }
    const ids: number[] = [];
    for (let i = 0; i < n; i = next[i]) ids.push(id[i]);
    return ids;
  }
}

/** Push onto a min-heap of numbers. */
function heapPush(h: number[], v: number): void {
  let i = h.length;
  h.push(v);
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (h[p] <= v) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = v;
}

/** Pop the smallest number of a non-empty min-heap. */
function heapPop(h: number[]): number {
  const top = h[0];
  const last = h.pop()!;
  if (h.length > 0) {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = l;
      if (l >= h.length) break;
      if (r < h.length && h[r] < h[l]) m = r;
      if (h[m] >= last) break;
      h[i] = h[m];
      i = m;
    }
    h[i] = last;
  }
  return top;
}

/**
 * The encoder for a parsed tokenizer.json when it is a plain byte-level BPE (no normalizer, a ByteLevel
 * pre-tokenizer using GPT-2's pattern without prefix space, a BPE model without dropout, affixes, byte
 * fallback or ignore_merges, added tokens without stripping); otherwise undefined.
 */
export function byteLevelEncoderFor(json: Record<string, unknown>): ByteLevelBpeEncoder | undefined {
  const pre = json.pre_tokenizer as Record<string, unknown> | null | undefined;
  const model = json.model as Record<string, unknown>;
  const added = (json.added_tokens ?? []) as Array<Record<string, unknown>>;
  const plain = (json.normalizer ?? null) === null && pre?.type === "ByteLevel" &&
    pre.add_prefix_space !== true &&
    pre.use_regex !== false && model.type === "BPE" && (model.dropout ?? null) === null &&
    !model.continuing_subword_prefix && !model.end_of_word_suffix && !model.byte_fallback &&
    !model.ignore_merges && typeof model.vocab === "object" && Array.isArray(model.merges) &&
    added.every((t) => !t.lstrip && !t.rstrip && !t.single_word);
  if (!plain) return undefined;
  const merges = (model.merges as Array<string | [string, string]>).map((m) =>
    (typeof m === "string" ? m.split(" ", 2) : m) as [string, string]
  );
  const vocab = new Map(Object.entries(model.vocab as Record<string, number>));
  for (const t of added) vocab.set(t.content as string, t.id as number);
  return new ByteLevelBpeEncoder({
    vocab,
    merges,
    added: added.map((t) => ({ content: t.content as string, id: t.id as number })),
  });
}
