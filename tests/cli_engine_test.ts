/**
 * The engine commands end to end on the tiny PyTorch fixture: `score` against the fixture's log-probs,
 * `sft` and `simpo` at lr 0 against the fixture's losses, rewards and gradient norm (float64, from
 * tests/make_fixtures.py), training that lowers the loss / widens the margin, text input through a
 * tokenizer.json, the schedule and clipping flags, and malformed input.
 */
import assert from "node:assert/strict";
import { main as score } from "../cli/score.ts";
import { main as sft } from "../cli/sft.ts";
import { main as simpo } from "../cli/simpo.ts";
import {
  BENCH_PARTS,
  interpolate,
  main as bench,
  parseParts,
  sampleLengths,
  tiledPrecisionRatio,
} from "../cli/bench.ts";
import { packPairs, parseTrainOptions, TRAIN_OPTIONS } from "../cli/lm_data.ts";
import { learningRate } from "../interaction/schedule.ts";
import { BASELINE_ADAMW } from "../model/trainer.ts";
import { loadCheckpoint, saveCheckpoint } from "../cli/files.ts";
import { initWeights } from "../model/gpt2.ts";
import { parseSafetensors, type Tensor } from "../model/safetensors.ts";
import { trainBpeFromCounts, trainedBpeJson, wordCounts } from "../model/bpe_train.ts";
import { Tokenizer } from "../model/tokenizer.ts";
import type { GPT2Config } from "../model/config.ts";
import { assertClose, testGpu } from "./util.ts";

const FIXTURE = new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname;

async function reference(): Promise<Map<string, Tensor>> {
  const bytes = await Deno.readFile(FIXTURE + "reference.safetensors");
  return parseSafetensors(bytes, "reference.safetensors").tensors;
}

/** A temporary copy of the fixture model directory. */
async function fixtureCopy(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "cli_engine_" });
  for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(FIXTURE + f, `${dir}/${f}`);
  return dir;
}

async function writeLines(path: string, lines: unknown[]): Promise<void> {
  await Deno.writeTextFile(path, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
}

async function readLines(path: string): Promise<Record<string, number>[]> {
  return (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l));
}

/** The fixture's LM rows as token sequences: inputs up to the last real position, then its target. */
function lmSequences(ref: Map<string, Tensor>): number[][] {
  const [B, T] = ref.get("lm.inputs")!.shape;
  const inp = ref.get("lm.inputs")!.data, tgt = ref.get("lm.targets")!.data, mask = ref.get("lm.mask")!.data;
  return Array.from({ length: B }, (_, b) => {
    let n = 0;
    while (n < T && mask[b * T + n] === 1) n++;
    return [...Array.from(inp.slice(b * T, b * T + n), Number), Number(tgt[b * T + n - 1])];
  });
}

/** The fixture's SimPO batch as pairs: prompt = tokens before the first completion prediction. */
function simpoPairs(ref: Map<string, Tensor>): { prompt: number[]; chosen: number[]; rejected: number[] }[] {
  const [nSeq, T] = ref.get("simpo.inputs")!.shape;
  const inp = ref.get("simpo.inputs")!.data, tgt = ref.get("simpo.targets")!.data;
  const lm = ref.get("simpo.lm_mask")!.data, comp = ref.get("simpo.comp_mask")!.data;
  const rows = Array.from({ length: nSeq }, (_, b) => {
    let n = 0, start = -1;
    while (n < T && lm[b * T + n] === 1) {
      if (start < 0 && comp[b * T + n] === 1) start = n;
      n++;
    }
    const seq = [...Array.from(inp.slice(b * T, b * T + n), Number), Number(tgt[b * T + n - 1])];
    return { prompt: seq.slice(0, start + 1), completion: seq.slice(start + 1) };
  });
  const P = nSeq / 2;
  return rows.slice(0, P).map((c, i) => {
    assert.deepEqual(c.prompt, rows[P + i].prompt, "fixture pairs share their prompt");
    return { prompt: c.prompt, chosen: c.completion, rejected: rows[P + i].completion };
  });
}

