/**
 * `deno task bench`: speed of the engine on this machine's WebGPU adapter.
 *
 *   deno task bench [--json FILE] [--compare] [--layers 4 --width 256 --heads 4 --seq 128 --batch 4
 *                   --vocab 4096] [--steps 3] [--big-batch 1 --big-seq 64] [--skip-124m] [--quick]
 *                   [--only kernels,train,memory,profile,generation,compare]
 *
 * Measures each kernel family at GPT-2 124M shapes (GFLOP/s, GB/s), tokens/s of a full training step
 * (forward, loss, backward, clip, AdamW) for a small config and for GPT-2 124M, generation tokens/s
 * with the KV cache against recomputing the whole prefix per token, and the GPU bytes allocated for
 * 124M training next to the arithmetic minimum. Every timing is the median over several iterations
 * after a warm-up, each ended by `await gpu.sync()`; kernel times exclude the fixed cost of a submission
 * (see {@link timePlan}). `--compare` also runs the peer implementations
 * (../shared/bench: TensorFlow.js WebGPU and PyTorch CPU) on the small config, alternating with this
 * engine, and prints ratios. Results go to a table on stdout and JSON (default bench-results/bench.json).
 * `--precision f16` runs the training steps in mixed precision ("small f16", "gpt2-124M f16"), and
 * `--half-sums` with it adds each step's twin with f16 arithmetic in the linear layers ("... f16
 * halfSums", model/precision.ts), measured in the same run for the ratio; default runs stay as long.
 * @module
 */
import {
  HALF_SUMS_FLAG,
  halfSumsFlag,
  median,
  numberOption,
  parseCommand,
  PRECISION_FLAG,
  precisionFlag,
  required,
  runMain,
} from "./common.ts";
import { writeFileAtomic } from "./files.ts";
import {
  computeMain,
  type Gpu,
  type GpuDescription,
  grid,
  Plan,
  storage,
  type TensorView,
  uniformLayout,
} from "../shaders/gpu.ts";
import { describeLine, GPU_FLAGS, openGpu } from "./gpu_options.ts";
import { TILED_CANDIDATES, tiledFits } from "../shaders/matmul_tiled.ts";
import { timePlan, tune } from "../shaders/tune.ts";
import { GPT2, splitRows, Workspace } from "../model/gpt2.ts";
import {
  activationFloats,
  activationTable,
  DEFAULT_LOGITS_BUDGET_BYTES,
  logitsChunk,
} from "../model/activations.ts";
import { BASELINE_ADAMW, Trainer } from "../model/trainer.ts";
import { GPT2_124M, type GPT2Config, parameterCount } from "../model/config.ts";
import { generate } from "../model/generate.ts";
import { matmul } from "../shaders/matmul.ts";
import { attentionBackward, attentionForward } from "../shaders/attention.ts";
import { ATTENTION_CANDIDATES, ATTENTION_DEFAULT, attentionFits } from "../shaders/attention_candidates.ts";
import { layernormBackward, layernormForward } from "../shaders/layernorm.ts";
import { geluBackward, geluForward } from "../shaders/gelu.ts";
import { crossEntropyBackward, crossEntropyForward } from "../shaders/crossentropy.ts";
import { adamwStep, packStepParams, STEP_PARAMS_LENGTH } from "../shaders/adamw.ts";
import { NORM_LENGTH } from "../shaders/reduce.ts";
import { uniforms } from "../model/random.ts";
import { halfWords } from "../shaders/f16.ts";
import type { Precision, PrecisionOptions } from "../model/precision.ts";

const SPEC = {
  json: { type: "string", help: "write the results as JSON here", default: "bench-results/bench.json" },
  compare: { type: "boolean", help: "also run the peer benchmarks (../shared/bench) and print ratios" },
  peers: { type: "string", help: "folder of the peer scripts (default: ../shared/bench next to the repo)" },
  rounds: { type: "string", help: "alternating rounds of --compare", default: "3" },
  layers: { type: "string", help: "small training config: layers", default: "4" },
  width: { type: "string", help: "small training config: width", default: "256" },
  heads: { type: "string", help: "small training config: heads", default: "4" },
  seq: { type: "string", help: "small training config: sequence length", default: "128" },
  batch: { type: "string", help: "small training config: batch", default: "4" },
  vocab: { type: "string", help: "small training config: vocabulary", default: "4096" },
  steps: { type: "string", help: "timed iterations per measurement (after one warm-up)", default: "3" },
  "big-batch": { type: "string", help: "GPT-2 124M training step: batch", default: "1" },
  "big-seq": { type: "string", help: "GPT-2 124M training step: sequence length", default: "64" },
  "gen-context": { type: "string", help: "generation: context tokens per sequence", default: "64" },
  "gen-new": { type: "string", help: "generation: new tokens per sequence", default: "256" },
  "mem-batch": {
    type: "string",
    help: "GPT-2 124M memory report: batch (allocated, not run)",
    default: "16",
  },
  "mem-seq": { type: "string", help: "GPT-2 124M memory report: sequence length", default: "512" },
  "skip-124m": { type: "boolean", help: "skip the GPT-2 124M training step and memory report" },
  only: {
    type: "string",
    help: `run only these parts, comma-separated: ${"kernels,train,memory,profile,generation,compare"} ` +
      "(compare still needs --compare; default: all)",
  },
  quick: { type: "boolean", help: "tiny shapes everywhere (a smoke test that runs in seconds)" },
  ...PRECISION_FLAG,
  ...HALF_SUMS_FLAG,
  ...GPU_FLAGS,
} as const;

/** One kernel measurement. */
export interface KernelResult {
  name: string;
  shape: string;
  ms: number;
  gflops: number;
  gbps: number;
  /** What limits the kernel: arithmetic (judged against the matmul reference) or bytes (the copy). */
  bound?: "compute" | "memory";
  /** GFLOP/s or GB/s as a fraction of the same adapter's reference kernel (see {@link benchKernels}). */
  ofCeiling?: number;
}

