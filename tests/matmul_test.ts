import { deepStrictEqual as assertEquals, throws } from "node:assert/strict";
import { type Gpu, Plan } from "../shaders/gpu.ts";
import { biasBackward, matmul, type MatmulArgs } from "../shaders/matmul.ts";
import { biasBackwardRef, matmulRef } from "./reference/matmul.ts";
import { assertClose, randn, testGpu } from "./util.ts";

/** A matmul case: shapes and options plus the stored lengths of each buffer. */
interface Case extends Omit<MatmulArgs, "out" | "a" | "b" | "bias"> {
  name: string;
  aLen: number;
  bLen: number;
  outLen: number;
  bias?: boolean;
}

/** Dense lengths for a plain case (no strides or offsets). */
function dense(name: string, M: number, N: number, K: number, opts: Partial<Case> = {}): Case {
  return { name, M, N, K, aLen: M * K, bLen: K * N, outLen: M * N, ...opts };
}

/** Run every case in one plan on `gpu` and compare the whole out buffer (untouched parts included). */
async function runCases(gpu: Gpu, cases: Case[]): Promise<void> {
  const plan = new Plan(gpu);
  const pending = cases.map((c, i) => {
    const seed = 100 * (i + 1);
    const a = randn(c.aLen, seed), b = randn(c.bLen, seed + 1), out0 = randn(c.outLen, seed + 2);
    const bias = c.bias ? randn(c.N, seed + 3) : undefined;
    const [ta, tb, tout] = [c.aLen, c.bLen, c.outLen].map((n) => gpu.tensor(n));
    gpu.write(ta, a);
    gpu.write(tb, b);
    gpu.write(tout, out0);
    let tbias;
    if (bias) {
      tbias = gpu.tensor(c.N);
      gpu.write(tbias, bias);
    }
    matmul(plan, { ...c, out: tout, a: ta, b: tb, bias: tbias });
    return { c, tout, expected: matmulRef({ ...c, out: out0, a, b, bias }) };
  });
  plan.run();
  for (const { c, tout, expected } of pending) {
    // f32 rounding of a K-term sum grows about like sqrt(K) times the size of its terms.
    assertClose(c.name, await gpu.read(tout), expected, {
      rtol: 1e-4,
      atol: 1e-5 * Math.sqrt(Math.max(1, c.K)),
    });
  }
}

Deno.test("matmul variants match the float64 reference at sizes that are not tile multiples", async () => {
  const gpu = await testGpu();
  const cases: Case[] = [];
  for (
    const [M, N, K] of [[37, 53, 29], [1, 53, 29], [37, 53, 1], [1, 1, 1], [130, 70, 200], [19, 530, 41]]
  ) {
    const s = `${M}x${N}x${K}`;
    cases.push(
      dense(`NN ${s}`, M, N, K),
      dense(`NN+bias ${s}`, M, N, K, { bias: true }),
      dense(`NT ${s}`, M, N, K, { transB: true }),
      dense(`NT+bias+acc ${s}`, M, N, K, { transB: true, bias: true, accumulate: true }),
      dense(`TN+acc ${s}`, M, N, K, { transA: true, accumulate: true }),
      dense(`TN ${s}`, M, N, K, { transA: true }),
      dense(`TT+bias ${s}`, M, N, K, { transA: true, transB: true, bias: true }),
      dense(`NN+acc ${s}`, M, N, K, { accumulate: true }),
    );
  }
  await runCases(gpu, cases);
});

Deno.test("matmul serves the chunked tied LM head (strides and offsets)", async () => {
  const gpu = await testGpu();
  // logits [R, V] with a wte chunk of rows v0..v1; lnf rows r0..r0+R of a [rows, C] buffer.
  const V = 61, C = 29, R = 37, rows = 45, r0 = 6, v0 = 17, v1 = 50, Vc = v1 - v0;
  await runCases(gpu, [
    // logits[:, v0:v1] = lnf[r0:r0+R] · wteChunk^T
    {
      name: "head logits",
      M: R,
      N: Vc,
      K: C,
      transB: true,
      aOffset: r0 * C,
      ldc: V,
      cOffset: v0,
      aLen: rows * C,
      bLen: Vc * C,
      outLen: R * V,
    },
    // dlnf[r0:r0+R] += dlogits[:, v0:v1] · wteChunk
    {
      name: "head dx",
      M: R,
      N: C,
      K: Vc,
      lda: V,
      aOffset: v0,
      cOffset: r0 * C,
      accumulate: true,
      aLen: R * V,
      bLen: Vc * C,
      outLen: rows * C,
    },
    // dwteChunk += dlogits[:, v0:v1]^T · lnf[r0:r0+R]
    {
      name: "head dwte",
      M: Vc,
      N: C,
      K: R,
      transA: true,
      lda: V,
      aOffset: v0,
      bOffset: r0 * C,
      accumulate: true,
      aLen: R * V,
      bLen: rows * C,
      outLen: Vc * C,
    },
    // Every stride wider than its rows at once, with a bias, on a bigger block.
    {
      name: "strided all",
      M: 70,
      N: 66,
      K: 75,
      lda: 81,
      ldb: 70,
      ldc: 69,
      aOffset: 3,
      bOffset: 5,
      cOffset: 7,
      bias: true,
      aLen: 3 + 70 * 81,
      bLen: 5 + 75 * 70,
      outLen: 7 + 70 * 69,
    },
  ]);
});

