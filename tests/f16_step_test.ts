/**
 * The trainer's step pinned bit for bit: a few short runs (f16 with overflowed steps skipped and the scale
 * grown, with and without clipping, LM and SimPO with dropout; f32 LM and SimPO) hashed (weights, AdamW's
 * moments, and the metrics with the scaler's state) and compared with pins. The pins are the hashes the
 * two-submission f16 step gave (commit e4199df: the norm read on the CPU, then AdamW and a separate cast
 * pass), which the one-submission step reproduces except where it changed on purpose: a clipped f16
 * step's coefficient is now computed in f32 on the GPU, the f32 path's formula on the unscaled norm (it
 * was float64 on the CPU, 1 ulp apart on 3 of 9 steps here), so "f16 lm, clip 1" is pinned to the new
 * step. Under f16 the f16 weight copies AdamW wrote must also equal a fresh cast of the master weights.
 *
 * Bits depend on the adapter, the kernel family and every kernel's arithmetic: the pins cover Mesa's
 * llvmpipe (GL) and lavapipe (Vulkan) in both families; elsewhere the runs are only printed. A change
 * that alters a kernel's rounding on purpose must replace the pins (the test prints the new ones).
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { GPT2 } from "../model/gpt2.ts";
import type { HalfWeights } from "../model/precision.ts";
import { type AdamWConfig, BASELINE_ADAMW, type Batch, type LossSpec, Trainer } from "../model/trainer.ts";
import type { GPT2Config } from "../model/config.ts";
import { testGpu } from "./util.ts";

const gpu = await testGpu();
const device = `${gpu.describe().backend} ${gpu.kernels} ${gpu.adapterName}`;

const CONFIG: GPT2Config = {
  vocabSize: 97,
  nPositions: 16,
  nEmbd: 36,
  nLayer: 2,
  nHead: 3,
  layerNormEpsilon: 1e-5,
  bosTokenId: 96,
  eosTokenId: 96,
};

/** Sequences counting up by a stride (learnable); for SimPO the losing half is shuffled by a fixed rule. */
function batch(i: number, B: number, T: number, simpo: boolean): Batch {
  const n = B * T, V = CONFIG.vocabSize;
  const inputs = new Uint32Array(n), targets = new Uint32Array(n);
  const completionMask = new Float32Array(n);
  for (let b = 0; b < B; b++) {
    const start = (17 * (i * B + b)) % V, stride = 1 + ((i + b) % 3);
    const losing = simpo && b >= B / 2;
    const token = (t: number) => losing ? (start * 7 + 31 * t * t) % V : (start + stride * t) % V;
    for (let t = 0; t < T; t++) {
      inputs[b * T + t] = token(t);
      targets[b * T + t] = token(t + 1);
      completionMask[b * T + t] = t >= T / 2 ? 1 : 0;
    }
  }
  return {
    nSeq: B,
    T,
    inputs,
    targets,
    lmMask: new Float32Array(n).fill(1),
    ...(simpo ? { completionMask } : {}),
  };
}

interface Scenario {
  precision: "f32" | "f16";
  clipNorm: number;
  loss: LossSpec;
  steps: number;
  dropout?: boolean;
  /** f16: the loss scale at the start, high enough that the first steps overflow. */
  initScale?: number;
}

const SIMPO: LossSpec = { kind: "simpo", beta: 2, gamma: 1, lmWeight: 0.2 };
const SCENARIOS: Record<string, Scenario> = {
  "f16 lm, no clipping": {
    precision: "f16",
    clipNorm: 0,
    loss: { kind: "lm" },
    steps: 14,
    initScale: 2 ** 21,
  },
  "f16 lm, clip 1": { precision: "f16", clipNorm: 1, loss: { kind: "lm" }, steps: 14, initScale: 2 ** 21 },
  "f16 simpo, dropout, no clipping": {
    precision: "f16",
    clipNorm: 0,
    loss: SIMPO,
    steps: 10,
    dropout: true,
    initScale: 2 ** 18,
  },
  "f32 lm, clip 1": { precision: "f32", clipNorm: 1, loss: { kind: "lm" }, steps: 6 },
  "f32 simpo, dropout, clip 1": { precision: "f32", clipNorm: 1, loss: SIMPO, steps: 4, dropout: true },
};

