import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { Plan } from "../shaders/gpu.ts";
import { TILED_CANDIDATES, TILED_DEFAULT } from "../shaders/matmul_tiled.ts";
import {
  attachTuner,
  chooseTiled,
  memoryStore,
  pendingClasses,
  shapeClass,
  tune,
  TUNE_FORMAT,
  tuneAdapterKey,
  type TuneCache,
  tunedWinners,
} from "../shaders/tune.ts";
import { ATTENTION_CANDIDATES } from "../shaders/attention_candidates.ts";
import { matmulRef } from "./reference/matmul.ts";
import { assertClose, randn, testGpu } from "./util.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Trainer } from "../model/trainer.ts";
import { uniforms } from "../model/random.ts";

const M = 40, N = 36, K = 24;
const variant = { transA: false, transB: false, bias: false, accumulate: false };
const blk = { M, N, K, lda: K, ldb: N, ldc: N, aOff: 0, bOff: 0, cOff: 0, dOff: 0 };
const cls = shapeClass(variant, M, N, K);

/** Record the product through the tuner, tune, run, and check the result against float64. */
async function recordTuneRun(): Promise<{ pendingBeforeTune: string[]; label: string }> {
  const gpu = await testGpu();
  const a = randn(M * K, 1), b = randn(K * N, 2);
  const [ta, tb, tout] = [M * K, K * N, M * N].map((n) => gpu.tensor(n));
  gpu.write(ta, a);
  gpu.write(tb, b);
  const plan = new Plan(gpu);
  chooseTiled(plan, [tout, ta, tb], variant, blk);
  const pendingBeforeTune = pendingClasses(gpu);
  await tune(gpu);
  assertEquals(pendingClasses(gpu), []);
  plan.run();
  assertClose(
    "tuned matmul",
    await gpu.read(tout),
    matmulRef({ out: new Float32Array(M * N), a, b, M, N, K }),
    {
      rtol: 1e-4,
      atol: 1e-5 * Math.sqrt(K),
    },
  );
  const label = plan.dispatches[0].label ?? "";
  plan.destroy();
  for (const t of [ta, tb, tout]) gpu.free(t);
  return { pendingBeforeTune, label };
}

/** Warnings collected instead of printed. */
function collect(): { warn: (m: string) => void; messages: string[] } {
  const messages: string[] = [];
  return { warn: (m) => messages.push(m), messages };
}

Deno.test("tuning: auto times every candidate on first use, caches the winner, and the next device reuses it", async () => {
  const gpu = await testGpu();
  const store = memoryStore();
  await attachTuner(gpu, { mode: "auto", store, adapterKey: "test adapter" });
  const first = await recordTuneRun();
  assertEquals(first.pendingBeforeTune, [cls]);
  const cache = JSON.parse(store.text!) as TuneCache;
  assertEquals(cache.format, TUNE_FORMAT);
  ok(cache.adapter.startsWith("test adapter"));
  const entry = cache.entries[cls];
  assertEquals(Object.keys(entry.ms).sort(), TILED_CANDIDATES.map((c) => c.name).sort());
  assertEquals(entry.shape, [M, N, K]);
  ok(Object.values(entry.ms).every((ms) => ms > 0 && ms >= entry.ms[entry.winner]));
  // A second attach reads the cache: the class is resolved at record time, nothing is pending.
  const saved = store.text;
  await attachTuner(gpu, { mode: "auto", store, adapterKey: "test adapter" });
  assertEquals(tunedWinners(gpu), { [cls]: entry.winner });
  assertEquals((await recordTuneRun()).pendingBeforeTune, []);
  assertEquals(store.text, saved);
});

