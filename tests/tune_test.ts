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
  type TuneCache,
  tunedWinners,
} from "../shaders/tune.ts";
import { matmulRef } from "./reference/matmul.ts";
import { assertClose, randn, testGpu } from "./util.ts";

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