/** Hashes of one run: the weights, AdamW's moments, and the metrics of every step with the scaler's state. */
interface Pin {
  weights: string;
  moments: string;
  metrics: string;
}

/** Pins by device (backend, kernel family, adapter), then scenario. */
const PINS: Record<string, Record<string, Pin>> = {
  "vulkan cpu 65541 llvmpipe (LLVM 15.0.6, 256 bits)": {
    "f16 lm, no clipping": {
      weights: "370f72508485f297b2cbc732",
      moments: "3fd058b03bef900c95800988",
      metrics: "f7e7075521abb2272b2b5c38",
    },
    "f16 lm, clip 1": {
      weights: "2b49f672348aa9660d66597b",
      moments: "9614224ef4ec7e4350b268cd",
      metrics: "d0b2d0ca3f782663b3348118",
    },
    "f16 simpo, dropout, no clipping": {
      weights: "6e4afc33a86caec6cf9e8ce7",
      moments: "c5a97942c64b1728321d9fef",
      metrics: "a004d7960dd55a5fcf4251d9",
    },
    "f32 lm, clip 1": {
      weights: "f3a20102f12ad4a749022b64",
      moments: "f7b5156a771babcebdfd56db",
      metrics: "ea4cdd800737846d8850e4ce",
    },
    "f32 simpo, dropout, clip 1": {
      weights: "d7dde09bbad83bb1fefe100b",
      moments: "51fae03e8cac032b0795e509",
      metrics: "e44e83c47881ff6258e18205",
    },
  },
  "vulkan gpu 65541 llvmpipe (LLVM 15.0.6, 256 bits)": {
    "f16 lm, no clipping": {
      weights: "05d7e3f926e709e8aa26f2c1",
      moments: "7a1cb8f6478bff4f7d300c50",
      metrics: "18267254c3886d3ef862ec41",
    },
    "f16 lm, clip 1": {
      weights: "3c3061d9370b0d88507b8eb9",
      moments: "286e70cb4088b43c7be70285",
      metrics: "3a5ce520123930f96e135056",
    },
    "f16 simpo, dropout, no clipping": {
      weights: "0b30e9bf22ab96df3215ee38",
      moments: "3a97c8a0988f777919eb1513",
      metrics: "4c8c81f81f9a9b6f83210c24",
    },
    "f32 lm, clip 1": {
      weights: "2081ea9c9edb6432235ec5d8",
      moments: "32b7e080d35ec15683b6d9f6",
      metrics: "517de2823909aa4db7408899",
    },
    "f32 simpo, dropout, clip 1": {
      weights: "cfbabb835f2fd4418a6ae8e1",
      moments: "87a537d71b3e8432457634ae",
      metrics: "62ef37911c9cf05afd1285e0",
    },
  },
  "gl cpu 65541 llvmpipe (LLVM 15.0.6, 256 bits)": {
    "f32 lm, clip 1": {
      weights: "471662af69dfd5a39883edb2",
      moments: "46e54002218736c4d4fe55d0",
      metrics: "94a7abb5151aea21b7eed62b",
    },
    "f32 simpo, dropout, clip 1": {
      weights: "018df01bc2e833055b4fcf64",
      moments: "e48491d3b652e78177900dcf",
      metrics: "dc49952edf068379cd6deead",
    },
  },
  "gl gpu 65541 llvmpipe (LLVM 15.0.6, 256 bits)": {
    "f32 lm, clip 1": {
      weights: "66903d4fd9aa58a43f523dde",
      moments: "5d610b4d2ec0ab8a25553436",
      metrics: "294a53d73dc556b4e834f149",
    },
    "f32 simpo, dropout, clip 1": {
      weights: "2da1654aa07ee6f8abdacb60",
      moments: "18ab37ba91da49ea1315a8b2",
      metrics: "bffcb75f8cefb75f1713f65e",
    },
  },
};

