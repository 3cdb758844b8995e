/**
 * Precision f16 in scoring and generation: the same weights give ln p within a stated f16 tolerance of
 * f32 (full forward through the workspace), and KV-cached greedy decoding (prefill and decode steps)
 * gives the f32 tokens with step logits within tolerance. Skipped with a note without `shader-f16`.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { GPT2, initWeights } from "../model/gpt2.ts";
import { BatchScorer } from "../model/score.ts";
import { generate } from "../model/generate.ts";
import type { GPT2Config } from "../model/config.ts";
import { assertClose, testGpu } from "./util.ts";

const gpu = await testGpu();
const ignore = !gpu.shaderF16;
if (ignore) console.log(`f16 scoring/generation tests skipped: adapter ${gpu.adapterName} has no shader-f16`);

const CONFIG: GPT2Config = {
  vocabSize: 97,
  nPositions: 48,
  nEmbd: 64,
  nLayer: 2,
  nHead: 4,
  layerNormEpsilon: 1e-5,
  bosTokenId: 96,
  eosTokenId: 96,
};

/**
 * Weights with matrices scaled up (milder than generate_test's sharp model, whose near-tied attention
 * makes single logits jump with any rounding) so that logits depend on the context.
 */
function sharpWeights(seed: number): Map<string, Float32Array> {
  const w = initWeights(CONFIG, seed);
  for (const [name, a] of w) {
    if (name.endsWith(".weight") && !name.includes("ln_")) {
      const scale = name === "wte.weight" ? 20 : 8;
      for (let i = 0; i < a.length; i++) a[i] *= scale;
    }
  }
  return w;
}

const contexts = [[96], [96, 5, 17, 40, 3, 3, 81, 12, 9], [
  96,
  ...Array.from({ length: 22 }, (_, i) => (i * 37) % 96),
]];

Deno.test({
  name: "f16 scoring: ln p within 0.5% + 0.03 of f32 (measured about 0.01)",
  ignore,
  fn: async () => {
    const weights = sharpWeights(11);
    const lp = async (precision: "f32" | "f16") => {
      const model = GPT2.create(gpu, CONFIG, weights).usePrecision(precision);
      const out = await new BatchScorer(model).tokenLogprobs(contexts);
      model.destroy();
      return out;
    };
    const [f32, f16] = [await lp("f32"), await lp("f16")];
    f32.forEach((want, i) => assertClose(`score seq ${i}`, f16[i], want, { rtol: 5e-3, atol: 0.03 }));
  },
});

Deno.test({
  name: "f16 KV-cached greedy decoding: the f32 tokens, step logits within 0.5% + 0.03",
  ignore,
  fn: async () => {
    const weights = sharpWeights(12);
    const run = async (precision: "f32" | "f16") => {
      const model = GPT2.create(gpu, CONFIG, weights).usePrecision(precision);
      const logits: Float32Array[] = [];
      const out = await generate(model, contexts, {
        maxTokens: 12,
        temperature: 0,
        onStepLogits: (_, l) => logits.push(l.slice()),
      });
      model.destroy();
      return { tokens: out.map((g) => g.tokens), logits };
    };
    const [f32, f16] = [await run("f32"), await run("f16")];
    console.log(`  f16 tokens ${f16.tokens.map((t) => t.join(" ")).join(" | ")}`);
    assertEquals(f16.tokens, f32.tokens);
    f32.logits.forEach((want, k) =>
      assertClose(`decode step ${k}`, f16.logits[k], want, { rtol: 5e-3, atol: 0.03 })
    );
  },
});
