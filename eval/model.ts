/**
 * The project's GPT-2 and tokenizer behind the evaluation's two interfaces ({@link Scorer},
 * {@link TextCodec}).
 *
 * BOS. The pipeline (babylm/evaluation-pipeline-2025, causal backend) tokenizes every sentence and
 * every reading context with the plain Hugging Face call `tokenizer(text)`, i.e. with special tokens.
 * Whether that puts a BOS in front is decided by the tokenizer's post-processor alone: GPT-2's
 * (`ByteLevel`) adds nothing, so token 0 of each sentence is never predicted; a `TemplateProcessing`
 * whose single-sequence template starts with a special token (Llama-style) adds it, and then the first
 * word is predicted after BOS. {@link evalEncoder} reads that from tokenizer.json, so `withBos` of
 * score.ts does what the pipeline does for either kind.
 * @module
 */
import type { Scorer, TextCodec } from "./types.ts";
import type { GPT2 } from "../model/gpt2.ts";
import { BatchScorer } from "../model/score.ts";
import type { Tokenizer } from "../model/tokenizer.ts";

/** What the Hugging Face call `tokenizer(text)` adds around the text's own tokens. */
export interface SpecialWrap {
  /** Ids put in front, in order. */
  prefix: number[];
  /** Ids put after. */
  suffix: number[];
}

type Json = Record<string, unknown>;

/** The ids of one post-processor's single-sequence wrap; `where` names it in errors. */
function wrapOf(pp: Json, where: string): SpecialWrap {
  const idOfPair = (v: unknown, what: string): number => {
    // BertProcessing / RobertaProcessing store [token, id].
    if (!Array.isArray(v) || typeof v[1] !== "number") {
      throw new Error(`${where}: expected ${what} as [token, id], found ${JSON.stringify(v)}`);
    }
    return v[1];
  };
  switch (pp.type) {
    case "ByteLevel":
      return { prefix: [], suffix: [] };
    case "BertProcessing":
    case "RobertaProcessing":
      return { prefix: [idOfPair(pp.cls, "cls")], suffix: [idOfPair(pp.sep, "sep")] };
    case "TemplateProcessing": {
      const single = pp.single, specials = (pp.special_tokens ?? {}) as Record<string, { ids?: number[] }>;
      if (!Array.isArray(single)) throw new Error(`${where}: TemplateProcessing without a "single" template`);
      const out: SpecialWrap = { prefix: [], suffix: [] };
      let seenText = false;
      for (const piece of single as Json[]) {
        if ("Sequence" in piece) {
          seenText = true;
          continue;
        }
        const name = (piece.SpecialToken as Json | undefined)?.id;
        const ids = typeof name === "string" ? specials[name]?.ids : undefined;
        if (!Array.isArray(ids)) {
          throw new Error(`${where}: template piece ${JSON.stringify(piece)} names no known special token`);
        }
        (seenText ? out.suffix : out.prefix).push(...ids);
      }
      return out;
    }
    case "Sequence": {
      const out: SpecialWrap = { prefix: [], suffix: [] };
      for (const [i, p] of ((pp.processors ?? []) as Json[]).entries()) {
        const w = wrapOf(p, `${where}.processors[${i}]`);
        out.prefix.unshift(...w.prefix);
        out.suffix.push(...w.suffix);
      }
      return out;
    }
    default:
      throw new Error(
        `${where}: post-processor type ${JSON.stringify(pp.type)} is not understood (expected ByteLevel, ` +
          `TemplateProcessing, BertProcessing, RobertaProcessing or Sequence)`,
      );
  }
}

/** The special ids `tokenizer(text)` adds, from the `post_processor` of a tokenizer.json (text or parsed). */
export function specialWrap(tokenizerJson: string | Json, where = "tokenizer.json"): SpecialWrap {
  const o = typeof tokenizerJson === "string" ? JSON.parse(tokenizerJson) as Json : tokenizerJson;
  const pp = o.post_processor as Json | null | undefined;
  if (pp === null || pp === undefined) return { prefix: [], suffix: [] };
  return wrapOf(pp, `${where} post_processor`);
}

/**
 * The evaluation's view of a tokenizer: `encode`/`decode` as the project's, and `addsBos`/`bosId` as
 * the Hugging Face call with special tokens would add them. A tokenizer that adds more than one id in
 * front, or anything after the text, is refused: the pipeline would then read the logits at an
 * appended EOS in the reading task, which this evaluation does not model.
 */
export function evalEncoder(tok: Tokenizer): TextCodec {
  const json = JSON.parse(tok.toJSON()) as Json;
  const wrap = specialWrap(json, tok.where);
  if (wrap.prefix.length > 1 || wrap.suffix.length > 0) {
    throw new Error(
      `${tok.where}: its post-processor wraps text as [${wrap.prefix}] text [${wrap.suffix}]; ` +
        `expected at most one id in front and none after (GPT-2: none at all)`,
    );
  }
  const addsBos = wrap.prefix.length === 1;
  // transformers' `vocab_size` counts the model's vocabulary without added tokens.
  const vocab = (json.model as Json | undefined)?.vocab;
  return {
    addsBos,
    vocabSize: vocab !== null && typeof vocab === "object" ? Object.keys(vocab).length : tok.vocabSize,
    // Without a BOS in the template, perplexity windows still start at the tokenizer's BOS/EOS id.
    bosId: addsBos ? wrap.prefix[0] : tok.bosId,
    encode: (text) => tok.encode(text),
    decode: (ids) => tok.decode(ids),
  };
}

/** Options of {@link GpuEvalScorer}. */
export interface GpuEvalOptions {
  /** Most padded tokens per GPU batch (model/score.ts default: 16384). */
  maxBatchTokens?: number;
}

/**
 * A GPU GPT-2 as the evaluation's {@link Scorer}: each call scores all its sequences, cut into GPU
 * batches by `maxBatchTokens` only (the evaluation already sized the call). `contextLength` is
 * `nPositions`: sequences of up to nPositions + 1 tokens are scored, the model reading all but the last,
 * as the pipeline feeds a Hugging Face GPT-2 tokens[:-1].
 */
export class GpuEvalScorer implements Scorer {
  readonly contextLength: number;
  readonly model: GPT2;
  #inner: BatchScorer;
  #maxBatchTokens?: number;

  constructor(model: GPT2, options: GpuEvalOptions = {}) {
    this.model = model;
    this.contextLength = model.config.nPositions;
    this.#inner = new BatchScorer(model);
    this.#maxBatchTokens = options.maxBatchTokens;
  }

  /** ln p(t_i | t_<i), i = 1..n-1, of each sequence, in input order. */
  tokenLogprobs(seqs: number[][]): Promise<Float32Array[]> {
    return this.#inner.tokenLogprobs(seqs, {
      batchSize: Math.max(1, seqs.length),
      maxBatchTokens: this.#maxBatchTokens,
    });
  }

  /** Free the scoring workspaces (the model's parameters stay). */
  destroy(): void {
    this.#inner.destroy();
  }
}
