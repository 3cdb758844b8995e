/**
 * The f16 kernels against float64: the cast (bits as round-to-nearest-even gives them, overflow to inf,
 * NaN kept), the f16-operand matmul (every variant, shapes that are not tile multiples, strides and
 * offsets in halves), the tiled matmul's f16 arithmetic (`halfSums`: its error bound, its bits against a
 * model, its overflow to inf) and the loss-scale multiply. The f16 ones need `shader-f16` (lavapipe, GPUs) and are
 * skipped with a note where the adapter lacks it (llvmpipe on GL).
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { Plan } from "../shaders/gpu.ts";
import { castToHalf, halfWords, scaleBy } from "../shaders/f16.ts";
import { linearBackward, linearForward, matmul } from "../shaders/matmul.ts";
import { HALF_SUM_CHUNK, TILED_CANDIDATES, tiledFits } from "../shaders/matmul_tiled.ts";
import { geluForward } from "../shaders/gelu.ts";
import { layernormForward } from "../shaders/layernorm.ts";
import { matmulRef } from "./reference/matmul.ts";
import { assertClose, randn, testGpu } from "./util.ts";
import { packHalves } from "./reference/f16.ts";

const gpu = await testGpu();
const ignore = !gpu.shaderF16;
// lavapipe compiles a pipeline on its first dispatch, 1-3 s for each tiled f16 one without Mesa's shader
// cache: there the candidate-by-variant tests take fewer pairs.
const cpuAdapter = /lavapipe|llvmpipe|swiftshader/i.test(gpu.adapterName);
if (ignore) console.log(`f16 kernel tests skipped: adapter ${gpu.adapterName} has no shader-f16`);

Deno.test({
  name: "castToHalf gives the round-to-nearest-even f16 bits, +-inf past 65504, NaN kept",
  ignore,
  fn: async () => {
    const specials = [0, -0, 1, -1, 65504, -65504, 65519, 65520, -65520, 1e6, -1e9, Infinity, -Infinity, NaN];
    const smallest = [6.103515625e-5, 1e-3, 3.14159, 2049, 2051, 0.1];
    for (const n of [1, 7, 14, 1001, 1024]) {
      const base = randn(n, n, 8);
      base.set([...specials, ...smallest].slice(0, n));
      const inp = gpu.tensor(n), out = gpu.tensor(halfWords(n));
      gpu.write(inp, base);
      const plan = new Plan(gpu);
      castToHalf(plan, { out, inp, n });
      plan.run();
      const got = new Uint16Array((await gpu.readU32(out)).buffer);
      const want = new Uint16Array(packHalves(base).buffer);
      // NaN: any quiet NaN pattern of the right sign is fine; compare classes there, bits elsewhere.
      const isNan = (b: number) => (b & 0x7c00) === 0x7c00 && (b & 0x3ff) !== 0;
      for (let i = 0; i < want.length; i++) {
        if (i < n && Number.isNaN(base[i])) {
          if (!isNan(got[i])) throw new Error(`n=${n}: NaN at ${i} cast to bits ${got[i].toString(16)}`);
        } else if (got[i] !== want[i]) {
          throw new Error(
            `n=${n}: element ${i} (${base[i]}) cast to 0x${got[i].toString(16)}, expected 0x${
              want[i].toString(16)
            } (${i >= n ? "padding must be zero" : "round to nearest even"})`,
          );
        }
      }
      console.log(`  cast n=${n}: ${n} halves bit-exact, padding zero`);
      gpu.free(inp);
      gpu.free(out);
    }
  },
});

/** A matmul case; lengths count halves for A and B. */
interface Case {
  name: string;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  bias?: boolean;
  accumulate?: boolean;
  lda?: number;
  ldb?: number;
  ldc?: number;
  aOffset?: number;
  bOffset?: number;
  cOffset?: number;
  tiles?: "cpu" | "gpu";
  aLen: number;
  bLen: number;
  outLen: number;
}

const dense = (name: string, M: number, N: number, K: number, o: Partial<Case> = {}): Case => ({
  name,
  M,
  N,
  K,
  aLen: M * K,
  bLen: K * N,
  outLen: M * N,
  ...o,
});