/** Round up to a multiple of 4. */
const up4 = (n: number) => Math.ceil(n / 4) * 4;

/**
 * A case whose A and B strides and offsets are multiples of 4, so the vec4 kernel takes the core and the
 * scalar kernel the K, M or N remainders; out has a wider stride and an offset, so the edges must land
 * exactly.
 */
function aligned(name: string, M: number, N: number, K: number, opts: Partial<Case> = {}): Case {
  const tA = opts.transA ?? false, tB = opts.transB ?? false;
  const [aRows, aCols] = tA ? [K, M] : [M, K];
  const [bRows, bCols] = tB ? [N, K] : [K, N];
  const lda = up4(aCols) + 4, ldb = up4(bCols), ldc = N + 3;
  return {
    name,
    M,
    N,
    K,
    lda,
    ldb,
    ldc,
    aOffset: 8,
    bOffset: 4,
    cOffset: 5,
    aLen: 8 + aRows * lda,
    bLen: 4 + bRows * ldb,
    outLen: 5 + M * ldc,
    ...opts,
  };
}

for (const tiles of ["cpu", "gpu"] as const) {
  Deno.test(`matmul: vec4 core (${tiles} tiles) plus scalar K, M and N edges match the float64 reference`, async () => {
    const gpu = await testGpu();
    const cases: Case[] = [];
    // Tile-layout blocks (M > 16) and wide-layout ones (M <= 16); exact multiples and every remainder.
    for (
      const [M, N, K] of [
        [37, 53, 29],
        [64, 128, 64],
        [130, 262, 71],
        [260, 140, 20],
        [5, 70, 42],
        [16, 300, 13],
        [4, 4, 4],
        [
          1,
          40,
          8,
        ],
        [3, 9, 6],
      ]
    ) {
      const s = `${M}x${N}x${K}`;
      // out's stride and offset multiples of 4 too: the core stores whole vectors where N allows.
      const ldc = up4(N) + 4, out4 = { ldc, cOffset: 8, outLen: 8 + M * ldc };
      cases.push(
        aligned(`v4 NN+bias out4 ${s}`, M, N, K, { bias: true, ...out4 }),
        aligned(`v4 NT+acc out4 ${s}`, M, N, K, { transB: true, accumulate: true, ...out4 }),
        aligned(`v4 TN+bias+acc out4 ${s}`, M, N, K, { transA: true, bias: true, accumulate: true, ...out4 }),
        aligned(`v4 NN ${s}`, M, N, K),
        aligned(`v4 NN+bias+acc ${s}`, M, N, K, { bias: true, accumulate: true }),
        aligned(`v4 NT+bias ${s}`, M, N, K, { transB: true, bias: true }),
        aligned(`v4 TN+acc ${s}`, M, N, K, { transA: true, accumulate: true }),
        aligned(`v4 TT+bias ${s}`, M, N, K, { transA: true, transB: true, bias: true }),
      );
    }
    await runCases(gpu, cases.map((c) => ({ ...c, name: `${c.name} ${tiles}`, tiles })));
  });
}

