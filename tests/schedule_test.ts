/** Learning-rate schedules against values worked out by hand from transformers' formulas. */
import assert from "node:assert/strict";
import { learningRate, lrFactor } from "../interaction/schedule.ts";

const close = (a: number, b: number, what: string) =>
  assert.ok(Math.abs(a - b) <= 1e-15 + 1e-12 * Math.abs(b), `${what}: ${a} vs ${b}`);

Deno.test("cosine with warm-up: the baseline's 2000 / 200000 steps at known points", () => {
  const c = { kind: "cosine" as const, lr: 5e-5, warmupSteps: 2000, totalSteps: 200_000 };
  close(learningRate(c, 0), 0, "step 0");
  close(learningRate(c, 1), 5e-5 / 2000, "step 1");
  close(learningRate(c, 1000), 2.5e-5, "half warm-up");
  close(learningRate(c, 2000), 5e-5, "peak");
  // Half-way through the decay: cos(pi/2) = 0 -> factor 0.5.
  close(lrFactor(c, 2000 + 99_000), 0.5, "middle");
  // A quarter: 0.5 (1 + cos(pi/4)) = 0.5 + sqrt(2)/4.
  close(lrFactor(c, 2000 + 49_500), 0.5 + Math.SQRT2 / 4, "quarter");
  close(lrFactor(c, 200_000), 0, "end");
  // transformers does not clamp the progress: past the end the cosine rises again.
  close(lrFactor(c, 250_000), 0.5 * (1 + Math.cos(Math.PI * 248_000 / 198_000)), "past the end");
});

Deno.test("constant with warm-up, no warm-up, and bad steps", () => {
  const k = { kind: "constant" as const, lr: 1e-3, warmupSteps: 10, totalSteps: 100 };
  close(learningRate(k, 5), 5e-4, "warm-up");
  close(learningRate(k, 10), 1e-3, "after");
  close(learningRate(k, 10_000), 1e-3, "long after");
  const c0 = { kind: "cosine" as const, lr: 1, warmupSteps: 0, totalSteps: 4 };
  assert.deepEqual([0, 1, 2, 3, 4].map((s) => Number(lrFactor(c0, s).toFixed(12))), [
    1,
    0.853553390593,
    0.5,
    0.146446609407,
    0,
  ]);
  assert.throws(() => lrFactor(c0, -1), /step must be an integer >= 0/);
});
