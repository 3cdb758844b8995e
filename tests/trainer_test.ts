import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { GPT2 } from "../model/gpt2.ts";
import { Trainer } from "../model/trainer.ts";
import type { GPT2Config } from "../model/config.ts";
import { uniforms } from "../model/random.ts";
import { testGpu } from "./util.ts";

const CONFIG: GPT2Config = {
  vocabSize: 97,
  nPositions: 16,
  nEmbd: 32,
  nLayer: 1,
  nHead: 2,
  layerNormEpsilon: 1e-5,
  bosTokenId: 96,
  eosTokenId: 96,
};

/** A seeded LM batch of B sequences of T positions. */
function batch(B: number, T: number, seed: number) {
  const r = uniforms(seed);
  const n = B * T;
  const inputs = Uint32Array.from({ length: n }, () => Math.floor(r() * CONFIG.vocabSize));
  const targets = Uint32Array.from({ length: n }, () => Math.floor(r() * CONFIG.vocabSize));
  return { nSeq: B, T, inputs, targets, lmMask: new Float32Array(n).fill(1) };
}

Deno.test("trainer: least recently used workspaces are freed, and a rebuilt one trains bit for bit the same", async () => {
  const gpu = await testGpu();
  const shapes: [number, number][] = [[2, 8], [4, 8], [2, 8], [2, 6], [4, 8]];
  const run = async (maxWorkspaces: number) => {
    const model = GPT2.create(gpu, CONFIG, undefined, 5);
    const trainer = new Trainer(model);
    trainer.maxWorkspaces = maxWorkspaces;
    const losses: number[] = [];
    const order: string[][] = [];
    for (const [i, [B, T]] of shapes.entries()) {
      losses.push((await trainer.trainStep(batch(B, T, 10 + i), { kind: "lm" }, 1e-3)).loss);
      order.push(trainer.workspaceShapes);
    }
    const weights = await model.getWeights();
    const allocated = gpu.allocatedBytes;
    trainer.destroy();
    model.destroy();
    return { losses, order, weights, allocated };
  };
  const kept = await run(3);
  const one = await run(1);
  // Least recently used first; at most maxWorkspaces kept.
  assertEquals(kept.order.at(-1), ["2x8", "2x6", "4x8"]);
  assertEquals(one.order, [["2x8"], ["4x8"], ["2x8"], ["2x6"], ["4x8"]]);
  assert(one.allocated < kept.allocated, `${one.allocated} >= ${kept.allocated}`);
  // Rebuilding a freed workspace changes nothing: same losses and weights to the bit.
  assertEquals(one.losses, kept.losses);
  for (const [name, w] of kept.weights) {
    const v = one.weights.get(name)!;
    if (!w.every((x, i) => Object.is(x, v[i]))) {
      throw new Error(`${name} differs after rebuilding workspaces`);
    }
  }
});
