/**
 * `deno task train --precision f16` end to end: a tiny run whose loss scale starts too high (steps skipped
 * and the scale halved) and grows every 3 clean steps, stopped at the word budget after round 1 and
 * resumed after raising it, reaches the uninterrupted run's weights, metrics (loss scales and skip counts
 * included) and loss-scaler state bit for bit. And asking for f16 on an adapter without `shader-f16`
 * (llvmpipe on GL) fails naming the feature and the adapter, before the run directory is written.
 */
import assert from "node:assert/strict";
import type { MetricsRecord, RunState } from "../interaction/loop.ts";
import { type TrainConfig } from "../interaction/config.ts";
import { tinyRunConfig } from "./tiny_training.ts";
import { testGpu } from "./util.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const gpu = await testGpu();
const noF16 = !gpu.shaderF16;
if (noF16) console.log(`f16 resume test skipped: adapter ${gpu.adapterName} has no shader-f16`);

/** 2 rounds of 16 datapoints, batch 4, width 32, one layer, the corpus teacher; f16 with a lively scaler. */
function config(wordBudget: number): Partial<TrainConfig> {
  return tinyRunConfig(8, {
    seed: 7,
    nSftEpochs: 3,
    checkpointWords: [[5000, 1000]],
    precision: "f16",
    // 2^28 overflows f16 in the first backward passes; growth every 3 clean steps overflows again later.
    lossScale: { initScale: 2 ** 28, growthInterval: 3 },
    wordBudget,
    budgetCounts: ["corpusContext"],
  });
}

async function train(args: string[], env: Record<string, string> = {}) {
  const p = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/train.ts", ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: p.code, out: dec.decode(p.stderr) + dec.decode(p.stdout) };
}

/** Metrics lines without their wall-clock fields. */
async function metrics(dir: string): Promise<Omit<MetricsRecord, "time" | "tokensPerSec">[]> {
  return (await Deno.readTextFile(`${dir}/metrics.jsonl`)).split("\n").filter((l) => l !== "").map((l) => {
    const { time: _t, tokensPerSec: _s, ...rest } = JSON.parse(l) as MetricsRecord;
    return rest;
  });
}

Deno.test({
  name: "train --precision f16 stopped after round 1 and resumed matches the straight run bit for bit",
  ignore: noF16,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "f16_resume_" });
    try {
      const a = `${dir}/a`, b = `${dir}/b`;
      await Deno.writeTextFile(`${dir}/a.json`, JSON.stringify(config(0)));
      const straight = await train(["--config", `${dir}/a.json`, "--out", a]);
      assert.equal(straight.code, 0, straight.out);
      const ma = await metrics(a);
      // Round 1's corpus contexts fit the budget, round 2's do not: the run stops between them.
      const round1 = ma.filter((m) => m.round === 0).at(-1)!.words!.total.corpusContext;
      await Deno.writeTextFile(`${dir}/b.json`, JSON.stringify(config(round1 + 1)));
      const stopped = await train(["--config", `${dir}/b.json`, "--out", b]);
      assert.notEqual(stopped.code, 0, "the budget must stop the run before round 2");
      const saved = JSON.parse(await Deno.readTextFile(`${b}/state/state.json`)) as RunState;
      assert.equal(saved.round, 1);
      const runConfig = JSON.parse(await Deno.readTextFile(`${b}/config.json`));
      await Deno.writeTextFile(`${b}/config.json`, JSON.stringify({ ...runConfig, wordBudget: 0 }));
      const resumed = await train(["--resume", b]);
      assert.equal(resumed.code, 0, resumed.out);

      const mb = await metrics(b);
      const skips = ma.at(-1)!.skippedSteps!;
      const scales = [...new Set(ma.map((m) => m.lossScale))].map((s) => Math.log2(s!));
      console.log(
        `  ${ma.length} steps, ${skips} skipped; scales (log2) ${scales.join(" ")}; state at resume: ` +
          `${JSON.stringify(saved.scaler)}`,
      );
      assert(skips > 0 && saved.scaler!.skipped > 0, "the run must skip overflowed steps");
      assert(ma.some((m, i) => i > 0 && m.lossScale! > ma[i - 1].lossScale!), "the scale must grow");
      assert.deepEqual(mb, ma);
      const [sa, sb] = [a, b].map((d) =>
        JSON.parse(Deno.readTextFileSync(`${d}/state/state.json`)) as RunState
      );
      assert.deepEqual(sb.scaler, sa.scaler);
      for (
        const f of [
          "state/model.safetensors",
          "state/optimizer.safetensors",
          "checkpoints/round2_po/model.safetensors",
        ]
      ) {
        assert.deepEqual(await Deno.readFile(`${b}/${f}`), await Deno.readFile(`${a}/${f}`), f);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("train --precision f16 on GL (llvmpipe, no shader-f16) fails naming the feature, writing nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "f16_gl_" });
  try {
    const out = `${dir}/run`;
    const r = await train(["--precision", "f16", "--out", out, "--rounds", "1"], {
      DENO_WEBGPU_BACKEND: "gl",
    });
    if (r.code === 0 || !/shader-f16|adapter/.test(r.out)) {
      // A GL adapter with shader-f16, or none at all: nothing to check on this machine.
      console.log(`  skipped: the GL backend here did not refuse f16 (exit ${r.code})`);
      return;
    }
    assert.equal(r.code, 1, r.out);
    assert.match(
      r.out,
      /precision f16 needs the WebGPU feature "shader-f16", which the adapter "[^"]+" does not/,
    );
    const written = await Array.fromAsync(Deno.readDir(out)).catch(() => []);
    assert.deepEqual(written, [], "nothing may be written");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
