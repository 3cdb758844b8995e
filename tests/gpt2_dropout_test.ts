/**
 * The whole model in train mode against PyTorch: with GPT-2's four dropout sites on, the loss, log p of
 * the targets and every gradient match a float64 model given the same masks (tests/make_fixtures.py
 * implements the same generator). Plus: only training steps drop, rate 0 records no dropout work, and
 * the same seed and steps give the same weights bit for bit.
 */
import assert from "node:assert/strict";
import { GPT2, Workspace } from "../model/gpt2.ts";
import { type Batch, type LossSpec, Trainer } from "../model/trainer.ts";
import { loadCheckpoint } from "../cli/files.ts";
import { type DropoutRates, NO_DROPOUT } from "../model/config.ts";
import { parseSafetensors, type Tensor, type TensorData } from "../model/safetensors.ts";
import { assertClose, testGpu } from "./util.ts";

const FIXTURE = new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname;

async function fixture(file: string): Promise<{ tensors: Map<string, Tensor>; settings: unknown }> {
  const { tensors, metadata } = parseSafetensors(await Deno.readFile(FIXTURE + file), file);
  return { tensors, settings: metadata?.settings ? JSON.parse(metadata.settings) : undefined };
}

const u32 = (a: TensorData) => Uint32Array.from(a);
const f32 = (a: TensorData) => Float32Array.from(a);

/** The fixture's dropout settings: seed, optimiser step and the rates of the three kinds of site. */
async function dropoutCase() {
  const eval_ = (await fixture("reference.safetensors")).tensors;
  const { tensors, settings } = await fixture("dropout.safetensors");
  const s = settings as { seed: number; step: number; rates: { embd: number; attn: number; resid: number } };
  const rates: DropoutRates = { embdPdrop: s.rates.embd, attnPdrop: s.rates.attn, residPdrop: s.rates.resid };
  const [B, T] = eval_.get("lm.inputs")!.shape;
  const lm: Batch = {
    nSeq: B,
    T,
    inputs: u32(eval_.get("lm.inputs")!.data),
    targets: u32(eval_.get("lm.targets")!.data),
    lmMask: f32(eval_.get("lm.mask")!.data),
  };
  const [nSeq, Ts] = eval_.get("simpo.inputs")!.shape;
  const simpo: Batch = {
    nSeq,
    T: Ts,
    inputs: u32(eval_.get("simpo.inputs")!.data),
    targets: u32(eval_.get("simpo.targets")!.data),
    lmMask: f32(eval_.get("simpo.lm_mask")!.data),
    completionMask: f32(eval_.get("simpo.comp_mask")!.data),
  };
  return { eval: eval_, drop: tensors, seed: s.seed, step: s.step, rates, lm, simpo };
}

/** log softmax(logits)[target] per row, in float64. */
function logpAt(logits: Float32Array, targets: Uint32Array, V: number): Float64Array {
  return Float64Array.from(targets, (target, r) => {
    const row = logits.subarray(r * V, (r + 1) * V);
    const max = Math.max(...row);
    let s = 0;
    for (const z of row) s += Math.exp(z - max);
    return row[target] - max - Math.log(s);
  });
}

const SIMPO: LossSpec = { kind: "simpo", beta: 2, gamma: 1, lmWeight: 0.2 };