Deno.test({
  name: "f16-operand matmul matches float64 at stated f16 tolerances, shapes not tile multiples",
  ignore,
  fn: async () => {
    const cases: Case[] = [];
    for (
      const [M, N, K] of [[37, 53, 29], [1, 53, 29], [37, 53, 1], [130, 70, 200], [19, 530, 41], [8, 12, 16]]
    ) {
      const s = `${M}x${N}x${K}`;
      cases.push(
        dense(`NN ${s}`, M, N, K),
        dense(`NN+bias ${s}`, M, N, K, { bias: true }),
        dense(`NT+bias+acc ${s}`, M, N, K, { transB: true, bias: true, accumulate: true }),
        dense(`TN+acc ${s}`, M, N, K, { transA: true, accumulate: true }),
        dense(`TT+bias ${s}`, M, N, K, { transA: true, transB: true, bias: true }),
      );
    }
    // The GPU register tiles on every adapter too (the default follows the adapter).
    for (const c of cases.filter((c) => c.name.endsWith(" 37x53x29") || c.name.endsWith(" 130x70x200"))) {
      cases.push({ ...c, name: `${c.name} gpu-tiles`, tiles: "gpu" });
    }
    // The LM head's strided chunk (offsets and strides in halves, some not multiples of 4).
    cases.push({
      name: "head dx strided",
      M: 37,
      N: 28,
      K: 33,
      lda: 64,
      aOffset: 16,
      cOffset: 6 * 28,
      accumulate: true,
      aLen: 37 * 64,
      bLen: 33 * 28,
      outLen: 45 * 28,
    }, {
      name: "strided odd",
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
    });
    const plan = new Plan(gpu);
    const pending = cases.map((c, i) => {
      const seed = 300 + 10 * i;
      const a = randn(c.aLen, seed), b = randn(c.bLen, seed + 1), out0 = randn(c.outLen, seed + 2);
      const bias = c.bias ? randn(c.N, seed + 3) : undefined;
      const ta = gpu.tensor(halfWords(c.aLen)),
        tb = gpu.tensor(halfWords(c.bLen)),
        tout = gpu.tensor(c.outLen);
      gpu.write(ta, packHalves(a));
      gpu.write(tb, packHalves(b));
      gpu.write(tout, out0);
      const tbias = bias ? gpu.tensor(c.N) : undefined;
      if (tbias) gpu.write(tbias, bias!);
      matmul(plan, { ...c, out: tout, a: ta, b: tb, bias: tbias, half: true });
      const ref = { ...c, out: out0, bias };
      return {
        c,
        tout,
        // Products of two halves are exact in f32, so against the rounded operands only the f32 sum rounds.
        rounded: matmulRef({ ...ref, a: Float16Array.from(a), b: Float16Array.from(b) }),
        exact: matmulRef({ ...ref, a, b }),
      };
    });
    plan.run();
    for (const { c, tout, rounded, exact } of pending) {
      const got = await gpu.read(tout);
      const sqrtK = Math.sqrt(Math.max(1, c.K));
      assertClose(`${c.name} (f16 operands)`, got, rounded, { rtol: 1e-4, atol: 1e-5 * sqrtK });
      // The f16 tolerance against the f32 operands: each operand rounds by at most 2^-11 relative, so a
      // K-term sum of unit-variance products errs by about 2^-10 * sqrt(K); 4x that bound is stated.
      assertClose(`${c.name} (vs f32 operands)`, got, exact, { rtol: 4e-3, atol: 4e-3 * sqrtK });
    }
  },
});

/** One product as the tiled candidates test runs it: the case, its operands (f32, before rounding) and out. */
interface TiledRun {
  c: Case;
  a: Float32Array;
  b: Float32Array;
  out0: Float32Array;
  bias?: Float32Array;
  tag: string;
}

/**
 * Run every candidate's f16 variant (`halfSums`: its f16-arithmetic form) on each transpose, with bias or
 * accumulation, at `shapes`; `check` judges the first candidate's output, and every other candidate's must
 * equal it bit for bit. `rotate`: the first candidate runs every variant and each other one variant in
 * turn.
 */
