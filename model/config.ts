/**
 * GPT-2 model configuration: the fields of a Hugging Face `config.json` that define the architecture,
 * with validation that names the bad field.
 * @module
 */

/**
 * Dropout rates of GPT-2's four dropout modules in training (transformers' `embd_pdrop`, `attn_pdrop`,
 * `resid_pdrop`): after token + position embeddings, on the attention probabilities, and after each
 * block's attention and MLP projections. Each in [0, 1); 0 records no dropout work.
 */
export interface DropoutRates {
  embdPdrop: number;
  attnPdrop: number;
  residPdrop: number;
}

/** transformers' `GPT2Config` defaults, which the baseline trains with. */
export const GPT2_DROPOUT: DropoutRates = { embdPdrop: 0.1, attnPdrop: 0.1, residPdrop: 0.1 };

/** No dropout. */
export const NO_DROPOUT: DropoutRates = { embdPdrop: 0, attnPdrop: 0, residPdrop: 0 };

/** The same rate at all three kinds of site (`--dropout P`). */
export function uniformDropout(p: number): DropoutRates {
  return { embdPdrop: p, attnPdrop: p, residPdrop: p };
}

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
  /**
   * The dropout rates of `config.json`, used only where a caller trains with them (the model's forward
   * pass never drops by itself). Absent: not stated (config.json then records transformers' defaults).
   */
  dropout?: DropoutRates;
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
  dropout: GPT2_DROPOUT,
};

/** Throw a clear error if any field is impossible. `where` names the source (a file path). */
export function validateConfig(c: GPT2Config, where = "config"): GPT2Config {
  const positiveInts: Array<"vocabSize" | "nPositions" | "nEmbd" | "nLayer" | "nHead"> = [
    "vocabSize",
    "nPositions",
    "nEmbd",
    "nLayer",
    "nHead",
  ];
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
  if (c.dropout) checkDropoutRates(c.dropout, `${where}: dropout`);
  return c;
}

/** Throw a clear error unless every rate is a number in [0, 1); `where` names the source. */
export function checkDropoutRates(r: DropoutRates, where: string): DropoutRates {
  for (const k of ["embdPdrop", "attnPdrop", "residPdrop"] as const) {
    const v = r[k];
    if (!(typeof v === "number" && v >= 0 && v < 1)) {
      throw new Error(`${where}.${k} must be a dropout rate in [0, 1), got ${JSON.stringify(v)}`);
    }
  }
  return r;
}

/** Number of parameters (tied head counted once). */
export function parameterCount(c: GPT2Config): number {
  const C = c.nEmbd;
  const perLayer = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * 4 * C + 4 * C) + (4 * C * C + C);
  return c.vocabSize * C + c.nPositions * C + c.nLayer * perLayer + 2 * C;
}