/** A vec4 copy: the bandwidth reference. Bindings: params, out, inp. */
const COPY_PARAMS = uniformLayout({ n: "u32" });
const COPY4 = COPY_PARAMS.wgsl + storage({ out: "read_write array<vec4f>", inp: "read array<vec4f>" }) +
  computeMain(256) + /* wgsl */ `  if (globalIndex < p.n) { out[globalIndex] = inp[globalIndex]; }
}
`;

/** One training-step measurement. */
export interface TrainResult {
  name: string;
  config: { L: number; C: number; H: number; T: number; B: number; V: number };
  msPerStep: number;
  tokensPerS: number;
}

/** The parts of a bench run, in the order they run. */
export const BENCH_PARTS = ["kernels", "train", "memory", "profile", "generation", "compare"] as const;
export type BenchPart = typeof BENCH_PARTS[number];

/** The parts named by `--only` (comma-separated), or all of them. */
export function parseParts(value: unknown): BenchPart[] {
  if (value === undefined) return [...BENCH_PARTS];
  const names = String(value).split(",").map((x) => x.trim()).filter((x) => x !== "");
  const unknown = names.filter((x) => !(BENCH_PARTS as readonly string[]).includes(x));
  if (unknown.length > 0 || names.length === 0) {
    throw new Error(
      `--only ${JSON.stringify(String(value))}: expected some of ${BENCH_PARTS.join(", ")}` +
        (unknown.length > 0 ? `; unknown: ${unknown.join(", ")}` : ""),
    );
  }
  return BENCH_PARTS.filter((p) => names.includes(p));
}

/** Everything `bench` measures. */
export interface BenchResults {
  adapter: string;
  /** Backend, adapter info, kernel family and device features ({@link Gpu.describe}). */
  device: GpuDescription;
  date: string;
  deno: string;
  quick: boolean;
  /** The machine's 1, 5 and 15 minute load averages at the start and the end (shared CPUs skew timings). */
  loadavg: { start: number[]; end?: number[] };
  kernels: KernelResult[];
  train: TrainResult[];
  /** The parts measured (`--only`); the others are absent or empty. */
  parts: BenchPart[];
  generation?: {
    config: { L: number; C: number; H: number; V: number; batch: number; context: number; newTokens: number };
    cachedTokensPerS: number;
    recomputeTokensPerS: number;
    /** New-token indices whose recompute pass was timed; the others are interpolated. */
    recomputeMeasuredAt: number[];
    speedup: number;
  };
  memory?: {
    config: string;
    params: number;
    allocatedBytes: number;
    minimumBytes: number;
    paramStateBytes: number;
    activationBytes: number;
  };
  profile?: StepProfile;
  compare?: {
    config: TrainResult["config"];
    rounds: Record<string, number[]>;
    medianTokensPerS: Record<string, number>;
    ratios: Record<string, number>;
    notes: string[];
  };
}

/** Median seconds of `iters` runs of `fn` after one warm-up; each run ends when the GPU is idle. */
async function timeRuns(gpu: Gpu, iters: number, fn: () => unknown): Promise<number> {
  await fn();
  await gpu.sync();
  const times: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await fn();
    await gpu.sync();
    times.push((performance.now() - t0) / 1000);
  }
  return median(times);
}

/** A tensor of small seeded random values (so no denormals or NaNs slow the CPU adapters down). */
function randomTensor(gpu: Gpu, n: number, seed: number, label: string, scale = 0.1): TensorView {
  const r = uniforms(seed);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = scale * (r() - 0.5);
  const t = gpu.tensor(n, label);
  gpu.write(t, data);
  return t;
}

/** Record `build` into a plan, time it, free its tensors. */
async function kernel(
  gpu: Gpu,
  iters: number,
  name: string,
  shape: string,
  flops: number,
  bytes: number,
  build: (plan: Plan, t: (n: number, label: string) => TensorView) => void,
): Promise<KernelResult> {
  const owned: TensorView[] = [];
  const plan = new Plan(gpu);
  build(plan, (n, label) => {
    const v = randomTensor(gpu, n, owned.length + 1, label);
    owned.push(v);
    return v;
  });
  // GPU-family matmuls recorded with an untuned class are tuned (and retargeted) before they are timed.
  await tune(gpu);
  // Enough repetitions that the difference is well above timer noise, few for slow kernels.
  const s = await timePlan(gpu, plan, { iters, seconds: 0.1, maxReps: 8 });
  for (const v of owned) gpu.free(v);
  return { name, shape, ms: s * 1000, gflops: flops / s / 1e9, gbps: bytes / s / 1e9 };
}

/**
 * A dense product `out[M,N] = op(A) op(B) (+ bias)` timed by {@link kernel}; shape printed as MxKxN.
 * `half`: A and B are f16 tensors (mixed precision's matmul), filled with the same small values in f16.
 */
function matmulKernel(
  gpu: Gpu,
  iters: number,
  name: string,
  a: { M: number; N: number; K: number; transA?: boolean; transB?: boolean; accumulate?: boolean } & {
    bias?: boolean;
    kernel?: "auto" | "scalar";
    tiles?: "cpu" | "gpu";
    candidate?: string;
    half?: boolean;
    halfSums?: boolean;
  },
): Promise<KernelResult> {
  const { M, N, K } = a;
  const operandBytes = a.half ? 2 : 4;
  const operand = (t: (n: number, label: string) => TensorView, n: number, label: string) => {
    if (!a.half) return t(n, label);
    const view = t(halfWords(n), label);
    const r = uniforms(n);
    const h = new Float16Array(2 * halfWords(n));
    for (let i = 0; i < n; i++) h[i] = 0.1 * (r() - 0.5);
    gpu.write(view, new Uint32Array(h.buffer));
    return view;
  };
  return kernel(
    gpu,
    iters,
    name,
    `${M}x${K}x${N}`,
    2 * M * N * K,
    operandBytes * (M * K + K * N) + 4 * M * N,
    (p, t) =>
      matmul(p, {
        ...a,
        out: t(M * N, "out"),
        a: operand(t, M * K, "a"),
        b: operand(t, K * N, "b"),
        bias: a.bias ? t(N, "bias") : undefined,
      }),
  );
}