async function everyTiledCandidate(
  halfSums: boolean,
  shapes: number[][],
  check: (run: TiledRun, got: Float32Array) => void,
  rotate = false,
): Promise<void> {
  const fitting = TILED_CANDIDATES.filter((c) => tiledFits(c, gpu.limits));
  const variants = [
    { transA: false, transB: false, bias: true },
    { transA: false, transB: true, accumulate: true },
    { transA: true, transB: false, accumulate: true },
    { transA: true, transB: true, bias: true },
  ];
  const kind = halfSums ? "f16acc" : "f16";
  for (const [M, N, K] of shapes) {
    for (const [vi, v] of variants.entries()) {
      const candidates = fitting.filter((_, ci) => !rotate || ci === 0 || (ci - 1) % variants.length === vi);
      const c: Case = { name: "", M, N, K, ...v, aLen: M * K, bLen: K * N, outLen: M * N };
      const seed = M + N + K + (v.transA ? 1 : 0) + (v.transB ? 2 : 0);
      const a = randn(c.aLen, seed), b = randn(c.bLen, seed + 1), out0 = randn(c.outLen, seed + 2);
      const bias = v.bias ? randn(N, seed + 3) : undefined;
      const ta = gpu.tensor(halfWords(c.aLen)), tb = gpu.tensor(halfWords(c.bLen));
      gpu.write(ta, packHalves(a));
      gpu.write(tb, packHalves(b));
      const tbias = bias ? gpu.tensor(N) : undefined;
      if (tbias) gpu.write(tbias, bias!);
      const plan = new Plan(gpu);
      const outs = candidates.map((cand) => {
        const tout = gpu.tensor(c.outLen);
        gpu.write(tout, out0);
        matmul(plan, {
          ...c,
          out: tout,
          a: ta,
          b: tb,
          bias: tbias,
          half: true,
          halfSums,
          tiles: "gpu",
          candidate: cand.name,
        });
        return tout;
      });
      const tiled = plan.dispatches.filter((d) => d.label?.endsWith(`_tiled_${kind}`)).length;
      assertEquals(tiled, candidates.length, `one ${kind} tiled launch per candidate`);
      plan.run();
      const first = await gpu.read(outs[0]);
      const tag = `${kind} ${v.transA ? "T" : "N"}${v.transB ? "T" : "N"} ${M}x${N}x${K}`;
      check({ c, a, b, out0, bias, tag: `${candidates[0].name} ${tag}` }, first);
      for (const [i, t] of outs.entries()) {
        const got = await gpu.read(t);
        if (!got.every((x, j) => Object.is(x, first[j]))) {
          throw new Error(`tiled ${tag}: ${candidates[i].name} differs from ${candidates[0].name}`);
        }
        gpu.free(t);
      }
      plan.destroy();
      for (const t of [ta, tb, tbias]) if (t) gpu.free(t);
    }
  }
  console.log(
    `  ${fitting.length} candidates${rotate ? " (rotated)" : ""} x 4 variants x ${shapes.length} shapes: ` +
      "equal bit for bit",
  );
}

Deno.test({
  name: "every tiled candidate's f16 variant matches float64 and the other candidates bit for bit",
  ignore,
  // Not block multiples (K not a multiple of the K tiles either); row strides multiples of 4.
  fn: () =>
    everyTiledCandidate(false, [[68, 132, 44], [200, 36, 132]], ({ c, a, b, out0, bias, tag }, got) => {
      const want = matmulRef({ ...c, out: out0, a: Float16Array.from(a), b: Float16Array.from(b), bias });
      assertClose(`tiled ${tag}`, got, want, { rtol: 1e-4, atol: 1e-5 * Math.sqrt(c.K) });
    }),
});

/** f16's and f32's unit roundoffs; gamma(n, u) bounds the relative error of a chain of n roundings. */
const U16 = 2 ** -11, U32 = 2 ** -24;
const gamma = (n: number, u: number) => (n * u) / (1 - n * u);

/**
 * The halfSums variant's error bound for every element of `run`'s out (matmul_tiled.ts's module doc):
 * against the exact sum over the f16 operands, (gamma(KC, u16) + gamma(ceil(K/KC), u32) (1 + gamma(KC,
 * u16))) times sum_k |a_k b_k|, plus 2^-25 per f16 rounding for underflow (2K of them where fma is an f16
 * multiply and an f16 add), plus the f32 store's two roundings of out0 + (s + bias).
 */