Deno.test("train-mode GPT-2: loss, log p and every gradient match PyTorch given the same dropout masks", async () => {
  const gpu = await testGpu();
  const { config, weights } = await loadCheckpoint(FIXTURE);
  const c = await dropoutCase();
  const model = GPT2.create(gpu, config, weights);
  const trainer = new Trainer(model, undefined, { dropout: { seed: c.seed, rates: c.rates } });
  // computeGradients draws the masks of the step trainStep would take next.
  trainer.step = c.step - 1;
  const m = await trainer.computeGradients(c.lm, { kind: "lm" });
  assertClose("dropout lm.loss", [m.loss], c.drop.get("drop.lm.loss")!.data, { rtol: 1e-4, atol: 1e-6 });
  const lp = await gpu.read(trainer.workspace(c.lm.nSeq, c.lm.T).lp);
  const want = logpAt(f32(c.drop.get("drop.lm.logits")!.data), c.lm.targets, config.vocabSize);
  assertClose("dropout log p(target)", lp, want, { rtol: 1e-4, atol: 1e-5 });
  for (const [name, g] of await trainer.getGradients()) {
    assertClose(`dropout grad ${name}`, g, c.drop.get("drop.lm.grad." + name)!.data, {
      rtol: 1e-3,
      atol: 1e-6,
    });
  }
  // The masks are the fixture's only at its step: another step draws others and another loss.
  trainer.step = c.step;
  const other = await trainer.computeGradients(c.lm, { kind: "lm" });
  assert.ok(
    Math.abs(other.loss - m.loss) > 1e-4,
    `step ${c.step + 1} gives another loss than step ${c.step}`,
  );

  const s = await (async () => {
    trainer.step = c.step - 1;
    return await trainer.computeGradients(c.simpo, SIMPO);
  })();
  assertClose("dropout simpo loss", [s.loss], c.drop.get("drop.simpo.loss")!.data, {
    rtol: 1e-4,
    atol: 1e-6,
  });
  for (const [name, g] of await trainer.getGradients()) {
    assertClose(`dropout simpo grad ${name}`, g, c.drop.get("drop.simpo.grad." + name)!.data, {
      rtol: 1e-3,
      atol: 1e-6,
    });
  }
  trainer.destroy();
  model.destroy();
});

Deno.test("dropout: scoring never drops; rate 0 records no dropout work", async () => {
  const gpu = await testGpu();
  const { config, weights } = await loadCheckpoint(FIXTURE);
  const c = await dropoutCase();
  const model = GPT2.create(gpu, config, weights);
  const trainer = new Trainer(model, undefined, { dropout: { seed: c.seed, rates: c.rates } });
  trainer.step = c.step - 1;
  await trainer.computeGradients(c.lm, { kind: "lm" });
  // A scoring workspace of the same model (as score, eval and the student's sampling use): eval mode.
  const ws = new Workspace(model, c.lm.nSeq, c.lm.T);
  ws.setBatch(c.lm.inputs, c.lm.targets);
  ws.forward.run();
  assertClose("scoring log p = eval-mode PyTorch", await gpu.read(ws.lp), c.eval.get("lm.logp")!.data, {
    rtol: 1e-4,
    atol: 1e-5,
  });
  ws.destroy();

  const labels = (t: Trainer) =>
    t.stepPlans(c.simpo.nSeq, c.simpo.T, SIMPO).flatMap((p) => p.plan.dispatches.map((d) => d.label));
  const plain = new Trainer(model);
  const zero = new Trainer(model, undefined, { dropout: { seed: 1, rates: NO_DROPOUT } });
  assert.deepEqual(labels(zero), labels(plain), "rate 0: the same dispatches as no dropout");
  const on = labels(trainer);
  assert.ok(on.length > labels(plain).length && on.some((l) => l?.startsWith("dropout_")));
  // One rate on its own: only its sites' work.
  const attnOnly = new Trainer(model, undefined, {
    dropout: { seed: 1, rates: { ...NO_DROPOUT, attnPdrop: 0.1 } },
  });
  assert.deepEqual(labels(attnOnly).filter((l) => l?.startsWith("dropout_")), []);
  assert.equal(labels(attnOnly).length, labels(plain).length);
  for (const t of [trainer, plain, zero, attnOnly]) t.destroy();
  model.destroy();
});

Deno.test("dropout: the same seed and steps give the same weights bit for bit, another seed others", async () => {
  const gpu = await testGpu();
  const { config, weights } = await loadCheckpoint(FIXTURE);
  const c = await dropoutCase();
  const train = async (seed: number) => {
    const model = GPT2.create(gpu, config, weights);
    const trainer = new Trainer(model, undefined, { dropout: { seed, rates: c.rates } });
    for (let i = 0; i < 3; i++) {
      await trainer.trainStep(i === 1 ? c.simpo : c.lm, i === 1 ? SIMPO : { kind: "lm" }, 1e-2);
    }
    const w = await model.getWeights();
    trainer.destroy();
    model.destroy();
    return w;
  };
  const [a, b, other] = [await train(9), await train(9), await train(10)];
  let differs = 0;
  for (const [name, x] of a) {
    assert.deepEqual(b.get(name), x, `${name}: same seed, same bits`);
    if (!x.every((v, i) => v === other.get(name)![i])) differs++;
  }
  assert.ok(
    differs > a.size / 2,
    `another seed changes the weights (${differs} of ${a.size} tensors differ)`,
  );
});
