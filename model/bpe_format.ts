/**
 * What every byte-level BPE here shares: GPT-2's byte-to-character table, its pre-tokenization
 * pattern, and the writer of a Hugging Face `tokenizer.json` for a byte-level BPE.
 *
 * Pure functions over strings: safe in Deno and in the browser.
 * @module
 */

/**
 * GPT-2's pre-tokenization pattern: contractions, an optional space plus a run of letters, of digits
 * or of other non-space characters, then whitespace (a run not followed by a non-space, else any run,
 * so the space before a word stays with the word). This is the JavaScript form that tiktoken and
 * @huggingface/tokenizers use for the ByteLevel pre-tokenizer.
 */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's byte-to-character table: bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬',
 * '®'..'ÿ') stand for themselves; the other 68 bytes, in increasing order, get U+0100, U+0101, ...
 * so that every token is a printable string with no spaces.
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
  const out: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) out.push(String.fromCharCode(printable(b) ? b : next++));
  return out;
})();

/** A special token of a tokenizer.json (`added_tokens`). */
export interface SpecialToken {
  id: number;
  content: string;
}

/** The contents of a byte-level BPE tokenizer.json. */
export interface ByteLevelBpe {
  /** Token string (byte-level characters) -> id; must hold every merge's parts and result. */
  vocab: ReadonlyMap<string, number>;
  /** Merges in rank order, each a pair of token strings. */
  merges: ReadonlyArray<readonly [string, string]>;
  /** Special tokens; each is also in `vocab` with the same id. */
  specials: readonly SpecialToken[];
}

/**
 * The Hugging Face `tokenizer.json` text of a byte-level BPE, in the layout GPT-2's file on the Hub has
 * (ByteLevel pre-tokenizer without prefix space, ByteLevel post-processor and decoder, BPE model with no
 * unknown token, merges as "left right" strings, which every version of the Python `tokenizers` library
 * and @huggingface/tokenizers read). The vocabulary is written in id order. Throws when a merge or a
 * special token does not agree with the vocabulary.
 */
export function byteLevelBpeJson(bpe: ByteLevelBpe): string {
  for (const [i, [a, b]] of bpe.merges.entries()) {
    for (const t of [a, b, a + b]) {
      if (!bpe.vocab.has(t)) {
        throw new Error(`merge ${i} (${a} ${b}): token ${JSON.stringify(t)} not in vocab`);
      }
    }
  }
  for (const s of bpe.specials) {
    if (bpe.vocab.get(s.content) !== s.id) {
      throw new Error(
        `special token ${JSON.stringify(s.content)}: expected vocab id ${s.id}, found ${
          bpe.vocab.get(s.content)
        }`,
      );
    }
  }
  const addedTokens = bpe.specials.map((s) => ({
    id: s.id,
    content: s.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const byteLevel = (addPrefixSpace: boolean, trimOffsets: boolean) => ({
    type: "ByteLevel",
    add_prefix_space: addPrefixSpace,
    trim_offsets: trimOffsets,
    use_regex: true,
  });
  // Object keys that look like integers would be reordered by JSON.stringify, so the vocabulary and
  // the merges are written by hand, one entry a line, in id and rank order.
  const entries = [...bpe.vocab].sort((x, y) => x[1] - y[1]);
  const vocab = entries.map(([t, id]) => `      ${JSON.stringify(t)}: ${id}`).join(",\n");
  const merges = bpe.merges.map(([a, b]) => `      ${JSON.stringify(`${a} ${b}`)}`).join(",\n");
  const head = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel(false, true),
    post_processor: byteLevel(true, false),
    decoder: byteLevel(true, true),
  };
  const model = [
    `    "type": "BPE"`,
    `    "dropout": null`,
    `    "unk_token": null`,
    `    "continuing_subword_prefix": ""`,
    `    "end_of_word_suffix": ""`,
    `    "fuse_unk": false`,
    `    "byte_fallback": false`,
    `    "ignore_merges": false`,
    `    "vocab": {\n${vocab}\n    }`,
    `    "merges": [\n${merges}\n    ]`,
  ].join(",\n");
  const headText = JSON.stringify(head, null, 2);
  return `${headText.slice(0, -2)},\n  "model": {\n${model}\n  }\n}\n`;
}