function halfSumsBound({ c, a, b, out0, bias }: TiledRun): Float64Array {
  const abs = (x: ArrayLike<number>) => Float64Array.from(Float16Array.from(x), Math.abs);
  const zeros = new Float64Array(out0.length);
  const mag = matmulRef({ ...c, out: zeros, a: abs(a), b: abs(b), bias: undefined, accumulate: false });
  const g16 = gamma(HALF_SUM_CHUNK, U16);
  const rel = g16 + gamma(Math.ceil(c.K / HALF_SUM_CHUNK), U32) * (1 + g16);
  return mag.map((s, i) => {
    const rest = (c.accumulate ? Math.abs(out0[i]) : 0) + (bias ? Math.abs(bias[i % c.N]) : 0);
    return rel * s + c.K * 2 ** -24 + 2 * U32 * (rest + s * (1 + rel));
  });
}

/** Throw unless every |got - want| is within `bound`; returns the largest ratio of error to bound. */
function assertWithin(
  name: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  bound: ArrayLike<number>,
) {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= bound[i])) {
      throw new Error(
        `${name}: element ${i} is ${got[i]}, float64 ${want[i]}, error ${err} > bound ${bound[i]}`,
      );
    }
    worst = Math.max(worst, err / bound[i]);
  }
  return worst;
}

Deno.test({
  name:
    "every tiled candidate's f16-arithmetic variant (halfSums) is within its error bound and equal bit for bit",
  ignore,
  fn: async () => {
    let worst = 0;
    // K = 44 and 132 end in a partial chunk of 32; K = 100 also pads differently with BK 8 (104) and 16 (112).
    await everyTiledCandidate(true, [[68, 132, 44], [200, 36, 132], [36, 68, 100]], (run, got) => {
      const { c, a, b, out0, bias } = run;
      const want = matmulRef({ ...c, out: out0, a: Float16Array.from(a), b: Float16Array.from(b), bias });
      worst = Math.max(worst, assertWithin(`tiled ${run.tag}`, got, want, halfSumsBound(run)));
    }, cpuAdapter);
    console.log(`  largest error / bound: ${worst.toFixed(3)}`);
  },
});

/**
 * Float64 model of the halfSums kernel on dense row-major operands (no bias, out overwritten): each chunk of
 * HALF_SUM_CHUNK k summed in f16 in increasing k, by fused multiply-adds (one rounding each) or by an f16
 * multiply and an f16 add (`fused` false: what lavapipe compiles WGSL's f16 fma to), the chunks' partials
 * summed in f32.
 */
function halfSumsModel(a: Float16Array, b: Float16Array, M: number, N: number, K: number, fused: boolean) {
  const r16 = Math.f16round;
  const out = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k0 = 0; k0 < K; k0 += HALF_SUM_CHUNK) {
        let h = 0;
        for (let k = k0; k < Math.min(K, k0 + HALF_SUM_CHUNK); k++) {
          const p = a[m * K + k] * b[k * N + n]; // exact: 22 significant bits at most
          h = r16((fused ? p : r16(p)) + h);
        }
        s = Math.fround(s + h);
      }
      out[m * N + n] = s;
    }
  }
  return out;
}

/** x = a b on f16 operands in the GPU family, with f32 sums and with halfSums (one plan), read back. */
async function bothSums(a: Float32Array, b: Float32Array, M: number, N: number, K: number) {
  const ta = gpu.tensor(halfWords(M * K)), tb = gpu.tensor(halfWords(K * N));
  gpu.write(ta, packHalves(a));
  gpu.write(tb, packHalves(b));
  const plan = new Plan(gpu);
  const outs = [false, true].map((halfSums) => {
    const out = gpu.tensor(M * N);
    matmul(plan, { out, a: ta, b: tb, M, N, K, half: true, halfSums, tiles: "gpu" });
    return out;
  });
  plan.run();
  const sums = [await gpu.read(outs[0]), await gpu.read(outs[1])];
  plan.destroy();
  for (const t of [ta, tb, ...outs]) gpu.free(t);
  return sums;
}