/** Kernel shapes: GPT-2 124M rows of activations, width, heads, vocabulary. */
interface KernelShapes {
  N: number;
  C: number;
  H: number;
  B: number;
  T: number;
  V: number;
  adamN: number;
}

/** Every kernel family at `k`'s shapes (`quick`: two attention candidates, as on CPU adapters). */
async function benchKernels(
  gpu: Gpu,
  k: KernelShapes,
  iters: number,
  quick: boolean,
): Promise<KernelResult[]> {
  const { N, C, H, B, T, V } = k;
  const out: KernelResult[] = [];
  const log = (r: KernelResult) => {
    console.error(`  ${r.name} ${r.shape}: ${r.ms.toFixed(1)} ms`);
    out.push(r);
  };
  const F = 4 * C;
  // The references every other kernel is judged against on this adapter: a plain register-tiled matmul
  // (the scalar kernel: 8x4 outputs per thread, one load per operand element) at the 1024x768x768 shape
  // of ../shared/bench/README.md, and a vec4 copy for bandwidth.
  const ref = await matmulKernel(gpu, iters, "reference: register-tiled matmul", {
    M: N,
    N: C,
    K: C,
    kernel: "scalar",
  });
  const copyN = N * F;
  const copy = await kernel(gpu, iters, "reference: vec4 copy", `${copyN}`, 0, 8 * copyN, (p, t) => {
    const u = p.params(COPY_PARAMS, { n: copyN / 4 }, "copy.params");
    p.add(COPY4, [u, t(copyN, "out"), t(copyN, "inp")], grid(gpu, Math.ceil(copyN / 4 / 256)), "copy");
  });
  log({ ...ref, bound: "compute", ofCeiling: 1 });
  log({ ...copy, bound: "memory", ofCeiling: 1 });
  const logged = out.length;
  log(await matmulKernel(gpu, iters, "matmul fwd (x·W)", { M: N, N: F, K: C, bias: true }));
  log(
    await matmulKernel(gpu, iters, "matmul dW (x^T·dy)", {
      M: C,
      N: F,
      K: N,
      transA: true,
      accumulate: true,
    }),
  );
  // The LM head as training runs it: a chunk of logits rows (the workspace's budget) against one wte chunk.
  const R = Math.max(1, Math.min(N, Math.floor(DEFAULT_LOGITS_BUDGET_BYTES / (V * 4))));
  const Vc = splitRows(V, C, gpu.limits.maxStorageBufferBindingSize)[0];
  log(await matmulKernel(gpu, iters, "LM head chunk (x·wte^T)", { M: R, N: Vc, K: C, transB: true }));
  // Mixed precision's f16-operand matmuls (f32 sums) at the same shapes, beside the f32 rows.
  if (gpu.shaderF16) {
    log(await matmulKernel(gpu, iters, "matmul fwd f16 (x·W)", { M: N, N: F, K: C, bias: true, half: true }));
    log(
      await matmulKernel(gpu, iters, "matmul dW f16 (x^T·dy)", {
        M: C,
        N: F,
        K: N,
        transA: true,
        accumulate: true,
        half: true,
      }),
    );
    log(
      await matmulKernel(gpu, iters, "LM head chunk f16 (x·wte^T)", {
        M: R,
        N: Vc,
        K: C,
        transB: true,
        half: true,
      }),
    );
  } else console.error(`  (no f16 matmul rows: adapter ${gpu.adapterName} has no shader-f16)`);
  // The GPU family's workgroup-memory candidates (what the tuner picks from) at the x·W shape, on any
  // adapter; on a CPU adapter they show what llvmpipe makes of GPU-style kernels.
  // With shader-f16 each candidate's f16 variant too (mixed precision's matmul on GPUs), and its f16
  // arithmetic ("f16acc": halfSums, f16 FMAs over chunks of k), the one that can pass the f32 ALU rate.
  const tiledKinds = [{ tag: "", half: false, halfSums: false }];
  if (gpu.shaderF16) {
    tiledKinds.push({ tag: " f16", half: true, halfSums: false }, {
      tag: " f16acc",
      half: true,
      halfSums: true,
    });
  }
  for (const { tag, half, halfSums } of tiledKinds) {
    for (const c of TILED_CANDIDATES) {
      if (!tiledFits(c, gpu.limits)) continue;
      log(
        await matmulKernel(gpu, iters, `tiled ${c.name}${tag}`, {
          M: N,
          N: F,
          K: C,
          tiles: "gpu",
          candidate: c.name,
          half,
          halfSums,
        }),
      );
    }
  }
  // Causal attention: QK^T and PV over the lower triangle; backward recomputes P and does 4 products.
  const hd = C / H;
  const attFlops = 2 * 2 * B * H * ((T * (T + 1)) / 2) * hd;
  log(
    await kernel(
      gpu,
      iters,
      "attention fwd",
      `B${B} T${T} H${H} hd${hd}`,
      attFlops,
      4 * (N * 3 * C + N * C),
      (p, t) =>
        attentionForward(p, {
          y: t(N * C, "y"),
          lse: t(B * H * T, "lse"),
          qkv: t(N * 3 * C, "qkv"),
          B,
          T,
          C,
          H,
        }),
    ),
  );
  log(
    await kernel(
      gpu,
      iters,
      "attention bwd",
      `B${B} T${T} H${H} hd${hd}`,
      2.5 * attFlops,
      4 * (2 * N * 3 * C + 2 * N * C),
      (
        p,
        t,
      ) => {
        const qkv = t(N * 3 * C, "qkv"), y = t(N * C, "y"), lse = t(B * H * T, "lse");
        attentionForward(p, { y, lse, qkv, B, T, C, H });
        const fwd = p.dispatches.length;
        attentionBackward(p, { dqkv: t(N * 3 * C, "dqkv"), dy: t(N * C, "dy"), qkv, y, lse, B, T, C, H });
        p.dispatches.splice(0, fwd); // forward only made valid y and lse; time the backward alone
      },
    ),
  );
  // The GPU family's attention candidates (what the tuner picks from) at the same shape, judged like the
  // rows above. With --quick, and on CPU adapters (where a GPU-style candidate takes 6-17 s a run at the
  // 124M shape on lavapipe), only the default and the smallest staged one.
  const fewAttention = quick || gpu.cpuLike;
  for (const c of ATTENTION_CANDIDATES) {
    if (fewAttention && c.name !== ATTENTION_DEFAULT && c.name !== "w64-r1-s16") continue;
    const passes = ["forward", "dkdv", "dq"] as const;
    if (!passes.every((pass) => attentionFits(c, pass, hd, false, gpu.limits))) continue;
    const candidate = c.name;
    log(
      await kernel(
        gpu,
        iters,
        `attention fwd ${c.name}`,
        `B${B} T${T} H${H} hd${hd}`,
        attFlops,
        4 * (N * 3 * C + N * C),
        (p, t) =>
          attentionForward(p, {
            y: t(N * C, "y"),
            lse: t(B * H * T, "lse"),
            qkv: t(N * 3 * C, "qkv"),
            B,
            T,
            C,
            H,
            candidate,
          }),
      ),
    );
    log(
      await kernel(
        gpu,
        iters,
        `attention bwd ${c.name}`,
        `B${B} T${T} H${H} hd${hd}`,
        2.5 * attFlops,
        4 * (2 * N * 3 * C + 2 * N * C),
        (p, t) => {
          const qkv = t(N * 3 * C, "qkv"), y = t(N * C, "y"), lse = t(B * H * T, "lse");
          attentionForward(p, { y, lse, qkv, B, T, C, H, candidate });
          const fwd = p.dispatches.length;
          const dqkv = t(N * 3 * C, "dqkv");
          attentionBackward(p, { dqkv, dy: t(N * C, "dy"), qkv, y, lse, B, T, C, H, candidate });
          p.dispatches.splice(0, fwd);
        },
      ),
    );
  }
  // Elementwise and row kernels: nominal FLOP counts (LayerNorm 8/elem fwd, 14 bwd; GELU 12 fwd, 20 bwd;
  // softmax/CE 4 fwd, 5 bwd; AdamW 16); GB/s is the figure that matters for them.
  log(
    await kernel(
      gpu,
      iters,
      "layernorm fwd",
      `${N}x${C}`,
      8 * N * C,
      8 * N * C,
      (p, t) =>
        layernormForward(p, {
          out: t(N * C, "out"),
          mean: t(N, "mean"),
          rstd: t(N, "rstd"),
          inp: t(N * C, "x"),
          weight: t(C, "w"),
          bias: t(C, "b"),
          N,
          C,
          eps: 1e-5,
        }),
    ),
  );
  log(
    await kernel(
      gpu,
      iters,
      "layernorm bwd",
      `${N}x${C}`,
      14 * N * C,
      16 * N * C,
      (p, t) =>
        layernormBackward(p, {
          dinp: t(N * C, "dx"),
          dweight: t(C, "dw"),
          dbias: t(C, "db"),
          dout: t(N * C, "dout"),
          inp: t(N * C, "x"),
          weight: t(C, "w"),
          mean: t(N, "mean"),
          rstd: t(N, "rstd"),
          N,
          C,
        }),
    ),
  );
  const E = N * F;
  log(
    await kernel(
      gpu,
      iters,
      "gelu fwd",
      `${E}`,
      12 * E,
      8 * E,
      (p, t) => geluForward(p, { out: t(E, "out"), inp: t(E, "x"), n: E }),
    ),
  );
  log(
    await kernel(
      gpu,
      iters,
      "gelu bwd",
      `${E}`,
      20 * E,
      12 * E,
      (p, t) => geluBackward(p, { dinp: t(E, "dx"), inp: t(E, "x"), dout: t(E, "dy"), n: E }),
    ),
  );
  log(
    await kernel(gpu, iters, "softmax/CE fwd", `${R}x${V}`, 4 * R * V, 4 * R * V, (p, t) => {
      const targets = gpu.tensor(R, "targets"); // zeros: valid ids
      crossEntropyForward(p, { lp: t(R, "lp"), lse: t(R, "lse"), logits: t(R * V, "logits"), targets, R, V });
    }),
  );
  log(
    await kernel(gpu, iters, "softmax/CE bwd", `${R}x${V}`, 5 * R * V, 8 * R * V, (p, t) => {
      const targets = gpu.tensor(R, "targets");
      crossEntropyBackward(p, { logits: t(R * V, "logits"), lse: t(R, "lse"), targets, g: t(R, "g"), R, V });
    }),
  );
  const n = k.adamN;
  log(
    await kernel(gpu, iters, "AdamW", `${n}`, 16 * n, 28 * n, (p, t) => {
      const step = gpu.tensor(STEP_PARAMS_LENGTH, "step");
      gpu.write(
        step,
        packStepParams({ ...BASELINE_ADAMW, lr: 1e-4, step: 1 }),
      );
      const norm = gpu.tensor(NORM_LENGTH, "norm");
      gpu.write(norm, Float32Array.of(1, 1));
      const [param, grad, m, v] = ["param", "grad", "m", "v"].map((name) => t(n, name));
      adamwStep(p, { param, grad, m, v, stepParams: step, norm, decay: true, n });
    }),
  );
  // Matmuls and attention against the matmul reference, the rest against the copy.
  for (const k of out.slice(logged)) {
    const compute = k.name.startsWith("matmul") || k.name.startsWith("LM head") ||
      k.name.startsWith("tiled") || k.name.startsWith("attention");
    k.bound = compute ? "compute" : "memory";
    k.ofCeiling = compute ? k.gflops / ref.gflops : k.gbps / copy.gbps;
  }
  return out;
}

