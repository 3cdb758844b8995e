import { deepStrictEqual as assertEquals, throws } from "node:assert/strict";
import { Plan } from "../shaders/gpu.ts";
import { matmul } from "../shaders/matmul.ts";
import {
  fillTemplate,
  HALF_SUM_CHUNK,
  recordTiled,
  TILED_CANDIDATES,
  tiledFits,
  tiledMatmulSource,
  type TiledVariant,
} from "../shaders/matmul_tiled.ts";
import { matmulRef } from "./reference/matmul.ts";
import { assertClose, randn, testGpu } from "./util.ts";

/** Round up to a multiple of 4. */
const up4 = (n: number) => Math.ceil(n / 4) * 4;

/**
 * Shapes that are not multiples of any block (M, N and K remainders of every kind), and the four
 * transposes with bias and accumulation mixed in. Strides are wider than the rows and the offsets
 * non-zero, so every index term is exercised. Vector dimensions are multiples of 4: the tiled kernel's
 * precondition (matmul.ts gives it only the vec4 core).
 */
const SHAPES = [[70, 36, 44], [130, 132, 20], [5, 8, 12], [3, 200, 100]];
const VARIANTS: Array<TiledVariant & { tag: string }> = [
  { tag: "NN+bias", transA: false, transB: false, bias: true, accumulate: false },
  { tag: "NT+acc", transA: false, transB: true, bias: false, accumulate: true },
  { tag: "TN+acc", transA: true, transB: false, bias: false, accumulate: true },
  { tag: "TT+bias+acc", transA: true, transB: true, bias: true, accumulate: true },
];

Deno.test("every tiled matmul candidate matches the float64 reference at shapes that are not tile multiples", async () => {
  const gpu = await testGpu();
  const plan = new Plan(gpu);
  const pending = [];
  const candidates = TILED_CANDIDATES.filter((c) => tiledFits(c, gpu.limits));
  assertEquals(candidates.length, TILED_CANDIDATES.length, "every candidate fits WebGPU's default limits");
  // On wgpu's GL backend a pipeline with workgroup memory compiles in seconds to tens of seconds (Mesa's
  // GLSL compiler on naga's zero-initialisation of the tiles grows about quadratically with their size),
  // so there each candidate takes one of the four variants in turn; every pair runs on Vulkan.
  const gl = gpu.describe().backend === "gl";
  if (gl) console.log("  GL backend: each candidate checked on one variant (all pairs on Vulkan)");
  let seed = 1;
  for (const [M0, N0, K] of SHAPES) {
    for (const [vi, v] of VARIANTS.entries()) {
      const M = v.transA ? up4(M0) : M0, N = v.transB ? N0 : up4(N0);
      const [aRows, aCols] = v.transA ? [K, M] : [M, K];
      const [bRows, bCols] = v.transB ? [N, K] : [K, N];
      const lda = up4(aCols) + 4, ldb = up4(bCols) + 8, ldc = N + 3, aOff = 8, bOff = 4, cOff = 5;
      const a = randn(aOff + aRows * lda, seed++), b = randn(bOff + bRows * ldb, seed++);
      const out0 = randn(cOff + M * ldc, seed++), bias = randn(N + 2, seed++);
      const expected = matmulRef({
        out: out0,
        a,
        b,
        bias: v.bias ? bias.subarray(2) : undefined,
        M,
        N,
        K,
        transA: v.transA,
        transB: v.transB,
        lda,
        ldb,
        ldc,
        aOffset: aOff,
        bOffset: bOff,
        cOffset: cOff,
        accumulate: v.accumulate,
      });
      const ta = gpu.tensor(a.length), tb = gpu.tensor(b.length), tbias = gpu.tensor(bias.length);
      gpu.write(ta, a);
      gpu.write(tb, b);
      gpu.write(tbias, bias);
      for (const [ci, c] of candidates.entries()) {
        if (gl && ci % VARIANTS.length !== vi) continue;
        const tout = gpu.tensor(out0.length);
        gpu.write(tout, out0);
        const views = v.bias ? [tout, ta, tb, tbias] : [tout, ta, tb];
        const blk = { M, N, K, lda, ldb, ldc, aOff, bOff, cOff, dOff: 2 };
        recordTiled(plan, views, v, blk, c);
        pending.push({ name: `${v.tag} ${M}x${N}x${K} ${c.name}`, tout, expected, K, shape: `${v.tag}${M}` });
      }
    }
  }
  plan.run();
  const first = new Map<string, Float32Array>();
  for (const { name, tout, expected, K, shape } of pending) {
    const got = await gpu.read(tout);
    assertClose(name, got, expected, { rtol: 1e-4, atol: 1e-5 * Math.sqrt(K) });
    // Every candidate runs the same fma chain in increasing k: the tuner's choice never changes a bit.
    const ref = first.get(shape + expected.length);
    if (ref) assertEquals(got, ref, `${name} differs bitwise from the first candidate`);
    else first.set(shape + expected.length, got);
    gpu.free(tout);
  }
});

Deno.test("the tiled template filler rejects missing or unused placeholders and inconsistent candidates", () => {
  throws(() => fillTemplate("a {{X}} b", {}), /no value for placeholder \{\{X\}\}/);
  throws(() => fillTemplate("a {{X}} b", { X: 1, Y: 2 }), /values for no placeholder: Y/);
  assertEquals(fillTemplate("{{X}}+{{X}}", { X: 3 }), "3+3");
  const v = { transA: false, transB: false, bias: false, accumulate: false };
  const base = TILED_CANDIDATES[0];
  throws(
    () => tiledMatmulSource(v, { ...base, name: "odd", TM: 6 }),
    /odd: register tile TM, TN must be multiples of 4/,
  );
  throws(
    () => tiledMatmulSource(v, { ...base, name: "split", BM: 32, BK: 4, TM: 4, TN: 4, BN: 128 }),
    /split: b tile of 128 load units does not split over 256 threads/,
  );
  // f16 arithmetic: only on f16 operands, and its chunks of k must end at K-tile ends.
  throws(() => tiledMatmulSource({ ...v, halfSums: true }, base), /halfSums needs half/);
  throws(
    () => tiledMatmulSource({ ...v, half: true, halfSums: true }, { ...base, name: "k24", BK: 24 }),
    new RegExp(`k24: BK=24 must divide the f16 sum chunk of ${HALF_SUM_CHUNK} k`),
  );
});

Deno.test("recordTiled rejects operands that break the vec4 preconditions, matmul halfSums without half", async () => {
  const gpu = await testGpu();
  const plan = new Plan(gpu);
  const t = gpu.tensor(4096);
  const v = { transA: false, transB: false, bias: false, accumulate: false };
  const blk = { M: 8, N: 8, K: 8, lda: 8, ldb: 8, ldc: 8, aOff: 0, bOff: 0, cOff: 0, dOff: 0 };
  throws(() => recordTiled(plan, [t, t, t], v, { ...blk, lda: 9 }, TILED_CANDIDATES[0]), /lda=9/);
  throws(() => recordTiled(plan, [t, t, t], v, { ...blk, N: 6 }, TILED_CANDIDATES[0]), /N=6/);
  throws(() => recordTiled(plan, [t, t, t], v, { ...blk, K: 6 }, TILED_CANDIDATES[0]), /K=6/);
  throws(() => matmul(plan, { out: t, a: t, b: t, M: 8, N: 8, K: 8, halfSums: true }), /halfSums needs half/);
});
