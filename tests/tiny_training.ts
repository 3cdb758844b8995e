/**
 * What the training tests share: for the trainer-level ones (tests/f16_train_test.ts,
 * tests/f16_halfsums_test.ts) a tiny GPT-2, learnable batches for it and two ways of comparing the weights
 * of two runs; for the `deno task train` subprocess ones (tests/train_e2e_test.ts, train_resume_test.ts,
 * f16_resume_test.ts) one tiny run configuration.
 * @module
 */
import type { GPT2Config } from "../model/config.ts";
import type { Batch } from "../model/trainer.ts";
import { TINY, type TrainConfig } from "../interaction/config.ts";

/** Two layers of width 32: small enough for the CPU rasterisers, wide enough for vec4 and f16 paths. */
export const TINY_F16_CONFIG: GPT2Config = {
  vocabSize: 97,
  nPositions: 16,
  nEmbd: 32,
  nLayer: 2,
  nHead: 2,
  layerNormEpsilon: 1e-5,
  bosTokenId: 96,
  eosTokenId: 96,
};

/**
 * A learnable batch: each sequence counts up by a fixed stride from its own start (mod V). The default
 * 2 x 13 gives 26 rows, so the linears' products reach the tiled kernel.
 */
export function strideBatch(i: number, B = 2, T = 13): Batch {
  const n = B * T, V = TINY_F16_CONFIG.vocabSize;
  const inputs = new Uint32Array(n), targets = new Uint32Array(n);
  for (let b = 0; b < B; b++) {
    const start = (17 * (i * B + b)) % V, stride = 1 + ((i + b) % 3);
    for (let t = 0; t < T; t++) {
      inputs[b * T + t] = (start + stride * t) % V;
      targets[b * T + t] = (start + stride * (t + 1)) % V;
    }
  }
  return { nSeq: B, T, inputs, targets, lmMask: new Float32Array(n).fill(1) };
}

/** The largest ||a - b|| / (||b|| + 1e-3) over the weight tensors, and where. */
export function worstDiff(
  a: Map<string, Float32Array>,
  b: Map<string, Float32Array>,
): { rel: number; name: string } {
  let rel = 0, name = "";
  for (const [k, x] of a) {
    const y = b.get(k)!;
    let num = 0, den = 0;
    for (let i = 0; i < x.length; i++) {
      num += (x[i] - y[i]) ** 2;
      den += y[i] ** 2;
    }
    const r = Math.sqrt(num) / (Math.sqrt(den) + 1e-3);
    if (r > rel) [rel, name] = [r, k];
  }
  return { rel, name };
}

/** Whether every weight of `a` has the same bits in `b` (Object.is: -0 and NaN count). */
export function sameBits(a: Map<string, Float32Array>, b: Map<string, Float32Array>): boolean {
  return [...a].every(([k, x]) => x.every((v, i) => Object.is(v, b.get(k)![i])));
}

/**
 * A babylm-interaction-shaped run made tiny: 2 rounds of up to 16 datapoints of 16 + 16 tokens from the
 * embedded corpus, 7-8 new student tokens in batches of `studentBatch`, width 32, one layer, batches of 4
 * at lr 3e-3 after 2 warm-up steps; `overrides` replace whole keys.
 */
export function tinyRunConfig(studentBatch: number, overrides: Partial<TrainConfig>): Partial<TrainConfig> {
  return {
    architecture: { nLayer: 1, nHead: 2, nEmbd: 32, nPositions: 32 },
    vocabSize: 320,
    corpus: { kind: "embedded", words: 6000 },
    numRounds: 2,
    datapointLength: 32,
    contextLength: 16,
    maxDatapointsPerRound: 16,
    student: { ...TINY.student, minTokens: 7, maxTokens: 8, batchSize: studentBatch },
    nPoEpochs: 1,
    batchSize: 4,
    lr: 3e-3,
    warmupSteps: 2,
    totalSteps: 100,
    ...overrides,
  };
}
