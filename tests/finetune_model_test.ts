/**
 * The GPU classifier (eval/finetune_model.ts) against PyTorch (tests/make_finetune_fixture.py): eval-mode
 * logits of a left-padded batch with per-sequence and with absolute positions, and of a right-padded batch
 * read at its first token; the train-mode loss and every gradient (transformer and head) with the engine's
 * dropout masks; and three AdamW steps at the pipeline's schedule (lr 0 first) with weight decay on every
 * tensor. Plus the head alone against float64.
 */
import assert from "node:assert/strict";
import { GPT2 } from "../model/gpt2.ts";
import { loadCheckpoint } from "../cli/files.ts";
import { parseSafetensors, type TensorData } from "../model/safetensors.ts";
import { Plan } from "../shaders/gpu.ts";
import { geluErfBackward, geluErfForward } from "../shaders/classifier.ts";
import {
  Classifier,
  type ClassifierBatch,
  type ClassifierOptions,
  HEAD_TENSORS,
  type HeadWeights,
  type Pooling,
  type Positions,
  transpose,
} from "../eval/finetune_model.ts";
import { assertClose, randn, testGpu } from "./util.ts";

const FIXTURE = new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname;
const TOL = { rtol: 2e-3, atol: 2e-5 };

async function load() {
  const { tensors, metadata } = parseSafetensors(
    await Deno.readFile(FIXTURE + "finetune.safetensors"),
    "finetune.safetensors",
  );
  const settings = JSON.parse(metadata!.settings) as {
    dropout: { seed: number; rates: { embd: number; attn: number; resid: number }; head: number };
    num_labels: number;
    adamw: { betas: number[]; eps: number; weight_decay: number };
  };
  const get = (name: string) => {
    const t = tensors.get(name);
    if (!t) throw new Error(`fixture has no ${name}`);
    return t;
  };
  return { get, settings };
}

const f32 = (a: TensorData) => Float32Array.from(a);
const u32 = (a: TensorData) => Uint32Array.from(a);

async function setup(pooling: Pooling, positions: Positions, train: boolean, maxB = 4) {
  const gpu = await testGpu();
  const { get, settings } = await load();
  const ckpt = await loadCheckpoint(FIXTURE);
  const model = GPT2.create(gpu, ckpt.config, ckpt.weights);
  const C = ckpt.config.nEmbd, L = settings.num_labels;
  const head: HeadWeights = {
    denseW: transpose(f32(get("head." + HEAD_TENSORS.denseWeight).data), C, C),
    denseB: f32(get("head." + HEAD_TENSORS.denseBias).data),
    outW: transpose(f32(get("head." + HEAD_TENSORS.outWeight).data), L, C),
    outB: f32(get("head." + HEAD_TENSORS.outBias).data),
  };
  const d = settings.dropout;
  const options: ClassifierOptions = {
    numLabels: L,
    classifierDropout: train ? d.head : 0,
    headEps: 1e-5,
    transformerDropout: train
      ? { embdPdrop: d.rates.embd, attnPdrop: d.rates.attn, residPdrop: d.rates.resid }
      : { embdPdrop: 0, attnPdrop: 0, residPdrop: 0 },
    seed: d.seed,
    adamw: {
      beta1: settings.adamw.betas[0],
      beta2: settings.adamw.betas[1],
      eps: settings.adamw.eps,
      weightDecay: settings.adamw.weight_decay,
    },
    pooling,
    positions,
    maxB,
    maxT: 12,
    head,
  };
  return { gpu, get, model, classifier: new Classifier(model, options), C, L };
}

function batchOf(get: (n: string) => { data: TensorData; shape: number[] }, ids: string, left: boolean) {
  const [B, T] = get(ids).shape;
  const batch: ClassifierBatch = {
    B,
    T,
    tokens: u32(get(ids).data),
    keyStart: left ? u32(get("left.key_start").data) : new Uint32Array(B),
    labels: u32(get("left.labels").data),
  };
  return batch;
}