Deno.test({
  name: "halfSums errs more than f32 sums, is f16 sums over chunks of 32 k bit for bit, within its bound",
  ignore,
  fn: async () => {
    const M = 70, N = 68, K = 1000;
    const a = randn(M * K, 41), b = randn(K * N, 42);
    const a16 = Float16Array.from(a), b16 = Float16Array.from(b);
    const [sums32, sums16] = await bothSums(a, b, M, N, K);
    const zeros = new Float32Array(M * N);
    const want = matmulRef({ out: zeros, a: a16, b: b16, M, N, K });
    const rms = (x: ArrayLike<number>) =>
      Math.sqrt(Array.from(x, (v, i) => (v - want[i]) ** 2).reduce((p, q) => p + q) / x.length);
    const scale = rms(zeros);
    const [e32, e16] = [rms(sums32) / scale, rms(sums16) / scale];
    console.log(
      `  rms error / rms value: f32 sums ${e32.toExponential(2)}, f16 sums ${e16.toExponential(2)}`,
    );
    // f32 sums err by about 2^-24 sqrt(K/6) (6e-7 here), f16 chunks by about 2^-11 sqrt(32/6) (1e-3).
    if (!(e16 > 100 * e32 && e16 > 2 ** -13 && e16 < 2 ** -8)) {
      throw new Error(`halfSums error ${e16} is not f16's (f32 sums: ${e32})`);
    }
    const run = { c: dense("", M, N, K), a, b, out0: zeros, tag: "" };
    const worst = assertWithin("halfSums 70x68x1000", sums16, want, halfSumsBound(run));
    console.log(`  largest error / bound ${worst.toFixed(3)}`);
    const equal = [true, false].map((fused) => {
      const model = halfSumsModel(a16, b16, M, N, K, fused);
      return sums16.filter((v, i) => v === model[i]).length;
    });
    console.log(
      `  equal to the model, fused fma: ${equal[0]}, f16 multiply then add: ${equal[1]} of ${M * N}`,
    );
    // lavapipe matches the unfused model in every element. A GPU compiler may also evaluate an f16 fma in
    // f32 and round once more (rarely a different bit, which then propagates), so there a majority: a
    // different chunk length matches in under 0.3% (models with chunks of 16 or 64 k, measured once).
    const need = cpuAdapter ? M * N : M * N / 2;
    if (Math.max(...equal) < need) {
      throw new Error(
        `halfSums matches neither model of its f16 chunked sums in ${need} of ${M * N} elements`,
      );
    }
  },
});

Deno.test({
  name:
    "halfSums: a chunk's f16 partial past 65504 gives inf (cancelling products do not), f32 sums stay finite",
  ignore,
  fn: async () => {
    const M = 32, N = 32, K = 64;
    const a = randn(M * K, 51, 0.5), b = randn(K * N, 52, 0.5);
    // Row 0 all 200, row 1 all -200, row 2 alternating; column 0 of B all 200: products of +-40000 (exact in
    // f16). Two of them overflow an f16 partial; alternating ones cancel before they can.
    for (let k = 0; k < K; k++) {
      [a[k], a[K + k], a[2 * K + k]] = [200, -200, k % 2 ? -200 : 200];
      b[k * N] = 200;
    }
    const [sums32, sums16] = await bothSums(a, b, M, N, K);
    assertEquals([sums16[0], sums16[N], sums16[2 * N]], [Infinity, -Infinity, 0]);
    assertEquals([sums32[0], sums32[N], sums32[2 * N]], [40000 * K, -40000 * K, 0]);
    // Everywhere else finite and within the bound: the overflow stays in the outputs whose chunks overflowed.
    const zeros = new Float32Array(M * N);
    const want = matmulRef({ out: zeros, a: Float16Array.from(a), b: Float16Array.from(b), M, N, K });
    const bound = halfSumsBound({ c: dense("", M, N, K), a, b, out0: zeros, tag: "" });
    const rest = (x: ArrayLike<number>) => Array.from(x).filter((_, i) => i % N !== 0 || i >= 3 * N);
    assertWithin("halfSums outside the overflowing outputs", rest(sums16), rest(want), rest(bound));
  },
});