/**
 * Floats of the activations backward reads ("kept" in the workspace's activation table), for training
 * at B x T in `precision` with the workspace's default logits chunk (32-bit elements: f16 tensors count
 * two halves each).
 */
export function keptActivationFloats(
  c: GPT2Config,
  B: number,
  T: number,
  maxBinding: number,
  precision: Precision = "f32",
): number {
  const logits = logitsChunk(c, B * T, maxBinding);
  const half = precision === "f16";
  const table = activationTable(c, B, T, { training: true, prefill: false, logits, half });
  return activationFloats(table, ["kept"]);
}

/** A model config for a training benchmark. */
function modelConfig(c: TrainResult["config"], nPositions = c.T): GPT2Config {
  return {
    vocabSize: c.V,
    nPositions,
    nEmbd: c.C,
    nLayer: c.L,
    nHead: c.H,
    layerNormEpsilon: 1e-5,
    bosTokenId: c.V - 1,
    eosTokenId: c.V - 1,
  };
}

/** A trainer and a random LM batch for `c`; the caller times `step`. */
function trainSetup(
  gpu: Gpu,
  c: TrainResult["config"],
  config: GPT2Config,
  precision: Precision = "f32",
  options: PrecisionOptions = {},
) {
  const model = GPT2.create(gpu, config, undefined, 1).usePrecision(precision, options);
  const trainer = new Trainer(model);
  const r = uniforms(7);
  const n = c.B * c.T;
  const inputs = Uint32Array.from({ length: n }, () => Math.floor(r() * c.V));
  const targets = Uint32Array.from({ length: n }, () => Math.floor(r() * c.V));
  const batch = { nSeq: c.B, T: c.T, inputs, targets, lmMask: new Float32Array(n).fill(1) };
  trainer.workspace(c.B, c.T);
  return { model, trainer, step: () => trainer.trainStep(batch, { kind: "lm" }, 1e-4) };
}

