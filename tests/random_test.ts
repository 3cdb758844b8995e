/**
 * The one seeded generator (model/random.ts): xoshiro128** against the published algorithm's outputs,
 * a saved state that continues the stream exactly (what resume relies on), Box-Muller normals with the
 * right moments, and uniforms in [0, 1).
 */
import assert from "node:assert/strict";
import { deriveSeed, Rng, uniforms } from "../model/random.ts";

Deno.test("xoshiro128**: the reference outputs from state [1, 2, 3, 4]; a saved state continues exactly", () => {
  // From the reference algorithm (Blackman and Vigna's xoshiro128starstar.c), run in Python:
  //   result = rotl(s1 * 5, 7) * 9; t = s1 << 9; s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t;
  //   s3 = rotl(s3, 11)   (all mod 2^32)
  const r = Rng.fromState([1, 2, 3, 4]);
  assert.deepEqual(
    Array.from({ length: 6 }, () => r.nextU32()),
    [11520, 0, 5927040, 70819200, 2031721883, 1637235492],
  );
  assert.deepEqual(r.state(), [1110993931, 286554632, 2431677446, 2165318166]);
  const a = new Rng(deriveSeed(7, "batches", 0, "sft", 1));
  for (let i = 0; i < 5; i++) a.float();
  const b = Rng.fromState(a.state());
  assert.deepEqual(
    Array.from({ length: 8 }, () => a.nextU32()),
    Array.from({ length: 8 }, () => b.nextU32()),
  );
  assert.throws(() => Rng.fromState([0, 0, 0, 0]), /not all zero/);
});

Deno.test("Rng.normal: mean 0 and variance 1 within 5 standard errors; uniforms in [0, 1)", () => {
  const n = 200_000;
  const r = new Rng(12345);
  let sum = 0, sq = 0;
  for (let i = 0; i < n; i++) {
    const x = r.normal();
    sum += x;
    sq += x * x;
  }
  const mean = sum / n, variance = sq / n - mean * mean;
  console.log(`  normal: mean ${mean.toExponential(2)}, variance ${variance.toFixed(4)} over ${n}`);
  assert.ok(Math.abs(mean) < 5 / Math.sqrt(n), `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 5 * Math.sqrt(2 / n), `variance ${variance}`);
  const u = uniforms(3);
  const xs = Array.from({ length: 10_000 }, u);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  assert.deepEqual(Array.from({ length: 4 }, uniforms(3)), xs.slice(0, 4), "the same seed, the same stream");
});
