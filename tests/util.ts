/**
 * Test helpers shared by every kernel and model test: seeded inputs, a shared GPU, and comparisons that
 * print the worst absolute and relative error per tensor (llm.c style) and fail past a tolerance.
 * @module
 */
import { Gpu } from "../shaders/gpu.ts";
import { attachTuner } from "../shaders/tune.ts";
import { Rng } from "../model/random.ts";

/** `n` normal(0, std) samples from a seeded generator. */
export function randn(n: number, seed: number, std = 1): Float32Array {
  const r = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = std * r.normal();
  return out;
}

/** `n` integers in [0, max) from a seeded generator. */
export function randint(n: number, max: number, seed: number): Uint32Array {
  const r = new Rng(seed);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = r.int(max);
  return out;
}

let shared: Promise<Gpu> | undefined;
/**
 * One device for the whole test process. TEST_KERNELS=cpu|gpu forces that kernel family (`tests/run.ts`
 * forces the GPU family on its Vulkan pass). Matmul tuning is off, so every run records the fixed default
 * candidate (`tune_test.ts` attaches its own tuners).
 */
export function testGpu(): Promise<Gpu> {
  shared ??= (async () => {
    const kernels = Deno.env.get("TEST_KERNELS") ?? "auto";
    if (kernels !== "auto" && kernels !== "cpu" && kernels !== "gpu") {
      throw new Error(`TEST_KERNELS must be auto, cpu or gpu, got "${kernels}"`);
    }
    const gpu = await Gpu.create({ kernels });
    await attachTuner(gpu, { mode: "off" });
    return gpu;
  })();
  return shared;
}

/** Worst errors of `actual` against `expected`. rel = |a-e| / max(|e|, floor). */
export function errors(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  floor = 1e-6,
): { maxAbs: number; maxRel: number; at: number } {
  if (actual.length !== expected.length) {
    throw new Error(`length mismatch: actual ${actual.length}, expected ${expected.length}`);
  }
  let maxAbs = 0, maxRel = 0, at = -1;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (!Number.isFinite(a) && a !== e) return { maxAbs: Infinity, maxRel: Infinity, at: i };
    const abs = Math.abs(a - e);
    const rel = abs / Math.max(Math.abs(e), floor);
    if (abs > maxAbs) maxAbs = abs;
    if (rel > maxRel) {
      maxRel = rel;
      at = i;
    }
  }
  return { maxAbs, maxRel, at };
}

/**
 * Assert `actual` ≈ `expected`: every element within `atol + rtol * |expected|`. Prints the worst
 * absolute and relative error under `name` either way.
 */
export function assertClose(
  name: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { rtol = 1e-4, atol = 1e-6 }: { rtol?: number; atol?: number } = {},
): void {
  const e = errors(actual, expected, Math.max(atol, 1e-12));
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const excess = Math.abs(actual[i] - expected[i]) - (atol + rtol * Math.abs(expected[i]));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(excess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  console.log(
    `  ${name.padEnd(36)} n=${String(actual.length).padStart(8)} maxAbs=${e.maxAbs.toExponential(2)} ` +
      `maxRel=${e.maxRel.toExponential(2)} ${worst < 0 ? "ok" : "FAIL"}`,
  );
  if (worst >= 0) {
    throw new Error(
      `${name}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} ` +
        `(atol ${atol}, rtol ${rtol})`,
    );
  }
}

/** Round f64 values to f32, as uploaded to the GPU. */
export function f32(values: ArrayLike<number>): Float32Array {
  return Float32Array.from(values as ArrayLike<number>);
}