Deno.test("score: log-probs match PyTorch's and logprob is their sum", async () => {
  const gpu = await testGpu();
  const ref = await reference();
  const dir = await fixtureCopy();
  const seqs = lmSequences(ref);
  await writeLines(`${dir}/in.jsonl`, seqs.map((tokens) => ({ tokens })));
  const lines = await score(
    ["--model", dir, "--input", `${dir}/in.jsonl`, "--output", `${dir}/out.jsonl`, "--batch-size", "1"],
    gpu,
  );
  assert.deepEqual(await readLines(`${dir}/out.jsonl`), JSON.parse(JSON.stringify(lines)));
  const [, T] = ref.get("lm.inputs")!.shape;
  const logp = ref.get("lm.logp")!.data;
  seqs.forEach((s, b) => {
    const l = lines[b];
    assert.equal(l.n, s.length - 1);
    assertClose(`score row ${b} token_logprobs`, l.token_logprobs, logp.slice(b * T, b * T + l.n), {
      rtol: 1e-4,
      atol: 1e-5,
    });
    let sum = 0;
    for (const x of l.token_logprobs) sum += x;
    assertClose(`score row ${b} logprob = sum`, [l.logprob], [sum], { rtol: 1e-12, atol: 0 });
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("sft: at lr 0 the loss and gradient norm equal PyTorch's; training lowers the loss", async () => {
  const gpu = await testGpu();
  const ref = await reference();
  const dir = await fixtureCopy();
  const seqs = lmSequences(ref);
  await writeLines(`${dir}/data.jsonl`, seqs.map((tokens) => ({ tokens })));
  const base = ["--model", dir, "--data", `${dir}/data.jsonl`, "--batch-size", "2", "--shuffle", "false"];
  // The fixture's values are eval mode's: no dropout (the model's config.json would train with 0.1).
  const still = await sft(
    [...base, "--out", `${dir}/lr0`, "--steps", "1", "--lr", "0", "--dropout", "0"],
    gpu,
  );
  assertClose("sft loss (lr 0)", [still[0].loss], ref.get("lm.loss")!.data, { rtol: 1e-4, atol: 1e-6 });
  let sq = 0;
  for (const [name, t] of ref) {
    if (name.startsWith("lm.grad.")) {
      for (const g of t.data) sq += Number(g) ** 2;
    }
  }
  assertClose("sft grad_norm (lr 0)", [still[0].grad_norm], [Math.sqrt(sq)], { rtol: 1e-3, atol: 1e-7 });

  // 20 steps of constant lr on the same two rows (shuffled): the loss must fall well below its start.
  const out = `${dir}/trained`;
  const rows = await sft([...base, "--out", out, "--steps", "20", "--lr", "1e-2", "--shuffle", "true"], gpu);
  const metrics = await readLines(`${out}/metrics.jsonl`);
  assert.equal(metrics.length, 20);
  assert.deepEqual(metrics, JSON.parse(JSON.stringify(rows)));
  const first = metrics[0].loss, last = metrics[19].loss;
  console.log(`  sft loss ${first.toFixed(4)} -> ${last.toFixed(4)}`);
  assert.ok(last < 0.8 * first, `loss should fall: ${first} -> ${last}`);
  for (const m of metrics) {
    assert.equal(m.lr, 1e-2);
    assert.ok(m.tokens_per_s > 0 && m.grad_norm > 0);
  }
  // The written checkpoint loads and differs from the start.
  const before = await loadCheckpoint(dir), after = await loadCheckpoint(out);
  assert.deepEqual(after.config, before.config);
  const w0 = before.weights.get("h.0.mlp.c_fc.weight")!, w1 = after.weights.get("h.0.mlp.c_fc.weight")!;
  assert.ok(w0.some((x, i) => x !== w1[i]), "training changed the weights");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("simpo: at lr 0 the loss and rewards equal PyTorch's; training widens the margin", async () => {
  const gpu = await testGpu();
  const ref = await reference();
  const dir = await fixtureCopy();
  const pairs = simpoPairs(ref);
  // The packed batch reproduces the fixture's completion mask.
  const [, T] = ref.get("simpo.inputs")!.shape;
  const batch = packPairs(pairs, 60, 16);
  const want = ref.get("simpo.comp_mask")!.data;
  for (let b = 0; b < 4; b++) {
    assert.deepEqual(
      Array.from(batch.completionMask!.slice(b * batch.T, b * batch.T + T)),
      Array.from(want.slice(b * T, (b + 1) * T), Number),
      `completion mask row ${b}`,
    );
  }
  await writeLines(`${dir}/pairs.jsonl`, pairs);
  const base = ["--model", dir, "--pairs", `${dir}/pairs.jsonl`, "--batch-size", "2", "--shuffle", "false"];
  const [m] = await simpo(
    [...base, "--out", `${dir}/lr0`, "--steps", "1", "--lr", "0", "--dropout", "0"],
    gpu,
  );
  const r = Array.from(ref.get("simpo.rewards")!.data, Number);
  const tol = { rtol: 1e-4, atol: 1e-6 };
  assertClose("simpo loss (lr 0)", [m.loss], ref.get("simpo.loss")!.data, tol);
  assertClose("simpo preference loss", [m.simpo_loss], ref.get("simpo.loss_simpo")!.data, tol);
  assertClose("simpo lm loss", [m.lm_loss], ref.get("simpo.loss_lm")!.data, tol);
  assertClose("simpo chosen reward", [m.chosen_reward], [(r[0] + r[1]) / 2], tol);
  assertClose("simpo rejected reward", [m.rejected_reward], [(r[2] + r[3]) / 2], tol);
  assertClose("simpo margin", [m.margin], [(r[0] - r[2] + r[1] - r[3]) / 2], tol);
  assert.equal(m.win_rate, ((r[0] > r[2] ? 1 : 0) + (r[1] > r[3] ? 1 : 0)) / 2);

  const rows = await simpo([...base, "--out", `${dir}/trained`, "--steps", "15", "--lr", "1e-2"], gpu);
  const first = rows[0].margin, last = rows[rows.length - 1].margin;
  console.log(
    `  simpo margin ${first.toFixed(4)} -> ${last.toFixed(4)}, loss ${rows[0].loss.toFixed(4)} -> ${
      rows[rows.length - 1].loss.toFixed(4)
    }`,
  );
  assert.ok(last > first + 0.5, `margin should grow: ${first} -> ${last}`);
  assert.ok(rows[rows.length - 1].loss < rows[0].loss);
  await loadCheckpoint(`${dir}/trained`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("text input goes through the model's tokenizer.json, which is copied to the output", async () => {
  const gpu = await testGpu();
  const corpus = "the cat sat on the mat. the dog sat on the log. a cat and a dog.\n".repeat(4);
  const bpe = trainBpeFromCounts((await wordCounts([corpus])).counts, { vocabSize: 280 });
  const json = trainedBpeJson(bpe);
  const tok = Tokenizer.fromJSON(json, "test tokenizer");
  const config: GPT2Config = {
    vocabSize: tok.vocabSize,
    nPositions: 32,
    nEmbd: 16,
    nLayer: 1,
    nHead: 2,
    layerNormEpsilon: 1e-5,
    bosTokenId: tok.bosId,
    eosTokenId: tok.eosId,
  };
  const dir = await Deno.makeTempDir({ prefix: "cli_engine_text_" });
  await saveCheckpoint(`${dir}/model`, config, initWeights(config, 7), { "tokenizer.json": json });
  const text = "the cat sat on the log.";
  const ids = [tok.bosId, ...tok.encode(text)];
  await writeLines(`${dir}/in.jsonl`, [{ text }, { tokens: ids }]);
  const [a, b] = await score([
    "--model",
    `${dir}/model`,
    "--input",
    `${dir}/in.jsonl`,
    "--output",
    `${dir}/o`,
  ], gpu);
  assert.equal(a.n, ids.length - 1);
  assertClose("text vs ids token_logprobs", a.token_logprobs, b.token_logprobs, { rtol: 1e-6, atol: 1e-7 });

  await writeLines(`${dir}/data.jsonl`, [{ text }, { text: "a dog and a cat." }]);
  await sft(
    ["--model", `${dir}/model`, "--data", `${dir}/data.jsonl`, "--out", `${dir}/out`, "--steps", "2"],
    gpu,
  );
  assert.equal(await Deno.readTextFile(`${dir}/out/tokenizer.json`), json);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("sft: --schedule, --lr, --warmup-steps and --total-steps drive the one schedule; --clip-norm reaches AdamW", async () => {
  const gpu = await testGpu();
  const ref = await reference();
  const dir = await fixtureCopy();
  await writeLines(`${dir}/data.jsonl`, lmSequences(ref).map((tokens) => ({ tokens })));
  const flags = ["--lr", "1e-3", "--schedule", "cosine", "--warmup-steps", "2", "--total-steps", "4"];
  const rows = await sft(
    ["--model", dir, "--data", `${dir}/data.jsonl`, "--out", `${dir}/o`, "--steps", "6", ...flags],
    gpu,
  );
  const schedule = { kind: "cosine" as const, lr: 1e-3, warmupSteps: 2, totalSteps: 4 };
  // Past --total-steps the cosine rises again, as transformers' get_cosine_schedule_with_warmup does.
  assert.deepEqual(rows.map((r) => r.lr), [0, 1, 2, 3, 4, 5].map((k) => learningRate(schedule, k)));
  assert.ok(rows[5].lr > rows[4].lr && rows[4].lr === 0);
  const o = parseTrainOptions({ ...defaults(), "clip-norm": "0.5", "weight-decay": "0.1" });
  assert.deepEqual(o.adamw, { ...BASELINE_ADAMW, clipNorm: 0.5, weightDecay: 0.1 });
  await Deno.remove(dir, { recursive: true });
});

/** The option values of TRAIN_OPTIONS when none is given. */
function defaults(): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(TRAIN_OPTIONS).map(([k, v]) => [k, "default" in v ? v.default : undefined]),
  );
}

Deno.test("malformed input: errors name the file, line and field", async () => {
  const gpu = await testGpu();
  const dir = await fixtureCopy();
  const cases: [string, string, RegExp][] = [
    ["bad.jsonl", '{"tokens":[1,2]}\n{"tokens":[1,\n', /bad\.jsonl:2: not valid JSON/],
    [
      "range.jsonl",
      '{"tokens":[1,2]}\n\n{"tokens":[3, 61]}\n',
      /range\.jsonl:3: "tokens"\[1\] must be a token id in \[0, 61\), found 61/,
    ],
    ["text.jsonl", '{"text":"hello"}\n', /text\.jsonl:1: "text" is text, but .* has no tokenizer\.json/],
    ["keys.jsonl", '{"tokns":[1,2]}\n', /keys\.jsonl:1: expected a "tokens" .* or "text" .* field/],
    [
      "both.jsonl",
      '{"tokens":[1,2],"text":"a"}\n',
      /both\.jsonl:1: expected a "tokens" .* field, exactly one/,
    ],
    [
      "long.jsonl",
      `{"tokens":[${Array(18).fill(1)}]}\n`,
      /long\.jsonl:1: "tokens" has 18 tokens; .* at most 17/,
    ],
  ];
  for (const [name, content, re] of cases) {
    await Deno.writeTextFile(`${dir}/${name}`, content);
    await assert.rejects(score(["--model", dir, "--input", `${dir}/${name}`], gpu), re);
  }
  await Deno.writeTextFile(`${dir}/pairs.jsonl`, '{"prompt":[60,1],"chosen":[2,60]}\n');
  await assert.rejects(
    simpo(["--model", dir, "--pairs", `${dir}/pairs.jsonl`, "--out", `${dir}/o`], gpu),
    /pairs\.jsonl:1: "rejected" must be an array of token ids or a string, found no such field/,
  );
  await Deno.writeTextFile(`${dir}/one.jsonl`, '{"tokens":[60]}\n');
  await assert.rejects(
    sft(["--model", dir, "--data", `${dir}/one.jsonl`, "--out", `${dir}/o`], gpu),
    /one\.jsonl:1: "tokens" has 1 tokens; at least 2 are needed/,
  );
  await assert.rejects(
    sft(["--model", dir, "--data", `${dir}/one.jsonl`, "--out", `${dir}/o`, "--schedule", "linear"], gpu),
    /--schedule must be constant or cosine, got "linear"/,
  );
  await assert.rejects(sft(["--model", dir, "--bogus"], gpu), /Unknown option '--bogus'/);
  // Nothing was written for the failed runs.
  await assert.rejects(Deno.stat(`${dir}/o`), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bench --quick: a smoke run writes finite results and memory at least the arithmetic minimum", async () => {
  const gpu = await testGpu();
  const dir = await Deno.makeTempDir({ prefix: "cli_engine_bench_" });
  const r = (await bench(["--quick", "--steps", "1", "--json", `${dir}/b.json`], gpu))!;
  assert.deepEqual(JSON.parse(await Deno.readTextFile(`${dir}/b.json`)), JSON.parse(JSON.stringify(r)));
  // 14 kernel families and references (3 f16 matmul rows more with shader-f16), rows for the tiled
  // matmul candidates, and a forward and a backward row for each of --quick's two attention candidates.
  const candidateRow = (k: { name: string }) => /^(tiled |attention (fwd|bwd) )/.test(k.name);
  assert.equal(r.kernels.filter((k) => !candidateRow(k)).length, gpu.shaderF16 ? 17 : 14);
  assert.ok(r.kernels.some((k) => k.name.startsWith("tiled ")));
  assert.equal(r.kernels.filter((k) => /^attention (fwd|bwd) /.test(k.name)).length, 4);
  assert.deepEqual(r.device, gpu.describe());
  for (const k of r.kernels) {
    assert.ok(k.ms > 0 && Number.isFinite(k.gflops) && Number.isFinite(k.gbps), k.name);
    // Every kernel is judged against one of the two references measured first.
    assert.ok(k.ofCeiling! > 0 && Number.isFinite(k.ofCeiling!), `${k.name}: ${k.ofCeiling}`);
    assert.ok(k.bound === "compute" ? k.gflops > 0 : k.gbps > 0, k.name);
  }
  assert.deepEqual(r.kernels.slice(0, 2).map((k) => k.ofCeiling), [1, 1]);
  assert.ok(r.train[0].tokensPerS > 0 && r.generation!.cachedTokensPerS > 0 && r.generation!.speedup > 0);
  assert.deepEqual(r.parts, [...BENCH_PARTS]);
  const m = r.memory!;
  assert.equal(m.params, 17376); // L1 C32 V128 T16: wte 4096 + wpe 512 + block 12672 + ln_f 64
  assert.ok(m.allocatedBytes >= m.minimumBytes, `allocated ${m.allocatedBytes} < minimum ${m.minimumBytes}`);
  // The step profile covers every dispatch family of the step, matmuls among them.
  const p = r.profile!;
  const sum = Object.values(p.ms).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(sum - p.totalMs) < 1e-6 * Math.max(1, sum), `${sum} vs ${p.totalMs}`);
  for (const k of ["matmul_NN", "adamw_step", "attention_forward", "embedding_forward"]) {
    assert.ok(Object.keys(p.ms).some((l) => l.startsWith(k)), `profile has no ${k}: ${Object.keys(p.ms)}`);
  }
  assert.ok(p.outsideMatmul >= 0 && p.outsideMatmul <= 1, `${p.outsideMatmul}`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bench: the tiled ratio line takes the fastest candidate of each precision", () => {
  const row = (name: string, gflops: number) => ({ name, shape: "", ms: 1, gflops, gbps: 0 });
  const kernels = [
    row("matmul fwd f16 (x·W)", 900),
    row("tiled a", 100),
    row("tiled b", 120),
    row("tiled a f16", 150),
    row("tiled b f16", 130),
    row("tiled a f16acc", 180),
    row("tiled b f16acc", 210),
  ];
  assert.equal(
    tiledPrecisionRatio(kernels),
    "tiled best: f32 b 120.0 GFLOP/s; f16 operands a 150.0 GFLOP/s, 1.25x f32; " +
      "f16 arithmetic (f16acc) b 210.0 GFLOP/s, 1.75x f32",
  );
  assert.equal(tiledPrecisionRatio(kernels.slice(0, 3)), undefined);
});

Deno.test("bench: recompute lengths are sampled evenly and interpolated linearly", () => {
  assert.deepEqual(sampleLengths(5, 9), [0, 1, 2, 3, 4]);
  assert.deepEqual(sampleLengths(256, 9), [0, 32, 64, 96, 128, 159, 191, 223, 255]);
  const xs = [0, 10, 20];
  const ys = new Map([[0, 1], [10, 2], [20, 4]]);
  assert.equal(interpolate(xs, ys, 0), 1);
  assert.equal(interpolate(xs, ys, 5), 1.5);
  assert.equal(interpolate(xs, ys, 10), 2);
  assert.equal(interpolate(xs, ys, 15), 3);
  assert.equal(interpolate(xs, ys, 20), 4);
  assert.equal(interpolate([3], new Map([[3, 7]]), 0), 7);
});

Deno.test("bench --only: runs just the parts named (the device check's second pass), refuses unknown ones", async () => {
  assert.deepEqual(parseParts(undefined), [...BENCH_PARTS]);
  assert.deepEqual(parseParts("compare, train"), ["train", "compare"]);
  assert.throws(
    () => parseParts("train,speed"),
    /--only "train,speed": expected some of kernels, .*; unknown: speed/,
  );
  assert.throws(() => parseParts(","), /--only ",": expected some of/);
  const gpu = await testGpu();
  const dir = await Deno.makeTempDir({ prefix: "cli_engine_bench_only_" });
  try {
    const r =
      (await bench(["--quick", "--steps", "1", "--only", "train,memory", "--json", `${dir}/b.json`], gpu))!;
    assert.deepEqual(r.parts, ["train", "memory"]);
    assert.deepEqual(r.kernels, []);
    assert.equal(r.train.length, 1);
    assert.ok(r.train[0].tokensPerS > 0);
    assert.ok(r.memory!.allocatedBytes >= r.memory!.minimumBytes);
    assert.equal(r.generation, undefined);
    assert.equal(r.profile, undefined);
    const m = (await bench(["--quick", "--only", "memory", "--json", `${dir}/m.json`], gpu))!;
    assert.deepEqual([m.train.length, m.memory!.params], [0, 17376]);
    assert.ok(m.memory!.allocatedBytes >= m.memory!.minimumBytes);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
