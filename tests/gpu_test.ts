import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { computeMain, Plan, storage, uniformLayout } from "../shaders/gpu.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Trainer } from "../model/trainer.ts";
import { Generator } from "../model/generate.ts";
import { BatchScorer } from "../model/score.ts";
import type { GPT2Config } from "../model/config.ts";
import { randint, testGpu } from "./util.ts";

Deno.test("a uniform layout's WGSL struct reads back every field its packer wrote, in order and type", async () => {
  const gpu = await testGpu();
  const layout = uniformLayout({ a: "u32", b: "f32", c: "i32", d: "u32", e: "f32" });
  const code = layout.wgsl + storage({ out: "read_write array<f32>" }) + computeMain(1) + /* wgsl */ `
  out[0] = f32(p.a); out[1] = p.b; out[2] = f32(p.c); out[3] = f32(p.d); out[4] = p.e;
}
`;
  const plan = new Plan(gpu);
  const out = gpu.tensor(5);
  plan.add(code, [plan.params(layout, { a: 7, b: 0.5, c: -3, d: 123456, e: -2.25 }), out], 1);
  plan.run();
  assertEquals(Array.from(await gpu.read(out)), [7, 0.5, -3, 123456, -2.25]);
  gpu.free(out);
  plan.destroy();
});

const CONFIG: GPT2Config = {
  vocabSize: 53,
  nPositions: 16,
  nEmbd: 16,
  nLayer: 2,
  nHead: 2,
  layerNormEpsilon: 1e-5,
  bosTokenId: 52,
  eosTokenId: 52,
};

Deno.test("destroying a trainer, a generator and a scorer frees everything they made, uniform blocks included", async () => {
  const gpu = await testGpu();
  const model = GPT2.create(gpu, CONFIG, undefined, 3);
  const use = async () => {
    const trainer = new Trainer(model);
    const n = 2 * 8;
    const batch = {
      nSeq: 2,
      T: 8,
      inputs: randint(n, CONFIG.vocabSize, 1),
      targets: randint(n, CONFIG.vocabSize, 2),
      lmMask: new Float32Array(n).fill(1),
      completionMask: new Float32Array(n).fill(1),
    };
    await trainer.trainStep(batch, { kind: "lm" }, 1e-3);
    await trainer.trainStep(batch, { kind: "simpo", beta: 2, gamma: 0.5, lmWeight: 0.1 }, 1e-3);
    trainer.destroy();
    const generator = new Generator(model);
    await generator.generate([[1, 2, 3], [4]], { maxTokens: 3, temperature: 0 });
    await generator.generate([[5, 6, 7, 8, 9, 10, 11, 12, 13]], { maxTokens: 2, temperature: 0 });
    generator.destroy();
    const scorer = new BatchScorer(model);
    await scorer.tokenLogprobs([[1, 2, 3, 4], [5, 6]]);
    scorer.destroy();
  };
  // The first use makes what the device keeps on purpose (the LayerNorm backward's shared scratch).
  await use();
  const before = gpu.allocatedBytes;
  await use();
  assertEquals(gpu.allocatedBytes, before);
  model.destroy();
});