async function sha(parts: (Float32Array | string)[]): Promise<string> {
  const bytes = parts.map((p) =>
    typeof p === "string" ? new TextEncoder().encode(p) : new Uint8Array(p.buffer)
  );
  const all = new Uint8Array(bytes.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of bytes) {
    all.set(b, at);
    at += b.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(digest.subarray(0, 12), (x) => x.toString(16).padStart(2, "0")).join("");
}

const tensors = (m: Map<string, Float32Array>) => [...m.keys()].sort().map((k) => m.get(k)!);
/** JSON with inf and NaN kept apart (a skipped step's norm). */
const json = (x: unknown) =>
  JSON.stringify(x, (_, v) => typeof v === "number" && !Number.isFinite(v) ? String(v) : v);

/** The copies as the optimiser left them equal a fresh cast of the master weights, bit for bit. */
async function checkHalfCopies(half: HalfWeights): Promise<void> {
  const views = [
    ...half.blocks.flatMap((b) => [b.attn, b.attnProj, b.fc, b.fcProj]),
    ...half.wte.map((c) => c.view),
  ];
  const read = () => Promise.all(views.map((v) => gpu.readU32(v)));
  const written = await read();
  half.cast.run();
  const cast = await read();
  views.forEach((v, i) => {
    if (!written[i].every((x, j) => x === cast[i][j])) {
      throw new Error(`${v.label}: AdamW's f16 copy is not the cast`);
    }
  });
}

async function run(s: Scenario): Promise<Pin> {
  const model = GPT2.create(gpu, CONFIG, undefined, 5).usePrecision(s.precision);
  const adamw: AdamWConfig = { ...BASELINE_ADAMW, clipNorm: s.clipNorm, weightDecay: 0.1 };
  const trainer = new Trainer(model, adamw, {
    // Growth every 3 clean steps overflows again later.
    scaler: { initScale: s.initScale, growthInterval: 3 },
    ...(s.dropout
      ? { dropout: { seed: 11, rates: { embdPdrop: 0.1, attnPdrop: 0.1, residPdrop: 0.1 } } }
      : {}),
  });
  const metrics = [];
  for (let i = 0; i < s.steps; i++) {
    const b = batch(i % 4, s.loss.kind === "simpo" ? 4 : 3, 11, s.loss.kind === "simpo");
    metrics.push(await trainer.trainStep(b, s.loss, 1e-3 * (1 + (i % 3))));
  }
  if (model.half) await checkHalfCopies(model.half);
  const state = await trainer.getState();
  const pin = {
    weights: await sha(tensors(await model.getWeights())),
    moments: await sha([...tensors(state.m), ...tensors(state.v)]),
    metrics: await sha([json(metrics), json(state.scaler ?? null), String(state.step)]),
  };
  const skipped = metrics.filter((m) => m.skipped).length;
  const clipped = s.clipNorm > 0 ? metrics.filter((m) => m.gradNorm > s.clipNorm).length : 0;
  const scales = metrics.map((m) => `${Math.log2(m.lossScale ?? 1)}${m.skipped ? "x" : ""}`);
  console.log(
    `  ${state.step} steps taken (${clipped} clipped), ${skipped} skipped (log2 scale, x = skipped: ${
      scales.join(" ")
    })`,
  );
  trainer.destroy();
  model.destroy();
  return pin;
}

for (const [name, scenario] of Object.entries(SCENARIOS)) {
  Deno.test({
    name: `trainer step pinned bit for bit: ${name}`,
    ignore: scenario.precision === "f16" && !gpu.shaderF16,
    fn: async () => {
      const pin = await run(scenario);
      const expected = PINS[device]?.[name];
      console.log(`  ${JSON.stringify(device)}: ${JSON.stringify({ [name]: pin })}`);
      if (!expected) {
        console.log(`  no pin for this device: printed only`);
        return;
      }
      assertEquals(pin, expected);
    },
  });
}
