/**
 * The model side of evaluation, as two small interfaces, and the shape of a multiple-choice item.
 *
 * The evaluation code never sees a GPU: it asks a {@link Scorer} for per-token log-probabilities and
 * a {@link TextCodec} for token ids, so it runs the same with the WebGPU GPT-2 and with the toy
 * bigram model of the tests.
 * @module
 */

/** Which pipeline's rules score the zero-shot tasks: BabyLM 2025 (the model card's) or 2026. */
export type Protocol = "2025" | "2026";

/** Log-probabilities from a causal LM: for each token sequence, ln p(t_i | t_<i) for i = 1..n-1. */
export interface Scorer {
  /** One Float32Array of length n-1 per input sequence of length n (n >= 1), in input order. */
  tokenLogprobs(seqs: number[][]): Promise<Float32Array[]>;
  /**
   * The model's positions (GPT-2: 1024); undefined means unlimited. A sequence of contextLength + 1
   * tokens is scorable: as in the pipeline, the model reads tokens[:-1] and predicts tokens[1:].
   */
  contextLength?: number;
}

/** Text -> ids, from the model's tokenizer. */
export interface TextCodec {
  /** Token ids of `text`, without any special token (no BOS even when {@link addsBos} is set). */
  encode(text: string): number[];
  /** The id put in front of every sequence when {@link addsBos} is true (and of perplexity windows). */
  bosId?: number;
  /** Whether the tokenizer prepends `bosId` to every encoded text (the Hugging Face default call). */
  addsBos: boolean;
  /** Hugging Face's `tokenizer.vocab_size` (the model vocabulary without added tokens), for AoA's chance level. */
  vocabSize?: number;
  /** Text of `ids`; byte-level BPE gives U+FFFD for a split multi-byte character. */
  decode(ids: number[]): string;
  /**
   * Optional exact offsets: the end (in UTF-16 code units of `text`) of every token of
   * `encode(text)`. Tokenizers that do not round-trip through {@link decode} should provide this.
   */
  tokenEnds?(text: string): number[];
}

/**
 * One multiple-choice item as the pipeline builds it: `sentences[k]` is scored on the tokens that
 * overlap its last `completions[k].length` characters; the correct alternative is `label` (default 0).
 */
export interface ChoiceItem {
  sentences: string[];
  completions: string[];
  /** Index of the correct alternative when it is not 0 (GlobalPIQA's `label`). */
  label?: number;
  /** Subset the item is averaged in (BLiMP paradigm, EWoK domain, entity-tracking `file_numops`). */
  uid: string;
  /** Further grouping keys, e.g. `field`, `linguistics_term` (each gets its own accuracy table). */
  groups: Record<string, string>;
}

/** A WUG item: two alternatives (first: the `-ity` form) and the human preference for the first. */
export interface WugItem {
  sentences: [string, string];
  ratio: number;
  uid: string;
}