/** Tokens/s of the full training step, and the GPU bytes it allocated. */
async function benchTrain(
  gpu: Gpu,
  name: string,
  c: TrainResult["config"],
  config: GPT2Config,
  iters: number,
  precision: Precision = "f32",
  options: PrecisionOptions = {},
) {
  const before = gpu.allocatedBytes;
  const { step, trainer, model } = trainSetup(gpu, c, config, precision, options);
  const s = await timeRuns(gpu, iters, step);
  const result: TrainResult = { name, config: c, msPerStep: s * 1000, tokensPerS: (c.B * c.T) / s };
  console.error(`  train ${name}: ${result.msPerStep.toFixed(0)} ms/step`);
  // Everything the step needed: weights, gradients, moments, the workspace, loss and norm buffers.
  return {
    result,
    allocated: gpu.allocatedBytes - before,
    destroy: () => {
      trainer.destroy();
      model.destroy();
    },
  };
}

/**
 * GPU bytes that GPT-2 training at B x T allocates (weights, gradients, moments, workspace), without
 * running a step; everything is freed again.
 */
function allocatedForTraining(
  gpu: Gpu,
  config: GPT2Config,
  B: number,
  T: number,
  precision: Precision = "f32",
): number {
  const before = gpu.allocatedBytes;
  const model = GPT2.create(gpu, { ...config, nPositions: Math.max(config.nPositions, T) }, undefined, 1)
    .usePrecision(precision);
  const trainer = new Trainer(model);
  trainer.workspace(B, T);
  const allocated = gpu.allocatedBytes - before;
  trainer.destroy();
  model.destroy();
  return allocated;
}

/** Milliseconds per kernel family of one training step, measured dispatch by dispatch. */
export interface StepProfile {
  config: TrainResult["config"];
  /** Kernel label (the family: matmul_NN_v4, layernorm_forward_rows, ...) -> ms per step. */
  ms: Record<string, number>;
  totalMs: number;
  matmulMs: number;
  /** Share of the step's kernel time outside matmuls. */
  outsideMatmul: number;
}

/**
 * Time every dispatch of one training step on its own: each is encoded `reps + 1` times into one
 * command buffer and once into another, and the difference over `reps` is its time, so the fixed cost
 * of a submission and a sync cancels. Labels group dispatches into kernel families.
 */
export async function profileStep(gpu: Gpu, c: TrainResult["config"], reps = 4): Promise<StepProfile> {
  const { trainer, model, step } = trainSetup(gpu, c, modelConfig(c));
  await step(); // compiles every pipeline and leaves valid activations in the workspace
  const ms: Record<string, number> = {};
  const timeEncoded = async (plan: Plan, n: number) => {
    const t0 = performance.now();
    const enc = gpu.device.createCommandEncoder();
    for (let i = 0; i < n; i++) plan.encode(enc);
    gpu.device.queue.submit([enc.finish()]);
    await gpu.sync();
    return performance.now() - t0;
  };
  for (const { plan } of trainer.stepPlans(c.B, c.T, { kind: "lm" })) {
    for (const d of plan.dispatches) {
      const one = new Plan(gpu);
      one.dispatches.push(d);
      const t1 = await timeEncoded(one, 1);
      const tn = await timeEncoded(one, reps + 1);
      const label = d.label ?? "unlabelled";
      ms[label] = (ms[label] ?? 0) + Math.max(0, tn - t1) / reps;
    }
  }
  trainer.destroy();
  model.destroy();
  const totalMs = Object.values(ms).reduce((a, b) => a + b, 0);
  const matmulMs = Object.entries(ms).filter(([k]) => k.startsWith("matmul")).reduce((a, [, v]) => a + v, 0);
  return { config: c, ms, totalMs, matmulMs, outsideMatmul: 1 - matmulMs / totalMs };
}

