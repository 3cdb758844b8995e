/**
 * The tokenizer every part of the project uses: a Hugging Face `tokenizer.json` run by
 * @huggingface/tokenizers, with the special ids the training loop needs (BOS, EOS, padding), and the
 * import of GPT-2's original `vocab.json` + `merges.txt`.
 *
 * Everything here is pure (strings and JSON in, ids out) so the browser uses it as is; reading a
 * tokenizer file (`loadTokenizer`) is the Deno edge's, in `cli/files.ts`.
 * @module
 */
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { type ByteLevelBpeEncoder, byteLevelEncoderFor } from "./bpe_encode.ts";
import { byteLevelBpeJson, type SpecialToken } from "./bpe_format.ts";

/** The name of the tokenizer file inside a model directory. */
export const TOKENIZER_FILE = "tokenizer.json";

/** GPT-2's single special token: beginning and end of text, and padding. */
export const GPT2_EOT = "<|endoftext|>";

/** Model types @huggingface/tokenizers runs. */
const MODEL_TYPES = ["BPE", "WordPiece", "Unigram"];

/**
 * Names looked for among the special `added_tokens`, first match wins. A tokenizer with only GPT-2's
 * `<|endoftext|>` uses it for all three roles, as GPT-2 and the BabyLM baseline do; one with separate
 * `<bos>`/`<eos>`/`<pad>` (or `<s>`/`</s>`/`<pad>`) gets them. Padding falls back to EOS, BOS to EOS.
 */
const SPECIAL_NAMES = {
  bos: ["<bos>", "<s>", "<|begin_of_text|>", GPT2_EOT],
  eos: ["<eos>", "</s>", "<|end_of_text|>", GPT2_EOT],
  pad: ["<pad>", "<|padding|>", "[PAD]"],
};

/** Explicit special-token strings, overriding the names of {@link SPECIAL_NAMES}. */
export interface SpecialTokenNames {
  bos?: string;
  eos?: string;
  pad?: string;
}

/**
 * A loaded tokenizer. `encode` adds no special tokens (so `addsBos` is false, as for GPT-2 in
 * transformers); the training loop puts `bosId`/`eosId`/`padId` where it needs them.
 *
 * A plain byte-level BPE (GPT-2's kind, and what `bpe_train.ts` writes) is encoded by this project's
 * own {@link ByteLevelBpeEncoder}, about ten times faster than the library on a corpus; any other
 * tokenizer.json goes through @huggingface/tokenizers. Tests check the two agree token for token.
 */
export class Tokenizer {
  /** Encoding never prepends BOS (transformers' GPT-2 tokenizer does not either). */
  readonly addsBos = false;
  /** Number of ids: largest id in the vocabulary or the added tokens, plus one (GPT-2: 50257). */
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  /** Where the tokenizer came from, for error messages. */
  readonly where: string;
  #hf: HfTokenizer;
  #json: string;
  #known: (id: number) => boolean;
  /** Parsed tokenizer.json, kept until the fast encoder is built on first use. */
  #parsed?: Record<string, unknown>;
  #fast?: ByteLevelBpeEncoder | null;

  private constructor(
    hf: HfTokenizer,
    json: string,
    parsed: Record<string, unknown>,
    where: string,
    names: SpecialTokenNames,
  ) {
    this.#hf = hf;
    this.#json = json;
    this.#parsed = parsed;
    this.where = where;
    const vocab = hf.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.#known = (id) => hf.id_to_token(id) !== undefined;
    const specials = new Map(
      [...hf.get_added_tokens_decoder().values()].filter((t) => t.special)
        .map((t) => [t.content, t.id]),
    );
    const find = (role: keyof SpecialTokenNames): number | undefined => {
      const explicit = names[role];
      if (explicit !== undefined) {
        const id = hf.token_to_id(explicit);
        if (id === undefined) {
          throw new Error(`${where}: ${role} token ${JSON.stringify(explicit)} is not in the vocabulary`);
        }
        return id;
      }
      for (const n of SPECIAL_NAMES[role]) if (specials.has(n)) return specials.get(n);
      return undefined;
    };
    const eos = find("eos");
    if (eos === undefined) {
      throw new Error(
        `${where}: no end-of-text token: expected a special added token named one of ` +
          `${SPECIAL_NAMES.eos.join(", ")}, found ${JSON.stringify([...specials.keys()])}`,
      );
    }
    this.eosId = eos;
    this.bosId = find("bos") ?? eos;
    this.padId = find("pad") ?? eos;
  }

