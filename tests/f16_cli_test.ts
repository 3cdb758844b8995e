/**
 * `--precision f16` on `score`, `sft` and `simpo` (the tiny fixture model, V = 61): the same runs in f32 and
 * f16 agree within f16 tolerances (the gradient norm too: the f16 step reports it unscaled), f16 metrics
 * carry the loss scale and the skip count, f32 metrics do not, and a bad value is a usage error naming
 * the flag. Skipped with a note without `shader-f16`.
 */
import assert from "node:assert/strict";
import { main as score } from "../cli/score.ts";
import { main as sft } from "../cli/sft.ts";
import { main as simpo } from "../cli/simpo.ts";
import { assertClose, testGpu } from "./util.ts";

const FIXTURE = new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname;
const gpu = await testGpu();
const ignore = !gpu.shaderF16;
if (ignore) console.log(`f16 CLI tests skipped: adapter ${gpu.adapterName} has no shader-f16`);

/** A temporary model directory with the fixture's config and weights, and JSON-lines inputs. */
async function setup(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "f16_cli_" });
  for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(FIXTURE + f, `${dir}/${f}`);
  const seq = (n: number, s: number) => Array.from({ length: n }, (_, i) => (s + 7 * i) % 60);
  const lines = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
  await Deno.writeTextFile(
    `${dir}/seqs.jsonl`,
    lines([seq(14, 1), seq(9, 5), seq(16, 11), seq(12, 2)].map((tokens) => ({ tokens }))),
  );
  await Deno.writeTextFile(
    `${dir}/pairs.jsonl`,
    lines([
      { prompt: seq(5, 1), chosen: seq(6, 3), rejected: seq(4, 8) },
      { prompt: seq(3, 9), chosen: seq(7, 2), rejected: seq(8, 4) },
    ]),
  );
  return dir;
}

Deno.test({
  name: "score --precision f16: token log-probs within 1e-3 of f32 (measured 7e-5)",
  ignore,
  fn: async () => {
    const dir = await setup();
    try {
      const run = (p: string) =>
        score([
          "--model",
          dir,
          "--input",
          `${dir}/seqs.jsonl`,
          "--output",
          `${dir}/${p}.jsonl`,
          "--precision",
          p,
        ], gpu);
      const [f32, f16] = [await run("f32"), await run("f16")];
      f32.forEach((l, i) => {
        assertClose(`score seq ${i}`, f16[i].token_logprobs, l.token_logprobs, { rtol: 0, atol: 1e-3 });
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "sft and simpo --precision f16 at lr 0: loss and unscaled grad norm within 0.1% of f32, scale in metrics",
  ignore,
  fn: async () => {
    const dir = await setup();
    try {
      const common = ["--model", dir, "--steps", "2", "--lr", "0", "--dropout", "0", "--batch-size", "2"];
      for (const [name, main, input] of [["sft", sft, "--data"], ["simpo", simpo, "--pairs"]] as const) {
        const file = `${dir}/${name === "sft" ? "seqs" : "pairs"}.jsonl`;
        const run = (p: string) =>
          main([...common, input, file, "--out", `${dir}/${name}_${p}`, "--precision", p], gpu);
        const [f32, f16] = [await run("f32"), await run("f16")];
        for (const [k, row] of f16.entries()) {
          assertClose(`${name} step ${k + 1} loss`, [row.loss], [f32[k].loss], { rtol: 1e-3, atol: 0 });
          assertClose(`${name} step ${k + 1} grad_norm`, [row.grad_norm], [f32[k].grad_norm], {
            rtol: 1e-3,
            atol: 0,
          });
          assert.equal(row.loss_scale, 2 ** 16);
          assert.equal(row.skipped_steps, 0);
          assert.equal(f32[k].loss_scale, undefined);
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("--precision takes f32 or f16 only: another value is a usage error naming the flag", async () => {
  const dir = await setup();
  try {
    await assert.rejects(
      () => score(["--model", dir, "--input", `${dir}/seqs.jsonl`, "--precision", "bf16"], gpu),
      /--precision: precision must be one of f32, f16, got "bf16"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
