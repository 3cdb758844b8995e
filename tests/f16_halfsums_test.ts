/**
 * f16 arithmetic in the model (`usePrecision("f16", { halfSums: true })`, config key `halfSums`, flag
 * `--half-sums`): a tiny GPT-2 trained with it tracks the f32 run; in the GPU kernel family (the only one
 * whose matmul has f16 arithmetic) its bits differ from plain f16's, in the CPU family they are plain
 * f16's; scoring follows the model's setting; asking for it without f16 is an error naming both settings
 * (model, config, flags); the flags reach the model (score, sft) and the run config (train). The
 * training tests need `shader-f16` (lavapipe, GPUs) and are skipped with a note without it.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects, throws } from "node:assert/strict";
import { GPT2 } from "../model/gpt2.ts";
import { Trainer } from "../model/trainer.ts";
import { BatchScorer } from "../model/score.ts";
import { checkResumeConfig } from "../interaction/loop.ts";
import { mergeConfig, TINY, type TrainConfig, validateTrainConfig } from "../interaction/config.ts";
import { main as train } from "../cli/train.ts";
import { main as score } from "../cli/score.ts";
import { main as sft } from "../cli/sft.ts";
import { testGpu } from "./util.ts";
import { sameBits, strideBatch, TINY_F16_CONFIG, worstDiff } from "./tiny_training.ts";

const gpu = await testGpu();
const noF16 = !gpu.shaderF16;
if (noF16) console.log(`halfSums training tests skipped: adapter ${gpu.adapterName} has no shader-f16`);
/** Only the GPU family's tiled matmul runs f16 arithmetic; the CPU family keeps f32 sums. */
const arithmetic = gpu.kernels === "gpu";
console.log(`  ${gpu.adapterName}, ${gpu.kernels} kernel family: halfSums ${arithmetic ? "on" : "ignored"}`);

const STEPS = 20;

Deno.test({
  name: `halfSums: a tiny GPT-2 trained ${STEPS} steps tracks f32 (loss within 0.01, weights within 3%); ` +
    "its bits are plain f16's only in the CPU family",
  ignore: noF16,
  fn: async () => {
    const run = async (precision: "f32" | "f16", halfSums = false) => {
      const model = GPT2.create(gpu, TINY_F16_CONFIG, undefined, 3).usePrecision(precision, { halfSums });
      assertEquals(model.halfSums, halfSums);
      const trainer = new Trainer(model);
      const losses: number[] = [];
      let skipped = 0;
      for (let s = 0; s < STEPS; s++) {
        const m = await trainer.trainStep(strideBatch(s % 4), { kind: "lm" }, 3e-3);
        losses.push(m.loss);
        if (m.skipped) skipped++;
      }
      const weights = await model.getWeights();
      trainer.destroy();
      model.destroy();
      return { losses, weights, skipped };
    };
    const f32 = await run("f32"), f16 = await run("f16"), sums = await run("f16", true);
    const gap = (a: number[], b: number[]) => Math.max(...a.map((l, i) => Math.abs(l - b[i])));
    const w = worstDiff(sums.weights, f32.weights), w16 = worstDiff(f16.weights, f32.weights);
    console.log(
      `  f32 loss ${f32.losses[0].toFixed(4)} -> ${f32.losses.at(-1)!.toFixed(4)}; worst step gap to f32: ` +
        `halfSums ${gap(sums.losses, f32.losses).toExponential(2)}, f16 ${
          gap(f16.losses, f32.losses).toExponential(2)
        }; worst weight rel diff: halfSums ${w.rel.toExponential(2)} (${w.name}), f16 ${
          w16.rel.toExponential(2)
        }; skipped ${sums.skipped}`,
    );
    assertEquals(sums.skipped, 0);
    assert(f32.losses.at(-1)! < f32.losses[0] - 1, "the f32 run must learn (loss down by > 1 nat)");
    // Measured on lavapipe: loss 3.0e-4, weights 1.7% in the GPU family (plain f16: 5.2e-4, 1.5%);
    // 4.0e-4 and 1.2% in the CPU family, plain f16's.
    assert(gap(sums.losses, f32.losses) < 0.01, `halfSums loss strays from f32's`);
    assert(w.rel < 0.03, `halfSums weights stray ${w.rel} (relative) from f32's in ${w.name}`);
    if (arithmetic) {
      assert(!sameBits(sums.weights, f16.weights), "the GPU family's halfSums must change the bits");
    } else {
      assert(sameBits(sums.weights, f16.weights), "the CPU family must give plain f16's bits");
      assertEquals(sums.losses, f16.losses);
    }
  },
});

Deno.test({
  name:
    "halfSums scoring follows the model: log-probs within 2e-3 of f32, plain f16's bits in the CPU family",
  ignore: noF16,
  fn: async () => {
    const seqs = Array.from({ length: 5 }, (_, i) => [...strideBatch(i, 1, 14 - i).inputs]);
    const lps = async (precision: "f32" | "f16", halfSums = false) => {
      const model = GPT2.create(gpu, TINY_F16_CONFIG, undefined, 5).usePrecision(precision, { halfSums });
      const scorer = new BatchScorer(model);
      const out = (await scorer.tokenLogprobs(seqs, { batchSize: 5 })).flatMap((lp) => [...lp]);
      scorer.destroy();
      return out;
    };
    const f32 = await lps("f32"), f16 = await lps("f16"), sums = await lps("f16", true);
    const worst = Math.max(...sums.map((v, i) => Math.abs(v - f32[i])));
    console.log(`  ${sums.length} token log-probs; worst |halfSums - f32| ${worst.toExponential(2)}`);
    // Measured on lavapipe: 1.8e-4 (GPU family), 7.2e-5 (CPU family, plain f16's).
    assert(worst < 2e-3, `halfSums log-probs stray ${worst} from f32's`);
    if (arithmetic) assert(sums.some((v, i) => !Object.is(v, f16[i])), "halfSums must change the bits");
    else assertEquals(sums, f16);
  },
});