  /**
   * Load a tokenizer from the text (or parsed object) of a Hugging Face `tokenizer.json`. `where` names
   * the source in errors (malformed JSON, a missing `model`, a model type the library does not run).
   */
  static fromJSON(tokenizerJson: string | object, where: string, names: SpecialTokenNames = {}): Tokenizer {
    let obj: unknown = tokenizerJson;
    let text: string;
    if (typeof tokenizerJson === "string") {
      text = tokenizerJson;
      try {
        obj = JSON.parse(tokenizerJson);
      } catch (e) {
        throw new Error(`${where}: not valid JSON: ${(e as Error).message}`);
      }
    } else {
      text = JSON.stringify(tokenizerJson, null, 2);
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new Error(
        `${where}: expected a tokenizer.json object, found ${Array.isArray(obj) ? "an array" : obj}`,
      );
    }
    const o = obj as Record<string, unknown>;
    const model = o.model as Record<string, unknown> | undefined;
    if (model === null || typeof model !== "object" || Array.isArray(model)) {
      throw new Error(`${where}: expected a "model" object (a Hugging Face tokenizer.json), found ${model}`);
    }
    if (!MODEL_TYPES.includes(model.type as string)) {
      throw new Error(
        `${where}: model.type ${JSON.stringify(model.type)} is not supported (expected ${
          MODEL_TYPES.join(", ")
        })`,
      );
    }
    if (o.added_tokens !== undefined && !Array.isArray(o.added_tokens)) {
      throw new Error(`${where}: added_tokens must be an array, found ${typeof o.added_tokens}`);
    }
    // The library wants every pipeline stage present; tokenizer.json files written by older tools omit
    // some, which means "none".
    const full = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      ...o,
      added_tokens: o.added_tokens ?? [],
    };
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(full, {});
    } catch (e) {
      throw new Error(`${where}: @huggingface/tokenizers cannot load it: ${(e as Error).message}`);
    }
    return new Tokenizer(hf, text, full, where, names);
  }

  /** Token ids of `text`, with no special tokens added (the text `<|endoftext|>` does map to its id). */
  encode(text: string): number[] {
    if (this.#fast === undefined) {
      this.#fast = byteLevelEncoderFor(this.#parsed!) ?? null;
      this.#parsed = undefined;
    }
    return this.#fast === null ? this.encodeWithLibrary(text) : this.#fast.encode(text);
  }

  /** Token ids of `text` from @huggingface/tokenizers itself (what {@link encode} must equal; slower). */
  encodeWithLibrary(text: string): number[] {
    return this.#hf.encode(text, { add_special_tokens: false }).ids;
  }

  /** Whether {@link encode} uses this project's byte-level BPE encoder rather than the library. */
  get fastEncoder(): boolean {
    this.encode("");
    return this.#fast !== null;
  }

  /** Token strings of `text` as the model spells them (byte-level characters for GPT-2). */
  tokens(text: string): string[] {
    return this.#hf.encode(text, { add_special_tokens: false }).tokens;
  }

  /**
   * Text of `ids`, special tokens included, with no clean-up of spaces (so `decode(encode(s)) === s`
   * for byte-level BPE). A multi-byte character cut by the end of `ids` decodes to U+FFFD.
   */
  decode(ids: readonly number[]): string {
    if (ids.length === 0) return "";
    for (const id of ids) {
      if (!Number.isInteger(id) || !this.#known(id)) {
        throw new Error(
          `${this.where}: cannot decode id ${id}: not in the vocabulary of ${this.vocabSize} ids`,
        );
      }
    }
    return this.#hf.decode(ids as number[], {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: false,
    });
  }

  /** The id of a token string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  /** The token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.#hf.id_to_token(id);
  }

  /** The tokenizer.json text, to save next to a checkpoint. */
  toJSON(): string {
    return this.#json;
  }
}

/**
 * Build a Hugging Face `tokenizer.json` from GPT-2's original files: `vocab.json` (token -> id) and
 * `merges.txt` (a `#version` line, then one "left right" merge a line, in rank order). The result has
 * the ByteLevel pre-tokenizer with GPT-2's pattern and no prefix space, the BPE model, the ByteLevel
 * decoder, and `<|endoftext|>` as a special added token. Errors name the file and line.
 */
export function tokenizerJsonFromGpt2Files(vocabJson: string, mergesTxt: string): string {
  let raw: unknown;
  try {
    raw = JSON.parse(vocabJson);
  } catch (e) {
    throw new Error(`vocab.json: not valid JSON: ${(e as Error).message}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new Error(
      `vocab.json: expected an object of token -> id, found ${Array.isArray(raw) ? "an array" : raw}`,
    );
  }
  const vocab = new Map<string, number>();
  const seen = new Map<number, string>();
  for (const [token, id] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
      throw new Error(
        `vocab.json: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}, expected an integer >= 0`,
      );
    }
    if (seen.has(id)) {
      throw new Error(
        `vocab.json: id ${id} is used by both ${JSON.stringify(seen.get(id))} and ${JSON.stringify(token)}`,
      );
    }
    seen.set(id, token);
    vocab.set(token, id);
  }
  const eot = vocab.get(GPT2_EOT);
  if (eot === undefined) throw new Error(`vocab.json: no ${GPT2_EOT} token`);
  const merges: Array<[string, string]> = [];
  mergesTxt.split("\n").forEach((line, i) => {
    const l = line.replace(/\r$/, "");
    if (l === "" || (i === 0 && l.startsWith("#version"))) return;
    const parts = l.split(" ");
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
      throw new Error(`merges.txt:${i + 1}: expected "left right", found ${JSON.stringify(l)}`);
    }
    for (const t of [parts[0], parts[1], parts[0] + parts[1]]) {
      if (!vocab.has(t)) {
        throw new Error(`merges.txt:${i + 1}: token ${JSON.stringify(t)} is not in vocab.json`);
      }
    }
    merges.push([parts[0], parts[1]]);
  });
  const specials: SpecialToken[] = [{ id: eot, content: GPT2_EOT }];
  return byteLevelBpeJson({ vocab, merges, specials });
}
