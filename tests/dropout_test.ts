import assert from "node:assert/strict";
import { Plan } from "../shaders/gpu.ts";
import {
  dropoutBits,
  dropoutCopy,
  dropoutInPlace,
  DropoutKey,
  dropoutResidual,
  keeps,
  keepThreshold,
  mix32,
} from "../shaders/dropout.ts";
import { dropoutRef, maskRef } from "./reference/dropout.ts";
import { assertClose, randn, testGpu } from "./util.ts";

/** Kept count of n Bernoulli(1-p) draws within 5 standard deviations (fails by chance about 1 in 2e6). */
function assertBinomial(name: string, kept: number, n: number, p: number): void {
  const mean = n * (1 - p), sd = Math.sqrt(n * p * (1 - p));
  console.log(`  ${name}: kept ${kept} of ${n}, expected ${mean.toFixed(0)} ± ${sd.toFixed(1)}`);
  assert.ok(Math.abs(kept - mean) <= 5 * sd, `${name}: kept ${kept} of ${n}, expected ${mean} ± 5 × ${sd}`);
}

Deno.test("dropout generator: the values the fixture script's Python computes, and the keep rule in integers", () => {
  // tests/make_fixtures.py dropout_bits on the same arguments.
  assert.equal(dropoutBits(0, 0, 0, 0, 0), 4007080336);
  assert.equal(dropoutBits(4242, 3, 0, 5, 7), 3655290684);
  assert.equal(dropoutBits(4294967295, 123456, 40, 99999, 1023), 3587411716);
  // mix32 is a bijection: no two of 2^16 consecutive inputs collide.
  assert.equal(new Set(Array.from({ length: 1 << 16 }, (_, i) => mix32(i))).size, 1 << 16);
  // keep iff bits/2^32 >= p, decided exactly: p = 0.25 keeps bits >= 2^30.
  assert.equal(keepThreshold(0.25), 2 ** 30);
  assert.equal(keepThreshold(0), 0);
  assert.equal(keepThreshold(0.1), Math.ceil(0.1 * 2 ** 32));
  assert.throws(() => keepThreshold(1), /\[0, 1\)/);
  assert.throws(() => keepThreshold(-0.1), /\[0, 1\)/);
});

Deno.test("dropout generator: kept fraction within binomial bounds at every kind of site, pairs independent", () => {
  for (const p of [0.1, 0.5]) {
    // The embedding (site 0) and layer 3's three sites, each over a [rows, cols] grid.
    for (const site of [0, 10, 11, 12]) {
      const rows = 300, cols = 100;
      let kept = 0, both = 0;
      let prev = false;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const k = keeps(7, 5, site, r, c, p);
          kept += k ? 1 : 0;
          if (c > 0 && k && prev) both++;
          prev = k;
        }
      }
      assertBinomial(`p=${p} site ${site}`, kept, rows * cols, p);
      // Neighbouring columns are kept together with probability (1-p)^2.
      const pairs = rows * (cols - 1), q = (1 - p) ** 2;
      assertBinomial(`p=${p} site ${site} neighbour pairs`, both, pairs, 1 - q);
    }
  }
  // Another step or site draws another mask (about 2p(1-p) of the elements differ).
  let diffStep = 0, diffSite = 0;
  for (let i = 0; i < 10000; i++) {
    if (keeps(7, 5, 1, i, 3, 0.5) !== keeps(7, 6, 1, i, 3, 0.5)) diffStep++;
    if (keeps(7, 5, 1, i, 3, 0.5) !== keeps(7, 5, 2, i, 3, 0.5)) diffSite++;
  }
  assertBinomial("step 5 vs 6 differing", diffStep, 10000, 0.5);
  assertBinomial("site 1 vs 2 differing", diffSite, 10000, 0.5);
});

Deno.test("dropout kernels: in place, copy and residual forms keep the reference mask and match float64", async () => {
  const gpu = await testGpu();
  const key = new DropoutKey(gpu, 31);
  // cols a multiple of 4 (vec4 threads) and not; more elements than one workgroup.
  for (const [rows, cols, rate, step] of [[37, 64, 0.1, 1], [50, 13, 0.3, 9], [1, 3, 0.6, 4]] as const) {
    const name = `[${rows}, ${cols}] p=${rate} step ${step}`;
    const n = rows * cols, site = 5;
    const x = randn(n + 3, rows), a = randn(n + 3, cols);
    const views = [x, x, a, new Float32Array(n + 3).fill(9), new Float32Array(n + 3).fill(9)].map((d) => {
      const v = gpu.tensor(n + 3);
      gpu.write(v, d);
      return v;
    });
    const [inplace, tx, ta, copy, residual] = views;
    const spec = { key, site, rate, rows, cols };
    const plan = new Plan(gpu);
    dropoutInPlace(plan, inplace, spec);
    dropoutCopy(plan, copy, tx, spec);
    dropoutResidual(plan, residual, ta, tx, spec);
    key.setStep(step);
    plan.run();
    const mask = maskRef({ seed: 31, step, site, rate }, rows, cols);
    const tail = (v: Float64Array, fill: ArrayLike<number>) => {
      const out = new Float64Array(n + 3);
      out.set(v);
      for (let i = n; i < n + 3; i++) out[i] = fill[i];
      return out;
    };
    const xs = x.subarray(0, n), as = a.subarray(0, n);
    const nines = new Float32Array(n + 3).fill(9);
    // Masked elements are exactly 0 and kept ones x * f32(1/(1-p)): within half an ulp of the float64 value.
    const tol = { rtol: 1.2e-7, atol: 0 };
    assertClose(`in place ${name}`, await gpu.read(inplace), tail(dropoutRef(mask, xs), x), tol);
    assertClose(`copy ${name}`, await gpu.read(copy), tail(dropoutRef(mask, xs), nines), tol);
    // Two roundings (x * scale, then the sum): within an ulp of |x * scale| (< 6e-7 here) plus half of the sum's.
    assertClose(`residual ${name}`, await gpu.read(residual), tail(dropoutRef(mask, xs, as), nines), {
      rtol: 6e-8,
      atol: 6e-7,
    });
    const kept = mask.reduce((s, m) => s + (m > 0 ? 1 : 0), 0);
    const gpuKept = (await gpu.read(copy)).subarray(0, n).reduce(
      (s, v, i) => s + (v !== 0 || xs[i] === 0 ? 1 : 0),
      0,
    );
    assert.equal(gpuKept, kept, `${name}: the kernel keeps the reference's elements`);
    for (const v of views) gpu.free(v);
  }
  key.destroy();
});

Deno.test("dropout kernels: rate 0 is refused (callers record no work), bad shapes named", async () => {
  const gpu = await testGpu();
  const key = new DropoutKey(gpu, 1);
  const v = gpu.tensor(8);
  const plan = new Plan(gpu);
  assert.throws(
    () => dropoutInPlace(plan, v, { key, site: 0, rate: 0, rows: 2, cols: 4 }),
    /records no work/,
  );
  assert.throws(() => dropoutInPlace(plan, v, { key, site: 0, rate: 0.1, rows: 3, cols: 4 }), /needs 12/);
  assert.throws(() => dropoutInPlace(plan, v, { key, site: 0, rate: 1, rows: 2, cols: 4 }), /\[0, 1\)/);
  assert.equal(plan.dispatches.length, 0);
  gpu.free(v);
  key.destroy();
});