Deno.test("halfSums without precision f16 is an error naming both; the model stays as it was", () => {
  const model = GPT2.create(gpu, TINY_F16_CONFIG, undefined, 1);
  throws(
    () => model.usePrecision("f32", { halfSums: true }),
    /usePrecision: halfSums needs precision f16 .*got precision f32/,
  );
  assertEquals([model.precision, model.halfSums], ["f32", false]);
  if (!noF16) {
    // Switching halfSums keeps the f16 copies; f32 drops both.
    model.usePrecision("f16", { halfSums: true });
    const copies = model.half;
    assertEquals([model.precision, model.halfSums], ["f16", true]);
    model.usePrecision("f16");
    assertEquals([model.half === copies, model.halfSums], [true, false]);
    model.usePrecision("f32");
    assertEquals([model.precision, model.halfSums], ["f32", false]);
  }
  model.destroy();
});

Deno.test("config halfSums: false by default, true only with precision f16, may change on resume", () => {
  assertEquals(TINY.halfSums, false);
  const with16 = validateTrainConfig({ ...TINY, precision: "f16", halfSums: true });
  assertEquals(with16.halfSums, true);
  throws(
    () => validateTrainConfig({ ...TINY, halfSums: true }, { where: "run.json" }),
    /run\.json: "halfSums": true needs "precision" f16 .*got "precision" f32/,
  );
  throws(() => mergeConfig(TINY, { halfSums: "yes" }, "run.json"), /halfSums/);
  // A run started in f16 with f16 arithmetic continues in f32 (on an adapter without shader-f16).
  const { outDir: _o, ...started } = with16;
  checkResumeConfig(started, { ...TINY, precision: "f32", halfSums: false });
  checkResumeConfig(started, { ...with16, halfSums: false });
});

/** What `train` prints for --print-config (the resolved config, which config.json records). */
async function printedConfig(args: string[]): Promise<TrainConfig> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    await train(["--print-config", ...args]);
  } finally {
    console.log = log;
  }
  return JSON.parse(lines.join("\n"));
}

Deno.test("train --half-sums: the run config records halfSums; without f16 a usage error", async () => {
  assertEquals((await printedConfig(["--precision", "f16", "--half-sums"])).halfSums, true);
  assertEquals((await printedConfig(["--precision", "f16"])).halfSums, false);
  await rejects(
    () => printedConfig(["--half-sums"]),
    /--half-sums needs --precision f16 .*got --precision f32/,
  );
});

const FIXTURE = new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname;

Deno.test({
  name: "score and sft --half-sums reach the model: plain f16's numbers only in the CPU family",
  ignore: noF16,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "f16_halfsums_" });
    try {
      for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(FIXTURE + f, `${dir}/${f}`);
      // The fixture's V is 61; 4 sequences of up to 16 tokens give the linears more than 16 rows.
      const seq = (n: number, s: number) => Array.from({ length: n }, (_, i) => (s + 7 * i) % 60);
      const lines = [seq(14, 1), seq(9, 5), seq(16, 11), seq(12, 2)].map((tokens) =>
        JSON.stringify({ tokens })
      );
      await Deno.writeTextFile(`${dir}/seqs.jsonl`, lines.join("\n") + "\n");
      const scored = async (flags: string[]) =>
        (await score(
          ["--model", dir, "--input", `${dir}/seqs.jsonl`, "--output", `${dir}/o.jsonl`, ...flags],
          gpu,
        ))
          .flatMap((l) => l.token_logprobs);
      const trained = async (flags: string[], out: string) =>
        (await sft([
          ...["--model", dir, "--data", `${dir}/seqs.jsonl`, "--out", `${dir}/${out}`],
          ...["--steps", "2", "--dropout", "0", "--batch-size", "4"],
          ...flags,
        ], gpu)).map((r) => [r.loss, r.grad_norm]);
      const f16 = ["--precision", "f16"], sums = [...f16, "--half-sums"];
      const [s16, sSums] = [await scored(f16), await scored(sums)];
      const [t16, tSums] = [await trained(f16, "a"), await trained(sums, "b")];
      const f32 = await scored([]);
      const worst = Math.max(...sSums.map((v, i) => Math.abs(v - f32[i])));
      console.log(`  score: worst |halfSums - f32| ${worst.toExponential(2)}; sft ${JSON.stringify(tSums)}`);
      assert(worst < 2e-3, `score --half-sums strays ${worst} from f32`);
      if (arithmetic) {
        assert(sSums.some((v, i) => !Object.is(v, s16[i])), "score --half-sums must change the bits");
        assert(
          tSums.flat().some((v, i) => !Object.is(v, t16.flat()[i])),
          "sft --half-sums must change the bits",
        );
      } else {
        assertEquals([sSums, tSums], [s16, t16]);
      }
      await rejects(
        () => score(["--model", dir, "--input", `${dir}/seqs.jsonl`, "--half-sums"], gpu),
        /--half-sums needs --precision f16 .*got --precision f32/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