for (
  const [name, pooling, positions, ids, left] of [
    ["left", "last", "sequence", "left.ids", true],
    ["absolute", "last", "absolute", "left.ids", true],
    ["first", "first", "sequence", "first.ids", false],
  ] as const
) {
  Deno.test(`classifier eval logits (${name}) match PyTorch`, async () => {
    const { get, model, classifier } = await setup(pooling, positions, false);
    const logits = await classifier.predict(batchOf(get, ids, left));
    assertClose(`${name}.logits`, logits, get(`${name}.logits`).data, TOL);
    classifier.destroy();
    model.destroy();
  });
}

Deno.test("classifier train-mode loss and every gradient match PyTorch with the same dropout masks", async () => {
  const { get, model, classifier, C, L } = await setup("last", "sequence", true);
  const out = await classifier.computeGradients(batchOf(get, "left.ids", true));
  assertClose("left.train.loss", [out.loss], get("left.train.loss").data, TOL);
  const g = await classifier.getGradients();
  for (const [name, grad] of g.model) {
    assertClose(`grad ${name}`, grad, get(`left.train.grad.${name}`).data, { rtol: 5e-3, atol: 5e-5 });
  }
  const head = new Map([
    [HEAD_TENSORS.denseWeight, transpose(g.head.denseW, C, C)],
    [HEAD_TENSORS.denseBias, g.head.denseB],
    [HEAD_TENSORS.outWeight, transpose(g.head.outW, C, L)],
    [HEAD_TENSORS.outBias, g.head.outB],
  ]);
  for (const [name, grad] of head) {
    assertClose(`grad ${name}`, grad, get(`left.train.grad.${name}`).data, { rtol: 5e-3, atol: 5e-5 });
  }
  classifier.destroy();
  model.destroy();
});

Deno.test("three AdamW steps (lr 0 first, decay on every tensor) match PyTorch", async () => {
  const { get, model, classifier, C, L } = await setup("last", "sequence", true);
  const batch = batchOf(get, "left.ids", true);
  const lrs = get("left.adamw.lrs").data, losses = get("left.adamw.losses").data;
  for (let k = 0; k < lrs.length; k++) {
    const { loss } = await classifier.trainStep(batch, Number(lrs[k]));
    assertClose(`step ${k + 1} loss`, [loss], [Number(losses[k])], TOL);
  }
  const weights = await model.getWeights();
  const lrSum = Array.from(lrs, Number).reduce((a, b) => a + b, 0);
  for (const [name, w] of weights) {
    const want = Array.from(get(`left.adamw3.${name}`).data, Number);
    if (!name.endsWith("attn.c_attn.bias")) {
      assertClose(`after 3 ${name}`, w, want, TOL);
      continue;
    }
    // The key bias's gradient is zero in exact arithmetic (a constant added to every score of a row), so
    // each side's Adam step on it is rounding noise of either sign: only its size is bounded.
    const qv = (a: ArrayLike<number>) => [...Array.from(a).slice(0, C), ...Array.from(a).slice(2 * C)];
    assertClose(`after 3 ${name} (q, v)`, qv(w), qv(want), TOL);
    assertClose(`after 3 ${name} (k)`, w.slice(C, 2 * C), want.slice(C, 2 * C), { rtol: 0, atol: 2 * lrSum });
  }
  const h = await classifier.getHead();
  assertClose(
    "after 3 dense",
    transpose(h.denseW, C, C),
    get(`left.adamw3.${HEAD_TENSORS.denseWeight}`).data,
    TOL,
  );
  assertClose("after 3 out", transpose(h.outW, C, L), get(`left.adamw3.${HEAD_TENSORS.outWeight}`).data, TOL);
  assertClose("after 3 out bias", h.outB, get(`left.adamw3.${HEAD_TENSORS.outBias}`).data, TOL);
  classifier.destroy();
  model.destroy();
});

