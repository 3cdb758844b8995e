import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { Plan } from "../shaders/gpu.ts";
import { sample, type SamplingParams } from "../shaders/sampling.ts";
import { samplingDistributionRef } from "./reference/sampling.ts";
import { randn, testGpu } from "./util.ts";

/** Draw one token for each of `n` copies of `logits` (distinct sequence ids), returning the ids. */
async function draw(
  logits: Float32Array,
  n: number,
  s: SamplingParams,
  counts0 = 0,
  step = 0,
): Promise<Uint32Array> {
  const gpu = await testGpu();
  const V = logits.length;
  const big = new Float32Array(n * V);
  for (let i = 0; i < n; i++) big.set(logits, i * V);
  const tl = gpu.tensor(n * V),
    tt = gpu.tensor(n),
    tc = gpu.tensor(n),
    ids = gpu.tensor(n),
    st = gpu.tensor(1);
  gpu.write(tl, big);
  gpu.write(tc, new Uint32Array(n).fill(counts0));
  gpu.write(ids, Uint32Array.from({ length: n }, (_, i) => i));
  gpu.write(st, new Uint32Array([step]));
  const plan = new Plan(gpu);
  sample(plan, { tokens: tt, counts: tc, logits: tl, seqIds: ids, step: st, nSeq: n, V, settings: s });
  plan.run();
  const out = await gpu.readU32(tt);
  for (const v of [tl, tt, tc, ids, st]) gpu.free(v);
  return out;
}

const base: SamplingParams = { temperature: 1, topP: 1, topK: 0, minTokens: 0, eosId: 0, seed: 1234 };

/** Pearson chi-square of observed counts against expected probabilities (cells with p > 0). */
function chiSquare(tokens: Uint32Array, probs: Float64Array): { stat: number; df: number; outside: number } {
  const counts = new Float64Array(probs.length);
  for (const t of tokens) counts[t]++;
  let stat = 0, df = -1, outside = 0;
  probs.forEach((p, j) => {
    if (p > 0) {
      const e = p * tokens.length;
      stat += (counts[j] - e) ** 2 / e;
      df++;
    } else outside += counts[j];
  });
  return { stat, df, outside };
}

// Upper 0.1% points of chi-square for df 1..15 (a fixed seed makes the test deterministic).
const CHI2_999 = [
  10.83,
  13.82,
  16.27,
  18.47,
  20.52,
  22.46,
  24.32,
  26.12,
  27.88,
  29.59,
  31.26,
  32.91,
  34.53,
  36.12,
  37.70,
];

Deno.test("top-p / top-k / temperature frequencies match the exact distribution (chi-square)", async () => {
  const logits = Float32Array.from([2.0, 1.5, 1.4, 0.3, -0.5, 1.0, 0.9, -2.0, 0.0, 1.45, -1.0, 0.5, 3.0]);
  const cases: Array<Partial<SamplingParams>> = [
    { topP: 0.8, temperature: 1 },
    { topP: 0.9, temperature: 0.7 },
    { topK: 4, temperature: 1.3 },
    { topK: 6, topP: 0.7, temperature: 1 },
    { topP: 1, temperature: 1 },
  ];
  for (const c of cases) {
    const s = { ...base, ...c };
    const probs = samplingDistributionRef(logits, s);
    const tokens = await draw(logits, 3000, s);
    const { stat, df, outside } = chiSquare(tokens, probs);
    console.log(
      `  ${JSON.stringify(c).padEnd(40)} kept=${df + 1} chi2=${
        stat.toFixed(2)
      } (df ${df}) outside=${outside}`,
    );
    assertEquals(outside, 0, "a token outside the top-k/top-p set was drawn");
    if (df > 0) {
      if (!(stat < CHI2_999[df - 1])) throw new Error(`chi-square ${stat} too large for df ${df}`);
    }
  }
});

Deno.test("greedy picks the argmax; EOS is suppressed before min_tokens; same seed same tokens", async () => {
  const V = 50257;
  const logits = randn(V, 7, 2);
  logits[123] = 50;
  logits[50256] = 60;
  const greedy = { ...base, temperature: 0, eosId: 50256 };
  assertEquals([...await draw(logits, 3, greedy)], [50256, 50256, 50256]);
  assertEquals([...await draw(logits, 3, { ...greedy, minTokens: 5 }, 2)], [123, 123, 123]);
  assertEquals([...await draw(logits, 2, { ...greedy, minTokens: 5 }, 5)], [50256, 50256]);
  const flat = randn(V, 8, 1);
  flat[50256] = 8;
  const sampled = { ...base, eosId: 50256, minTokens: 10, topP: 0.95 };
  const a = await draw(flat, 64, sampled, 0, 3);
  const b = await draw(flat, 64, sampled, 0, 3);
  assertEquals([...a], [...b]);
  if (a.includes(50256)) throw new Error("EOS drawn before min_tokens");
  const c = await draw(flat, 64, { ...sampled, seed: 99 }, 0, 3);
  if (a.every((t, i) => t === c[i])) throw new Error("different seeds gave identical draws");
});

Deno.test("full-vocabulary top-p matches the exact distribution", async () => {
  const V = 50257;
  const logits = randn(V, 11, 1);
  for (let j = 0; j < 20; j++) logits[j * 997] = 6 + j * 0.1;
  const s = { ...base, topP: 0.8, eosId: 50256 };
  const probs = samplingDistributionRef(logits, s);
  const tokens = await draw(logits, 256, s);
  const { outside } = chiSquare(tokens, probs);
  assertEquals(outside, 0, "a token outside the nucleus was drawn");
});