Deno.test("matmul takes the vec4 kernel for GPT-2 shapes and the scalar one for odd strides", async () => {
  const gpu = await testGpu();
  const labels = (args: Omit<MatmulArgs, "out" | "a" | "b">) => {
    const plan = new Plan(gpu);
    const t = (n: number) => gpu.tensor(n);
    matmul(plan, { ...args, out: t(1 << 16), a: t(1 << 16), b: t(1 << 16) });
    return plan.dispatches.map((d) => d.label);
  };
  // The vector core: the register-tiled vec4 kernel in the CPU family, the workgroup-memory one on GPUs.
  const core = gpu.kernels === "cpu" ? "v4" : "tiled";
  // x [128, 64] · W [64, 192] (qkv), dx = dy · W^T, dW = x^T · dy: all vec4, one launch each.
  assertEquals(labels({ M: 128, N: 192, K: 64 }), [`matmul_NN_${core}`]);
  assertEquals(labels({ M: 128, N: 64, K: 192, transB: true }), [`matmul_NT_${core}`]);
  assertEquals(labels({ M: 64, N: 192, K: 128, transA: true }), [`matmul_TN_${core}`]);
  // K = 63: a vec4 core over 60, then the scalar K remainder.
  assertEquals(labels({ M: 128, N: 64, K: 63, lda: 64 }), [`matmul_NN_${core}`, "matmul_NN"]);
  // An odd row stride: scalar only.
  assertEquals(labels({ M: 8, N: 8, K: 8, lda: 9 }), ["matmul_NN"]);
});

Deno.test("matmul splits its workgroups over y when they exceed the per-dimension limit", async () => {
  // Lower the recorded limit to 5 for this test, so every case below (more than 5 workgroup tiles, some of
  // them several tiles wide) needs a second grid dimension. (A second device would hang Deno's WebGPU.)
  const gpu = await testGpu();
  const limits = gpu.limits as { maxComputeWorkgroupsPerDimension: number };
  const saved = limits.maxComputeWorkgroupsPerDimension;
  limits.maxComputeWorkgroupsPerDimension = 5;
  try {
    await runCases(gpu, [
      dense("NN+bias 300x130x9 split", 300, 130, 9, { bias: true }),
      dense("TN 77x70x3 split", 77, 70, 3, { transA: true }),
      dense("NT+acc 21x600x5 split", 21, 600, 5, { transB: true, accumulate: true }),
      aligned("v4 NN 300x260x12 split", 300, 260, 12, { bias: true }),
      aligned("v4 NT+acc 8x2100x12 split", 8, 2100, 12, { transB: true, accumulate: true }),
    ]);
  } finally {
    limits.maxComputeWorkgroupsPerDimension = saved;
  }
});

Deno.test("matmul splits K past llvmpipe's loop budget into accumulating launches", async () => {
  // K = 70001 would run one scalar loop of 70001 iterations, past the 65535 llvmpipe allows a thread
  // (it stops the loop and keeps going with a partial sum); the chunks keep each launch under it.
  const gpu = await testGpu();
  await runCases(gpu, [
    dense("NT+bias 2x3x70001", 2, 3, 70001, { transB: true, bias: true }),
    dense("TN+acc 5x4x70001", 5, 4, 70001, { transA: true, accumulate: true }),
  ]);
});

Deno.test("matmul rejects views too small for their shape and strides", async () => {
  const gpu = await testGpu();
  const plan = new Plan(gpu);
  const [a, b, out] = [4 * 5, 5 * 6, 4 * 6].map((n) => gpu.tensor(n));
  throws(() => matmul(plan, { out, a, b, M: 4, N: 6, K: 5, aOffset: 1 }), /A needs 21 elements/);
  throws(() => matmul(plan, { out, a, b, M: 4, N: 6, K: 5, ldc: 7 }), /out needs 27 elements/);
  throws(() => matmul(plan, { out, a, b, M: 4, N: 6, K: 5, lda: 4 }), /row strides/);
});

Deno.test("biasBackward matches the float64 reference", async () => {
  const gpu = await testGpu();
  const cases = [
    { M: 37, N: 53, ld: 53, offset: 0 },
    { M: 1, N: 1, ld: 1, offset: 0 },
    { M: 130, N: 70, ld: 75, offset: 9 },
    { M: 3, N: 200, ld: 200, offset: 0 },
  ];
  const plan = new Plan(gpu);
  const pending = cases.map(({ M, N, ld, offset }, i) => {
    const dout = randn(offset + M * ld, 7 + i), dbias0 = randn(N, 17 + i);
    const [tdout, tdbias] = [dout.length, N].map((n) => gpu.tensor(n));
    gpu.write(tdout, dout);
    gpu.write(tdbias, dbias0);
    biasBackward(plan, { dbias: tdbias, dout: tdout, M, N, ld, offset });
    return {
      name: `biasBackward ${M}x${N} ld=${ld} off=${offset}`,
      tdbias,
      expected: biasBackwardRef(dbias0, dout, M, N, ld, offset),
      M,
    };
  });
  plan.run();
  for (const { name, tdbias, expected, M } of pending) {
    assertClose(name, await gpu.read(tdbias), expected, { rtol: 1e-4, atol: 1e-5 * Math.sqrt(M) });
  }
});