Deno.test("tuning: a corrupt cache, one from another adapter or naming unknown candidates is ignored with a warning and redone", async () => {
  const gpu = await testGpu();
  const good = memoryStore();
  await attachTuner(gpu, { store: good, adapterKey: "A" });
  await recordTuneRun();
  const cases: Array<[string, string, RegExp]> = [
    ["corrupt", "{not json", /not valid JSON/],
    ["another adapter", good.text!.replace('"A |', '"B |'), /was made for "B \|/],
    ["wrong format", JSON.stringify({ format: "x", adapter: "A", entries: {} }), /is not a/],
    [
      "a matmul-only cache of before",
      good.text!.replace(TUNE_FORMAT, "babylm-webgpu matmul tuning 1"),
      /is not a "babylm-webgpu tuning 2" file/,
    ],
    [
      "unknown candidate",
      good.text!.replace(/"winner": "[^"]+"/, '"winner": "gone"'),
      /names no known candidate/,
    ],
  ];
  for (const [what, text, pattern] of cases) {
    const store = memoryStore(text), w = collect();
    await attachTuner(gpu, { store, adapterKey: "A", warn: w.warn });
    assertEquals((await recordTuneRun()).pendingBeforeTune, [cls], what);
    ok(w.messages.some((m) => pattern.test(m)), `${what}: ${w.messages.join("; ")}`);
    const redone = JSON.parse(store.text!) as TuneCache;
    ok(redone.adapter.startsWith("A |") && redone.entries[cls], `${what}: cache rewritten`);
  }
});

Deno.test("tuning: off never reads the cache and runs the fixed default; force retunes a cached class", async () => {
  const gpu = await testGpu();
  const unreadable = {
    where: "nowhere",
    load: () => Promise.reject(new Error("off must not read the cache")),
    save: () => Promise.reject(new Error("off must not write the cache")),
  };
  await attachTuner(gpu, { mode: "off", store: unreadable });
  assertEquals((await recordTuneRun()).pendingBeforeTune, []);
  assertEquals(tunedWinners(gpu), {});
  ok(TILED_CANDIDATES.some((c) => c.name === TILED_DEFAULT));

  const store = memoryStore();
  await attachTuner(gpu, { store, adapterKey: "F" });
  await recordTuneRun();
  const cached = JSON.parse(store.text!) as TuneCache;
  cached.entries[cls].ms = { [cached.entries[cls].winner]: -1 }; // a marker the retune must replace
  store.text = JSON.stringify(cached);
  await attachTuner(gpu, { mode: "force", store, adapterKey: "F" });
  assertEquals((await recordTuneRun()).pendingBeforeTune, [cls]);
  const retuned = JSON.parse(store.text!) as TuneCache;
  assertEquals(Object.keys(retuned.entries[cls].ms).length, TILED_CANDIDATES.length);
});

Deno.test("tuning: training steps are bit for bit the same whichever candidate each matmul and attention class runs", async () => {
  const gpu = await testGpu();
  if (gpu.kernels !== "gpu") {
    console.log(
      "  CPU kernel family: no tiled matmuls or attention to tune here (TEST_KERNELS=gpu runs this)",
    );
    return;
  }
  const config = {
    vocabSize: 97,
    nPositions: 24,
    nEmbd: 64,
    nLayer: 1,
    nHead: 2,
    layerNormEpsilon: 1e-5,
    bosTokenId: 96,
    eosTokenId: 96,
  };
  const B = 2, T = 24, r = uniforms(3);
  const ids = () => Uint32Array.from({ length: B * T }, () => Math.floor(r() * config.vocabSize));
  const batches = [0, 1].map(() => ({
    nSeq: B,
    T,
    inputs: ids(),
    targets: ids(),
    lmMask: new Float32Array(B * T).fill(1),
  }));
  const train = async () => {
    const model = GPT2.create(gpu, config, undefined, 5);
    const trainer = new Trainer(model);
    const losses = [];
    for (const b of batches) losses.push((await trainer.trainStep(b, { kind: "lm" }, 1e-3)).loss);
    const weights = await model.getWeights();
    trainer.destroy();
    model.destroy();
    return { losses, weights };
  };
  await attachTuner(gpu, { mode: "off" });
  const fixed = await train();
  // The step's shape classes, read without tuning; then a cache that gives each a non-default candidate.
  await attachTuner(gpu, { mode: "auto", store: memoryStore(), adapterKey: "bitwise" });
  const probe = new Trainer(GPT2.create(gpu, config, undefined, 5));
  probe.workspace(B, T);
  const classes = pendingClasses(gpu);
  ok(classes.length >= 3, classes.join("; "));
  probe.destroy();
  probe.model.destroy();
  // Each class of a family gets a non-default candidate of it: the matmuls one, attention's passes the
  // staged ones in turn.
  const matmul = TILED_CANDIDATES.find((c) => c.name !== TILED_DEFAULT)!.name;
  const staged = ATTENTION_CANDIDATES.filter((c) => c.tile > 0).map((c) => c.name);
  ok(classes.some((c) => c.startsWith("attention ")), classes.join("; "));
  const pick = classes.map((c, i) => c.startsWith("matmul ") ? matmul : staged[i % staged.length]);
  const entries = Object.fromEntries(
    classes.map((c, i) => [c, { winner: pick[i], shape: [1, 1, 1], ms: { [pick[i]]: 1 } }]),
  );
  const store = memoryStore(
    JSON.stringify({ format: TUNE_FORMAT, adapter: tuneAdapterKey("bitwise"), entries }),
  );
  await attachTuner(gpu, { mode: "auto", store, adapterKey: "bitwise" });
  const tuned = await train();
  assertEquals(tunedWinners(gpu), Object.fromEntries(classes.map((c, i) => [c, pick[i]])));
  assertEquals(tuned.losses, fixed.losses);
  for (const [name, w] of fixed.weights) {
    const v = tuned.weights.get(name)!;
    if (!w.every((x, i) => Object.is(x, v[i]))) throw new Error(`${name} differs between candidates`);
  }
  await attachTuner(gpu, { mode: "off" });
});