/** Up to `samples` token indices in [0, n), evenly spaced, first and last included. */
export function sampleLengths(n: number, samples: number): number[] {
  if (n <= samples) return Array.from({ length: n }, (_, i) => i);
  return [...new Set(Array.from({ length: samples }, (_, k) => Math.round((k * (n - 1)) / (samples - 1))))];
}

/** The value at x, linear between the two measured neighbours in sorted `xs`. */
export function interpolate(xs: number[], ys: Map<number, number>, x: number): number {
  let j = 1;
  while (j < xs.length - 1 && xs[j] < x) j++;
  if (xs.length === 1) return ys.get(xs[0])!;
  const x0 = xs[j - 1], x1 = xs[j];
  const f = (x - x0) / (x1 - x0);
  return ys.get(x0)! * (1 - f) + ys.get(x1)! * f;
}

/** Generation with the KV cache against a full forward pass over the prefix for every new token. */
async function benchGeneration(
  gpu: Gpu,
  g: NonNullable<BenchResults["generation"]>["config"],
  samples = 9,
) {
  const config = modelConfig({ L: g.L, C: g.C, H: g.H, T: 0, B: 0, V: g.V }, g.context + g.newTokens);
  const model = GPT2.create(gpu, config, undefined, 2);
  const r = uniforms(3);
  const contexts = Array.from(
    { length: g.batch },
    () => Array.from({ length: g.context }, () => Math.floor(r() * (g.V - 1))),
  );
  const opts = { maxTokens: g.newTokens, minTokens: g.newTokens, temperature: 1, topP: 0.8, seed: 1 };
  const cached = await timeRuns(gpu, 1, () => generate(model, contexts, opts));
  // Recompute: one forward pass over B x (context + i) tokens for each new token i. At 256 new tokens
  // that is hours on a CPU adapter, so the pass is timed at up to `samples` evenly spaced lengths
  // (workspaces made outside the timing, each shape warmed once) and the per-token times in between are
  // interpolated linearly; a forward pass costs close to linearly in T at these lengths.
  const lengths = sampleLengths(g.newTokens, samples);
  const times = new Map<number, number>();
  for (const i of lengths) {
    const T = g.context + i;
    const ws = new Workspace(model, g.batch, T, { logitsRows: g.batch * T });
    const inputs = new Uint32Array(g.batch * T);
    ws.setBatch(inputs, inputs);
    times.set(i, await timeRuns(gpu, 1, () => ws.forward.run()));
    ws.destroy();
  }
  let recompute = 0;
  for (let i = 0; i < g.newTokens; i++) recompute += interpolate(lengths, times, i);
  model.destroy();
  const n = g.batch * g.newTokens;
  console.error(
    `  generation: cached ${(cached * 1000).toFixed(0)} ms, recompute ${(recompute * 1000).toFixed(0)} ms`,
  );
  return {
    config: g,
    cachedTokensPerS: n / cached,
    recomputeTokensPerS: n / recompute,
    recomputeMeasuredAt: lengths,
    speedup: recompute / cached,
  };
}

/** The peer scripts' folder: --peers, or ../shared/bench beside the repository. */
function peerDir(given: unknown): string {
  if (typeof given === "string") return given.replace(/\/+$/, "");
  return new URL("../../shared/bench", import.meta.url).pathname;
}

/** Run a peer; its last JSON line's tokens_per_s, or a note saying why there is none. */
async function runPeer(cmd: string, args: string[]): Promise<number | string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (e) {
    return `cannot run ${cmd}: ${(e as Error).message}`;
  }
  const text = new TextDecoder().decode(out.stdout);
  for (const line of text.trim().split("\n").reverse()) {
    try {
      const v = JSON.parse(line);
      if (typeof v.tokens_per_s === "number") return v.tokens_per_s;
    } catch {
      // not the result line
    }
  }
  const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" | ");
  return `exit ${out.code}, no tokens_per_s line (${err.slice(0, 300)})`;
}

/** This engine and the peers on the same config, alternating, `rounds` times. */
async function compare(
  gpu: Gpu,
  c: TrainResult["config"],
  steps: number,
  rounds: number,
  dir: string,
): Promise<NonNullable<BenchResults["compare"]>> {
  const notes: string[] = [];
  const cfg = [c.L, c.C, c.H, c.T, c.B, c.V, steps].map(String);
  const peers: { name: string; cmd: string; args: string[] }[] = [];
  const tfjs = `${dir}/peer_tfjs_gpt2.ts`, torch = `${dir}/peer_torch_gpt2.py`;
  const exists = async (p: string) => await Deno.stat(p).then(() => true, () => false);
  if (await exists(tfjs)) {
    // The peer imports npm: packages; our deno.json uses a manual node_modules, so run it without it.
    peers.push({
      name: "tfjs-webgpu",
      cmd: Deno.execPath(),
      args: ["run", "-A", "--no-config", "--node-modules-dir=none", tfjs, ...cfg],
    });
  } else notes.push(`tfjs-webgpu skipped: ${tfjs} not found`);
  if (await exists(torch)) {
    peers.push({ name: "pytorch-cpu", cmd: "/usr/bin/python3", args: [torch, ...cfg] });
  } else notes.push(`pytorch-cpu skipped: ${torch} not found`);
  const { step, trainer, model } = trainSetup(gpu, c, modelConfig(c));
  const roundsOut: Record<string, number[]> = { engine: [] };
  const dead = new Set<string>();
  for (let r = 0; r < rounds; r++) {
    const s = await timeRuns(gpu, steps, step);
    roundsOut.engine.push((c.B * c.T) / s);
    console.error(`  compare round ${r + 1}: engine ${((c.B * c.T) / s).toFixed(1)} tokens/s`);
    for (const p of peers) {
      if (dead.has(p.name)) continue;
      const v = await runPeer(p.cmd, p.args);
      if (typeof v === "string") {
        notes.push(`${p.name} skipped: ${v}`);
        dead.add(p.name);
        continue;
      }
      (roundsOut[p.name] ??= []).push(v);
      console.error(`  compare round ${r + 1}: ${p.name} ${v.toFixed(1)} tokens/s`);
    }
  }
  trainer.destroy();
  model.destroy();
  const med: Record<string, number> = {};
  for (const [k, v] of Object.entries(roundsOut)) if (v.length) med[k] = median(v);
  const ratios: Record<string, number> = {};
  for (const k of Object.keys(med)) if (k !== "engine") ratios[`engine/${k}`] = med.engine / med[k];
  return { config: c, rounds: roundsOut, medianTokensPerS: med, ratios, notes };
}

