/**
 * GPT-2 model configuration: the fields of a Hugging Face `config.json` that define the architecture,
 * with validation that names the bad field.
 * @module
 */

/** The architecture of a GPT-2 model. */
export interface GPT2Config {
  /** Vocabulary size V. */
  vocabSize: number;
  /** Maximum context (number of learned positions). */
  nPositions: number;
  /** Width C. */
  nEmbd: number;
  /** Number of transformer blocks L. */
  nLayer: number;
  /** Attention heads H; C must be divisible by H. */
  nHead: number;
  /** LayerNorm epsilon (GPT-2: 1e-5). */
  layerNormEpsilon: number;
  bosTokenId: number;
  eosTokenId: number;
}

/** GPT-2 124M, as on the Hugging Face Hub (`gpt2`). */
export const GPT2_124M: GPT2Config = {
  vocabSize: 50257,
  nPositions: 1024,
  nEmbd: 768,
  nLayer: 12,
  nHead: 12,
  layerNormEpsilon: 1e-5,
  bosTokenId: 50256,
  eosTokenId: 50256,
};

/** Throw a clear error if any field is impossible. `where` names the source (a file path). */
export function validateConfig(c: GPT2Config, where = "config"): GPT2Config {
  const positiveInts: Array<keyof GPT2Config> = ["vocabSize", "nPositions", "nEmbd", "nLayer", "nHead"];
  for (const k of positiveInts) {
    const v = c[k];
    if (!Number.isInteger(v) || v <= 0) {
      throw new Error(`${where}: ${k} must be a positive integer, got ${v}`);
    }
  }
  if (c.nEmbd % c.nHead !== 0) {
    throw new Error(`${where}: nEmbd (${c.nEmbd}) must be divisible by nHead (${c.nHead})`);
  }
  if (!(c.layerNormEpsilon > 0)) throw new Error(`${where}: layerNormEpsilon must be > 0`);
  for (const k of ["bosTokenId", "eosTokenId"] as const) {
    const v = c[k];
    if (!Number.isInteger(v) || v < 0 || v >= c.vocabSize) {
      throw new Error(`${where}: ${k} must be a token id in [0, ${c.vocabSize}), got ${v}`);
    }
  }
  return c;
}

/** Number of parameters (tied head counted once). */
export function parameterCount(c: GPT2Config): number {
  const C = c.nEmbd;
  const perLayer = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * 4 * C + 4 * C) + (4 * C * C + C);
  return c.vocabSize * C + c.nPositions * C + c.nLayer * perLayer + 2 * C;
}