Deno.test({
  name:
    "linear layers' halfSums: y and dx in f16 arithmetic within the bound (GPU family), dW and db f32 sums' bits",
  ignore,
  fn: async () => {
    const rows = 40, inC = 64, outC = 96;
    const x = randn(rows * inC, 61),
      W = randn(inC * outC, 62, 0.2),
      b = randn(outC, 63),
      dy = randn(rows * outC, 64);
    const f32 = (v: Float32Array) => {
      const t = gpu.tensor(v.length);
      gpu.write(t, v);
      return t;
    };
    const [tx, tW, tb, tdy] = [x, W, b, dy].map(f32);
    const W16 = gpu.tensor(halfWords(inC * outC));
    gpu.write(W16, packHalves(W));
    const plan = new Plan(gpu);
    const runs = [false, true].map((halfSums) => {
      const o = {
        y: gpu.tensor(rows * outC),
        dx: gpu.tensor(rows * inC),
        dW: gpu.tensor(inC * outC),
        db: gpu.tensor(outC),
      };
      const half = { W16, x16: gpu.tensor(halfWords(rows * inC)), halfSums };
      linearForward(plan, { y: o.y, x: tx, W: tW, b: tb, rows, inC, outC, half });
      const dy16 = gpu.tensor(halfWords(rows * outC));
      linearBackward(plan, { ...o, dy: tdy, x: tx, W: tW, rows, inC, outC, half: { ...half, dy16 } });
      return o;
    });
    plan.run();
    const [f32Sums, f16Sums] = await Promise.all(runs.map(async (o) => ({
      y: await gpu.read(o.y),
      dx: await gpu.read(o.dx),
      dW: await gpu.read(o.dW),
      db: await gpu.read(o.db),
    })));
    assertEquals(f16Sums.dW, f32Sums.dW, "dW keeps f32 sums");
    assertEquals(f16Sums.db, f32Sums.db);
    const zeros = (n: number) => new Float32Array(n);
    const yCase = dense("", rows, outC, inC, { bias: true });
    const dxCase = dense("", rows, inC, outC, { transB: true });
    for (
      const [name, got, other, run] of [
        ["y", f16Sums.y, f32Sums.y, { c: yCase, a: x, b: W, out0: zeros(rows * outC), bias: b, tag: "" }],
        ["dx", f16Sums.dx, f32Sums.dx, { c: dxCase, a: dy, b: W, out0: zeros(rows * inC), tag: "" }],
      ] as const
    ) {
      const { c } = run;
      const want = matmulRef({
        ...c,
        out: run.out0,
        a: Float16Array.from(run.a),
        b: Float16Array.from(run.b),
        bias: "bias" in run ? run.bias : undefined,
      });
      const worst = assertWithin(`linear ${name} halfSums`, got, want, halfSumsBound(run));
      const differ = got.filter((v, i) => v !== other[i]).length;
      console.log(
        `  ${name}: error / bound <= ${worst.toFixed(3)}, ${differ} of ${got.length} not f32 sums' bits`,
      );
      // Only the GPU family's tiled kernel has f16 arithmetic; the CPU family's kernels ignore halfSums.
      if (gpu.cpuLike) assertEquals(got, other, `linear ${name}: the CPU family keeps f32 sums`);
      else if (differ === 0) throw new Error(`linear ${name}: halfSums gave the f32 sums' bits, not f16's`);
    }
    for (const o of runs) for (const t of Object.values(o)) gpu.free(t);
    for (const t of [tx, tW, tb, tdy, W16]) gpu.free(t);
  },
});