/**
 * The fastest tiled candidate of each kind (f32; f16 operands with f32 sums; f16 arithmetic) and the f16
 * ones' GFLOP/s over the f32 one's: the "f16 matmul >= 1.6x f32" figure. Undefined without f16 rows.
 */
export function tiledPrecisionRatio(kernels: KernelResult[]): string | undefined {
  const best = (kind: string) =>
    kernels
      .filter((k) => k.name.startsWith("tiled ") && k.name.split(" ").slice(2).join(" ") === kind)
      .reduce<KernelResult | undefined>((x, k) => (!x || k.gflops > x.gflops ? k : x), undefined);
  const [f32, f16, f16acc] = ["", "f16", "f16acc"].map(best);
  if (!f32 || !f16 || !f16acc) return undefined;
  const row = (k: KernelResult) => `${k.name.split(" ")[1]} ${k.gflops.toFixed(1)} GFLOP/s`;
  return `tiled best: f32 ${row(f32)}; f16 operands ${row(f16)}, ${(f16.gflops / f32.gflops).toFixed(2)}x ` +
    `f32; f16 arithmetic (f16acc) ${row(f16acc)}, ${(f16acc.gflops / f32.gflops).toFixed(2)}x f32`;
}

/** The results as a text table. */
export function formatResults(r: BenchResults): string {
  const lines = [
    `${describeLine(r.device)}${r.quick ? " (quick shapes)" : ""}; load average ${
      r.loadavg.start.join(" ")
    } at the ` +
    `start, ${r.loadavg.end?.join(" ")} at the end`,
    "",
  ];
  lines.push(
    `${"kernel".padEnd(34)} ${"shape".padEnd(22)} ${"ms".padStart(9)} ${"GFLOP/s".padStart(9)} ${
      "GB/s".padStart(8)
    } ${"x reference".padStart(12)}`,
  );
  for (const k of r.kernels) {
    const vs = k.ofCeiling === undefined
      ? ""
      : `${k.ofCeiling.toFixed(2)} ${k.bound === "compute" ? "mm" : "copy"}`;
    lines.push(
      `${k.name.padEnd(34)} ${k.shape.padEnd(22)} ${k.ms.toFixed(2).padStart(9)} ${
        k.gflops.toFixed(2).padStart(9)
      } ${k.gbps.toFixed(2).padStart(8)} ${vs.padStart(12)}`,
    );
  }
  lines.push(
    `(x reference: GFLOP/s over the register-tiled matmul's ("mm") or GB/s over the vec4 copy's, same adapter)`,
  );
  const tiledRatio = tiledPrecisionRatio(r.kernels);
  if (tiledRatio) lines.push(tiledRatio);
  lines.push("");
  for (const t of r.train) {
    const c = t.config;
    lines.push(
      `train step ${t.name} (L${c.L} C${c.C} H${c.H} T${c.T} B${c.B} V${c.V}): ${
        t.msPerStep.toFixed(0)
      } ms/step, ` +
        `${t.tokensPerS.toFixed(1)} tokens/s`,
    );
    const plain = t.name.endsWith(" halfSums") && r.train.find((p) => p.name === t.name.slice(0, -9));
    if (plain) {
      lines.push(`  f16 arithmetic over f16 operands: ${(t.tokensPerS / plain.tokensPerS).toFixed(2)}x`);
    }
  }
  const g = r.generation;
  if (g) {
    lines.push(
      `generation (L${g.config.L} C${g.config.C} V${g.config.V}, ${g.config.batch} x ${g.config.context} + ` +
        `${g.config.newTokens}): cached ${g.cachedTokensPerS.toFixed(1)} tokens/s, recompute ` +
        `${g.recomputeTokensPerS.toFixed(1)} tokens/s (timed at ${g.recomputeMeasuredAt.length} of ` +
        `${g.config.newTokens} lengths, interpolated), speed-up ${g.speedup.toFixed(1)}x`,
    );
  }
  if (r.memory) {
    const m = r.memory;
    const mb = (b: number) =>
      b >= 2 ** 24 ? `${(b / 2 ** 20).toFixed(0)} MiB` : `${(b / 2 ** 10).toFixed(0)} KiB`;
    lines.push(
      `GPU memory, ${m.config}: allocated ${mb(m.allocatedBytes)}; minimum ${mb(m.minimumBytes)} ` +
        `(${mb(m.paramStateBytes)} = 16 B x ${m.params} params, + ${mb(m.activationBytes)} activations)`,
    );
  }
  if (r.profile) {
    const p = r.profile, c = p.config;
    lines.push(
      "",
      `step profile (L${c.L} C${c.C} H${c.H} T${c.T} B${c.B} V${c.V}, each dispatch timed alone): ` +
        `${p.totalMs.toFixed(0)} ms of kernels, matmul ${p.matmulMs.toFixed(0)} ms, outside matmuls ` +
        `${(100 * p.outsideMatmul).toFixed(1)}%`,
    );
    for (const [k, v] of Object.entries(p.ms).sort((a, b) => b[1] - a[1])) {
      lines.push(
        `  ${k.padEnd(38)} ${v.toFixed(1).padStart(8)} ms ${(100 * v / p.totalMs).toFixed(1).padStart(5)}%`,
      );
    }
  }
  if (r.compare) {
    lines.push("", `compare (tokens/s, median of rounds):`);
    for (const [k, v] of Object.entries(r.compare.medianTokensPerS)) {
      lines.push(`  ${k.padEnd(14)} ${v.toFixed(1)}`);
    }
    for (const [k, v] of Object.entries(r.compare.ratios)) lines.push(`  ${k.padEnd(26)} ${v.toFixed(2)}x`);
    for (const n of r.compare.notes) lines.push(`  note: ${n}`);
  }
  return lines.join("\n");
}