Deno.test("left padding changes nothing with per-sequence positions, and shifts absolute ones", async () => {
  for (const positions of ["sequence", "absolute"] as const) {
    const { model, classifier } = await setup("last", positions, false);
    const text = [5, 17, 33, 8, 41];
    // Alone, then left-padded to 9 beside a longer text (pad id 60).
    const alone = await classifier.predict({
      B: 1,
      T: 5,
      tokens: Uint32Array.from(text),
      keyStart: Uint32Array.of(0),
    });
    const padded = await classifier.predict({
      B: 2,
      T: 9,
      tokens: Uint32Array.from([60, 60, 60, 60, ...text, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
      keyStart: Uint32Array.of(4, 0),
    });
    const first = padded.subarray(0, alone.length);
    if (positions === "sequence") assertClose("padded = alone (sequence positions)", first, alone, TOL);
    else {
      const gap = Math.max(...Array.from(first, (v, i) => Math.abs(v - alone[i])));
      assert.ok(gap > 1e-3, `absolute positions: padding must move the logits (gap ${gap})`);
    }
    classifier.destroy();
    model.destroy();
  }
});

Deno.test("a batch split into micro-batches gets the whole batch's loss and gradients", async () => {
  const whole = await setup("last", "sequence", false, 3);
  const batch = batchOf(whole.get, "left.ids", true);
  const a = await whole.classifier.computeGradients(batch);
  const ga = await whole.classifier.getGradients();
  whole.classifier.destroy();
  whole.model.destroy();
  const parts = await setup("last", "sequence", false, 1);
  const b = await parts.classifier.computeGradients(batch);
  const gb = await parts.classifier.getGradients();
  parts.classifier.destroy();
  parts.model.destroy();
  assertClose("micro-batched loss", [b.loss], [a.loss], { rtol: 1e-6, atol: 0 });
  assertClose("micro-batched logits", b.logits, a.logits, { rtol: 1e-5, atol: 1e-6 });
  for (const [name, g] of ga.model) assertClose(`micro-batched ${name}`, gb.model.get(name)!, g, TOL);
  assertClose("micro-batched head dense", gb.head.denseW, ga.head.denseW, TOL);
  assertClose("micro-batched head out", gb.head.outW, ga.head.outW, TOL);
});

Deno.test("exact GELU (erf) forward and backward match float64", async () => {
  const gpu = await testGpu();
  const n = 1001;
  const x = randn(n, 5, 3), dy = randn(n, 6);
  const [tx, ty, tdy, tdx] = [n, n, n, n].map((k) => gpu.tensor(k));
  gpu.write(tx, x);
  gpu.write(tdy, dy);
  const plan = new Plan(gpu);
  geluErfForward(plan, { out: ty, inp: tx, n });
  geluErfBackward(plan, { dinp: tdx, inp: tx, dout: tdy, n });
  plan.run();
  // erf by its Taylor series for |z| < 3, and 1 - erfc by erfc's asymptotic series beyond, in float64.
  const erf = (z: number): number => {
    const a = Math.abs(z);
    if (a >= 3) {
      let term = 1, sum = 1;
      for (let k = 1; k < 9; k++) sum += term *= -(2 * k - 1) / (2 * a * a);
      return Math.sign(z) * (1 - Math.exp(-a * a) / (a * Math.sqrt(Math.PI)) * sum);
    }
    let term = z, sum = z;
    for (let k = 1; k < 200; k++) {
      term *= -z * z / k;
      sum += term / (2 * k + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  };
  const cdf = (z: number) => 0.5 * (1 + erf(z / Math.SQRT2));
  const pdf = (z: number) => Math.exp(-z * z / 2) / Math.sqrt(2 * Math.PI);
  assertClose("gelu erf forward", await gpu.read(ty), Array.from(x, (z) => z * cdf(z)), {
    rtol: 1e-5,
    atol: 2e-6,
  });
  assertClose(
    "gelu erf backward",
    await gpu.read(tdx),
    Array.from(x, (z, i) => (cdf(z) + z * pdf(z)) * dy[i]),
    { rtol: 1e-5, atol: 2e-6 },
  );
  assert.ok(Math.abs(erf(1) - 0.8427007929497149) < 1e-14);
  plan.destroy();
  for (const t of [tx, ty, tdy, tdx]) gpu.free(t);
});