Deno.test({
  name: "geluForward's f16 output: the f32 kernel's values cast to f16 bit for bit, within 2^-11 of float64",
  ignore,
  fn: async () => {
    const n = 4 * 1001, x0 = randn(n, 21, 3);
    const inp = gpu.tensor(n),
      out32 = gpu.tensor(n),
      out16 = gpu.tensor(halfWords(n)),
      cast = gpu.tensor(halfWords(n));
    gpu.write(inp, x0);
    const plan = new Plan(gpu);
    geluForward(plan, { out: out32, inp, n });
    castToHalf(plan, { out: cast, inp: out32, n });
    geluForward(plan, { out: out16, inp, n, half: true });
    plan.run();
    const [got, want] = [await gpu.readU32(out16), await gpu.readU32(cast)];
    assertEquals(got, want);
    const halves = new Float16Array(got.buffer, 0, n);
    const ref = Array.from(
      x0,
      (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
    );
    assertClose("gelu f16 output", halves, ref, { rtol: 2 ** -11 + 1e-5, atol: 1e-6 });
    for (const t of [inp, out32, out16, cast]) gpu.free(t);
  },
});

Deno.test({
  name:
    "layernormForward's f16 output (both row kernels): the f32 values cast to f16, the same mean and rstd",
  ignore,
  fn: async () => {
    const N = 37, C = 68, eps = 1e-5;
    const x0 = randn(N * C, 31, 2), w0 = randn(C, 32), b0 = randn(C, 33);
    const [inp, weight, bias] = [x0, w0, b0].map((a) => {
      const t = gpu.tensor(a.length);
      gpu.write(t, a);
      return t;
    });
    for (const rows of ["thread", "workgroup"] as const) {
      const out32 = gpu.tensor(N * C),
        out16 = gpu.tensor(halfWords(N * C)),
        cast = gpu.tensor(halfWords(N * C));
      const stats = [0, 1, 2, 3].map(() => gpu.tensor(N));
      const plan = new Plan(gpu);
      const common = { inp, weight, bias, N, C, eps, rows };
      layernormForward(plan, { ...common, out: out32, mean: stats[0], rstd: stats[1] });
      castToHalf(plan, { out: cast, inp: out32, n: N * C });
      layernormForward(plan, { ...common, out: out16, mean: stats[2], rstd: stats[3], half: true });
      plan.run();
      assertEquals(await gpu.read(stats[2]), await gpu.read(stats[0]), `${rows}: mean`);
      assertEquals(await gpu.read(stats[3]), await gpu.read(stats[1]), `${rows}: rstd`);
      const got = new Float16Array((await gpu.readU32(out16)).buffer, 0, N * C);
      const want = new Float16Array((await gpu.readU32(cast)).buffer, 0, N * C);
      // The same f32 values, rounded once: equal, or (where the compiler contracts the vector form
      // differently) one f16 step apart.
      let differ = 0;
      for (let i = 0; i < N * C; i++) {
        if (got[i] === want[i]) continue;
        differ++;
        if (Math.abs(got[i] - want[i]) > Math.abs(want[i]) * 2 ** -10 + 2 ** -24) {
          throw new Error(`${rows}: element ${i} is ${got[i]}, the f32 kernel's cast ${want[i]}`);
        }
      }
      console.log(
        `  ${rows}: ${N * C - differ} of ${
          N * C
        } halves equal to the f32 kernel's cast, ${differ} one step off`,
      );
      const ref = new Float64Array(N * C);
      for (let r = 0; r < N; r++) {
        const row = x0.subarray(r * C, (r + 1) * C);
        const m = row.reduce((a, b) => a + b, 0) / C;
        const v = row.reduce((a, b) => a + (b - m) ** 2, 0) / C;
        for (let c = 0; c < C; c++) ref[r * C + c] = ((row[c] - m) / Math.sqrt(v + eps)) * w0[c] + b0[c];
      }
      assertClose(`layernorm f16 ${rows}`, got, ref, { rtol: 2 ** -10, atol: 1e-5 });
      for (const t of [out32, out16, cast, ...stats]) gpu.free(t);
    }
    for (const t of [inp, weight, bias]) gpu.free(t);
  },
});

Deno.test({
  name: "scaleBy multiplies by the factor buffer, rewritten without re-recording (f32: every adapter)",
  fn: async () => {
    const n = 1001, x0 = randn(n, 9);
    const x = gpu.tensor(n), factor = gpu.tensor(1);
    const plan = new Plan(gpu);
    scaleBy(plan, { x, factor, n });
    gpu.write(x, x0);
    gpu.write(factor, Float32Array.of(65536));
    plan.run();
    assertEquals(await gpu.read(x), x0.map((v) => v * 65536));
    gpu.write(factor, Float32Array.of(0.5));
    plan.run();
    assertEquals(await gpu.read(x), x0.map((v) => v * 65536 * 0.5));
  },
});
