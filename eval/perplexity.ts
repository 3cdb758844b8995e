/**
 * Perplexity and bits per word of a held-out text.
 *
 * The text is tokenized whole (BOS in front when the tokenizer has one, so the first token is
 * predicted too) and cut into windows of the model's context. Window w starts `stride` tokens after
 * window w−1 and scores only the tokens no earlier window scored, so every token is predicted exactly
 * once; stride = context − 1 (the default) gives back-to-back windows sharing one token, a smaller
 * stride gives every prediction more context at more cost.
 * @module
 */
import type { Span } from "./score.ts";
import type { TextCodec } from "./types.ts";

/** Perplexity results. */
export interface PerplexityResult {
  kind: "perplexity";
  file: string;
  tokens: number;
  words: number;
  bytes: number;
  /** Total negative log-likelihood in nats. */
  nll: number;
  perplexity: number;
  bitsPerToken: number;
  bitsPerWord: number;
  bitsPerByte: number;
}

/** Windows over `text` for a model with `context` positions. */
export function perplexitySpans(
  enc: TextCodec,
  text: string,
  context: number,
  stride = context - 1,
): { spans: Span[]; predicted: number } {
  if (context < 2) throw new Error(`perplexity: the context must hold at least 2 tokens, got ${context}`);
  if (stride < 1 || stride > context - 1) {
    throw new Error(`perplexity: stride must be in [1, ${context - 1}], got ${stride}`);
  }
  const content = enc.encode(text);
  const ids = enc.bosId !== undefined ? [enc.bosId, ...content] : content;
  if (ids.length < 2) {
    throw new Error(`perplexity: the text has ${content.length} tokens, too few to predict any`);
  }
  const spans: Span[] = [];
  let scored = 1; // tokens [0, scored) are predicted already (token 0 never is)
  for (let s = 0; scored < ids.length; s += stride) {
    const window = ids.slice(s, s + context);
    spans.push({ ids: window, from: scored - s });
    scored = s + window.length;
  }
  return { spans, predicted: Math.max(0, ids.length - 1) };
}

/** The metrics from the window sums. */
export function perplexityResult(
  file: string,
  text: string,
  predicted: number,
  sums: Float64Array,
): PerplexityResult {
  let nll = 0;
  for (const s of sums) nll -= s;
  const words = text.split(/\s+/).filter((w) => w !== "").length;
  const bytes = new TextEncoder().encode(text).length;
  return {
    kind: "perplexity",
    file,
    tokens: predicted,
    words,
    bytes,
    nll,
    perplexity: Math.exp(nll / predicted),
    bitsPerToken: nll / Math.LN2 / predicted,
    bitsPerWord: nll / Math.LN2 / words,
    bitsPerByte: nll / Math.LN2 / bytes,
  };
}