/** Run the benchmark with `args`; `gpu` reuses a device (tests). Resolves with the results. */
export async function main(args: string[], gpu?: Gpu): Promise<BenchResults | undefined> {
  const v = parseCommand(
    "bench",
    "Speed of the engine's kernels, training step and generation.",
    SPEC,
    args,
  );
  if (!v) return undefined;
  const int = (name: keyof typeof SPEC, min = 1) => numberOption(v[name], name, { min, integer: true });
  const quick = v.quick === true;
  const steps = int("steps");
  const small = quick
    ? { L: 1, C: 32, H: 2, T: 16, B: 2, V: 128 }
    : { L: int("layers"), C: int("width"), H: int("heads"), T: int("seq"), B: int("batch"), V: int("vocab") };
  const jsonPath = required(v.json, "json");
  const parts = parseParts(v.only);
  const part = (p: BenchPart) => parts.includes(p);
  const device = gpu ?? await openGpu(v, { quiet: true });
  console.error(`bench on ${describeLine(device.describe())}`);
  const shapes: KernelShapes = quick
    ? { N: 64, C: 64, H: 2, B: 2, T: 32, V: 1000, adamN: 1 << 14 }
    : { N: 1024, C: 768, H: 12, B: 2, T: 512, V: 50257, adamN: 1 << 23 };
  const results: BenchResults = {
    adapter: device.adapterName,
    device: device.describe(),
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    quick,
    loadavg: { start: Deno.loadavg() },
    parts,
    kernels: part("kernels") ? await benchKernels(device, shapes, steps, quick) : [],
    train: [],
  };
  // The training steps in --precision (named so in the table when f16), each followed by its f16
  // arithmetic twin under --half-sums (the same model and batch, only the linears' sums differ).
  const precision = precisionFlag(v.precision);
  const halfSums = halfSumsFlag(v["half-sums"], precision);
  const tag = precision === "f32" ? "" : ` ${precision}`;
  const twins = halfSums ? [{}, { halfSums: true }] : [{}];
  const named = (name: string, o: PrecisionOptions) => `${name}${tag}${o.halfSums ? " halfSums" : ""}`;
  let smallAllocated = 0;
  for (const o of part("train") ? twins : []) {
    const run = await benchTrain(device, named("small", o), small, modelConfig(small), steps, precision, o);
    results.train.push(run.result);
    smallAllocated = run.allocated;
    run.destroy();
  }
  // The memory report: 124M when it runs, else the small config.
  let mem = {
    name: `small config training, B=${small.B} T=${small.T}`,
    cfg: modelConfig(small),
    B: small.B,
    T: small.T,
    allocated: part("train")
      ? smallAllocated
      : allocatedForTraining(device, modelConfig(small), small.B, small.T, precision),
  };
  if (!quick && v["skip-124m"] !== true) {
    const big = { L: 12, C: 768, H: 12, T: int("big-seq"), B: int("big-batch"), V: 50257 };
    for (const o of part("train") ? twins : []) {
      const bigRun = await benchTrain(
        device,
        named("gpt2-124M", o),
        big,
        GPT2_124M,
        Math.max(1, steps - 1),
        precision,
        o,
      );
      results.train.push(bigRun.result);
      bigRun.destroy();
    }
    const B = int("mem-batch"), T = int("mem-seq");
    mem = {
      name: `GPT-2 124M training, B=${B} T=${T} (allocated, not run)`,
      cfg: { ...GPT2_124M, nPositions: Math.max(GPT2_124M.nPositions, T) },
      B,
      T,
      allocated: allocatedForTraining(device, GPT2_124M, B, T, precision),
    };
  }
  const params = parameterCount(mem.cfg);
  const activationBytes = 4 *
    keptActivationFloats(mem.cfg, mem.B, mem.T, device.limits.maxStorageBufferBindingSize, precision);
  if (part("memory")) {
    results.memory = {
      config: mem.name,
      params,
      allocatedBytes: mem.allocated,
      minimumBytes: 16 * params + activationBytes,
      paramStateBytes: 16 * params,
      activationBytes,
    };
  }
  if (part("profile")) results.profile = await profileStep(device, small);
  if (part("generation")) {
    results.generation = await benchGeneration(
      device,
      quick ? { L: 1, C: 32, H: 2, V: 128, batch: 2, context: 8, newTokens: 8 } : {
        L: small.L,
        C: small.C,
        H: small.H,
        V: small.V,
        batch: 4,
        context: int("gen-context"),
        newTokens: int("gen-new"),
      },
    );
  }
  if (v.compare === true && part("compare")) {
    results.compare = await compare(device, small, steps, int("rounds"), peerDir(v.peers));
  }
  results.loadavg.end = Deno.loadavg();
  console.log(formatResults(results));
  const dir = jsonPath.includes("/") ? jsonPath.slice(0, jsonPath.lastIndexOf("/")) : "";
  if (dir) await Deno.mkdir(dir, { recursive: true });
  await writeFileAtomic(jsonPath, JSON.stringify(results, null, 2) + "\n");
  console.error(`wrote ${jsonPath}`);
  return results;
}

if (import.meta.main) await runMain(async () => void await main(Deno.args));
