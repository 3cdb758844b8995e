import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { allocParams, GPT2, readAll, Workspace } from "../model/gpt2.ts";
import { Plan } from "../shaders/gpu.ts";
import { lmLoss, METRICS_LENGTH } from "../shaders/loss.ts";
import { Trainer } from "../model/trainer.ts";
import type { GPT2Config } from "../model/config.ts";
import { uniforms } from "../model/random.ts";
import { assertClose, testGpu } from "./util.ts";

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

Deno.test("logits in chunks of rows give the same ln p bit for bit and the same gradients as one chunk", async () => {
  const gpu = await testGpu();
  const model = GPT2.create(gpu, CONFIG, undefined, 9);
  const grads = allocParams(gpu, CONFIG, "grad");
  const metrics = gpu.tensor(METRICS_LENGTH, "metrics");
  const { nSeq: B, T, inputs, targets, lmMask } = batch(3, 7, 21);
  const run = async (logitsRows?: number) => {
    const ws = new Workspace(model, B, T, { grads, logitsRows });
    ws.setBatch(inputs, targets, lmMask);
    const loss = new Plan(gpu);
    lmLoss(loss, { metrics, g: ws.g, lp: ws.lp, lmMask: ws.lmMask, nSeq: B, T, nWinning: B, weight: 1 });
    const enc = gpu.device.createCommandEncoder();
    for (const p of grads) for (const part of p.parts) enc.clearBuffer(part.view.buffer);
    ws.encodeClear(enc);
    for (const plan of [ws.forward, loss, ws.backward!]) plan.encode(enc);
    gpu.device.queue.submit([enc.finish()]);
    const out = { rows: ws.logitsRows, lp: await gpu.read(ws.lp), grads: await readAll(gpu, grads) };
    loss.destroy();
    ws.destroy();
    return out;
  };
  const whole = await run();
  assertEquals(whole.rows, B * T);
  for (const rows of [5, 1]) {
    const chunked = await run(rows);
    assertEquals(chunked.rows, rows);
    assert(whole.lp.every((x, i) => Object.is(x, chunked.lp[i])), `ln p differs with ${rows}-row chunks`);
    for (const [name, g] of whole.grads) {
      assertClose(`${name} with ${rows}-row logits chunks`, chunked.grads.get(name)!, g, {
        rtol: 1e-5,
        atol: 1e-7,
      });
    }
  }
  for (const p of grads) for (const part of p.parts) gpu.free(part.view);
  gpu.free(metrics);
  model.destroy();
});
