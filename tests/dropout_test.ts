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
import { attentionBackward, attentionForward } from "../shaders/attention.ts";
import { attentionBackwardRef, attentionForwardRef, type AttentionShape } from "./reference/attention.ts";
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

/** The scaled mask of attention site `site` as the reference's ProbabilityMask. */
function probabilityMask(seed: number, step: number, site: number, rate: number, s: AttentionShape) {
  return (b: number, h: number, i: number, j: number) =>
    keeps(seed, step, site, (b * s.H + h) * s.T + i, j, rate) ? 1 / (1 - rate) : 0;
}

Deno.test("attention dropout: the reference backward matches finite differences under a fixed mask", () => {
  const s = { B: 1, T: 5, C: 8, H: 2 };
  const mask = probabilityMask(3, 2, 1, 0.4, s);
  const qkv = Float64Array.from(randn(s.B * s.T * 3 * s.C, 21));
  const dy = randn(s.B * s.T * s.C, 22);
  const loss = (x: Float64Array) =>
    attentionForwardRef(x, s, mask).y.reduce((acc, v, i) => acc + v * dy[i], 0);
  const numeric = new Float64Array(qkv.length);
  const h = 1e-6;
  for (let i = 0; i < qkv.length; i++) {
    const up = qkv.slice(), down = qkv.slice();
    up[i] += h;
    down[i] -= h;
    numeric[i] = (loss(up) - loss(down)) / (2 * h);
  }
  assertClose(
    "dropped reference dqkv vs finite differences",
    attentionBackwardRef(qkv, dy, s, mask),
    numeric,
    {
      rtol: 1e-6,
      atol: 1e-8,
    },
  );
  // The mask matters: without it the gradient is another one.
  const plain = attentionBackwardRef(qkv, dy, s);
  assert.ok(plain.some((v, i) => Math.abs(v - numeric[i]) > 1e-3), "the fixed mask changes the gradient");
});

// Both kernel variants: one row per thread (GPUs) and four (CPU adapters); T not a multiple of the rows,
// the 4-key groups or a workgroup's rows.
for (const R of [1, 4]) {
  Deno.test(`attention dropout (${R} rows per thread): forward and recomputing backward match float64`, async () => {
    const gpu = await testGpu();
    const key = new DropoutKey(gpu, 77);
    const shapes: AttentionShape[] = [{ B: 2, T: 7, C: 16, H: 2 }, { B: 1, T: 70, C: 64, H: 4 }, {
      B: 1,
      T: 261,
      C: 32,
      H: 2,
    }];
    for (const s of shapes) {
      const { B, T, C, H } = s;
      const rate = 0.3, site = 4, step = 6;
      const name = `B=${B} T=${T} C=${C} H=${H} R=${R}`;
      const qkv = randn(B * T * 3 * C, 300 + T), dy = randn(B * T * C, 400 + T);
      const tqkv = gpu.tensor(qkv.length), ty = gpu.tensor(B * T * C), tlse = gpu.tensor(B * H * T);
      const tdy = gpu.tensor(dy.length), tdqkv = gpu.tensor(qkv.length);
      gpu.write(tqkv, qkv);
      gpu.write(tdy, dy);
      const dropout = { key, site, rate };
      const plan = new Plan(gpu);
      attentionForward(plan, { y: ty, lse: tlse, qkv: tqkv, B, T, C, H, candidate: `w64-r${R}`, dropout });
      attentionBackward(plan, {
        dqkv: tdqkv,
        dy: tdy,
        qkv: tqkv,
        y: ty,
        lse: tlse,
        B,
        T,
        C,
        H,
        candidate: `w64-r${R}`,
        dropout,
      });
      key.setStep(step);
      plan.run();
      const mask = probabilityMask(77, step, site, rate, s);
      const ref = attentionForwardRef(qkv, s, mask);
      const tol = { rtol: 1e-4, atol: 2e-5 };
      assertClose(`dropped attention y ${name}`, await gpu.read(ty), ref.y, tol);
      assertClose(`dropped attention lse ${name}`, await gpu.read(tlse), ref.lse, tol);
      assertClose(
        `dropped attention dqkv ${name}`,
        await gpu.read(tdqkv),
        attentionBackwardRef(qkv, dy, s, mask),
        {
          rtol: 1e-3,
          atol: 1e-4,
        },
      );
      for (const v of [tqkv, ty, tlse, tdy, tdqkv]) gpu.free(v);
      plan.destroy();
    }
    key.destroy();
  });
}

Deno.test("attention dropout: the kernel's kept fraction of probabilities within binomial bounds", async () => {
  // q = k = 0 makes P_ij = 1/(i+1); v_j = e_j (head size = T) makes y_i[j] = M_ij / (i+1): the mask itself.
  const gpu = await testGpu();
  const key = new DropoutKey(gpu, 5);
  const B = 2, T = 64, H = 2, C = 128, hd = C / H, rate = 0.1, site = 7, step = 3;
  const qkv = new Float32Array(B * T * 3 * C);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) qkv[(b * T + t) * 3 * C + 2 * C + h * hd + t] = 1;
  }
  const tqkv = gpu.tensor(qkv.length), ty = gpu.tensor(B * T * C), tlse = gpu.tensor(B * H * T);
  gpu.write(tqkv, qkv);
  const plan = new Plan(gpu);
  attentionForward(plan, { y: ty, lse: tlse, qkv: tqkv, B, T, C, H, dropout: { key, site, rate } });
  key.setStep(step);
  plan.run();
  const y = await gpu.read(ty);
  let kept = 0, n = 0;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        for (let j = 0; j <= i; j++) {
          const k = y[(b * T + i) * C + h * hd + j] > 0;
          assert.equal(k, keeps(5, step, site, (b * H + h) * T + i, j, rate), `b${b} h${h} (${i}, ${j})`);
          kept += k ? 1 : 0;
          n++;
        }
      }
    }
  }
  assertBinomial("attention probabilities kept", kept, n, rate);
  for (const v of [tqkv, ty, tlse]) gpu.free(v);
  plan.destroy();
  key.destroy();
});
