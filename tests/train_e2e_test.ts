/**
 * `deno task train` end to end, as a subprocess, with the teacher served over real HTTP on loopback by
 * the fake server (tests/teacher_server.ts): vLLM's chat API for two rounds with a dead server in the
 * fleet and scripted faults (503, a hang past the timeout, a body that is not JSON, an empty answer, 429),
 * then llama.cpp's `/completion` for one round. Checks every file of the run directory, that the
 * checkpoints load as GPT-2 models, and that the LM loss falls.
 */
import assert from "node:assert/strict";
import { deadUrl, fakeAnswer, type Fault, startTeacherServer } from "./teacher_server.ts";
import type { InteractionRecord, MetricsRecord, RunState } from "../interaction/loop.ts";
import { TINY, type TrainConfig } from "../interaction/config.ts";
import { tinyRunConfig } from "./tiny_training.ts";
import { loadCheckpoint } from "../cli/files.ts";
import { GPT2 } from "../model/gpt2.ts";
import { Tokenizer } from "../model/tokenizer.ts";
import { findCheckpoints } from "../eval/curve.ts";
import { testGpu } from "./util.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** A run small enough for a loaded CPU: 16 datapoints of 16 + 16 tokens, 8 new tokens, width 32. */
function smallConfig(overrides: Partial<TrainConfig> = {}): Partial<TrainConfig> {
  return tinyRunConfig(16, { seed: 3, nSftEpochs: 2, checkpointWords: [[3000, 250]], ...overrides });
}

/** Run `deno run -A cli/train.ts args` to completion; returns its exit code and output. */
async function train(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/train.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function jsonl<T>(text: string): T[] {
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as T);
}

/** Every file the issue asks of a finished run, checked for shape and consistency. */
async function checkRun(dir: string, rounds: number, steps: { sft: number; po: number }) {
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`)) as TrainConfig;
  assert.deepEqual(Object.keys(config).sort(), Object.keys(TINY).sort(), "config.json has every setting");
  const tokenizer = Tokenizer.fromJSON(await Deno.readTextFile(`${dir}/tokenizer.json`), "run tokenizer");

  // metrics.jsonl: one line per step with the fields.
  const metrics = jsonl<MetricsRecord>(await Deno.readTextFile(`${dir}/metrics.jsonl`));
  assert.equal(metrics.length, rounds * (steps.sft + steps.po));
  metrics.forEach((m, i) => {
    assert.equal(m.step, i + 1);
    for (const k of ["lmLoss", "lr", "gradNorm", "wordsSeen", "tokensPerSec"] as const) {
      assert.ok(Number.isFinite(m[k]), `metrics line ${i + 1}: ${k} = ${m[k]}`);
    }
    if (m.phase === "po") {
      for (const k of ["simpoLoss", "chosenReward", "rejectedReward", "margin", "winRate"] as const) {
        assert.ok(Number.isFinite(m[k]), `metrics line ${i + 1}: ${k} = ${m[k]}`);
      }
    }
    if (i > 0) assert.ok(m.wordsSeen > metrics[i - 1].wordsSeen);
  });
  assert.deepEqual(
    metrics.map((m) => `${m.round}${m.phase}`),
    Array.from(
      { length: rounds },
      (_, r) => [...Array(steps.sft).fill(`${r}sft`), ...Array(steps.po).fill(`${r}po`)],
    ).flat(),
  );

  // interactions/round_N.jsonl: texts and tokens agree.
  for (let r = 0; r < rounds; r++) {
    const recs = jsonl<InteractionRecord>(await Deno.readTextFile(`${dir}/interactions/round_${r}.jsonl`));
    assert.equal(recs.length, 16);
    for (const rec of recs) {
      assert.equal(rec.contextTokens.length, 16);
      assert.ok(rec.studentTokens.length >= 7 && rec.studentTokens.length <= 8);
      assert.equal(tokenizer.decode(rec.contextTokens), rec.context);
      assert.equal(tokenizer.decode(rec.studentTokens), rec.student);
      assert.equal(tokenizer.decode(rec.teacherTokens), rec.teacher);
      assert.ok(rec.teacherTokens.length <= rec.studentTokens.length, "teacher cut to the student's length");
    }
  }

  // Checkpoints: phase ends and words, each a loadable GPT-2 directory with tokenizer and words seen.
  const names = [...Deno.readDirSync(`${dir}/checkpoints`)].map((e) => e.name).sort();
  for (let r = 1; r <= rounds; r++) {
    assert.ok(names.includes(`round${r}_sft`) && names.includes(`round${r}_po`), names.join(" "));
  }
  const words = names.filter((n) => n.startsWith("checkpoint_"));
  assert.ok(words.length >= 1, `word checkpoints in ${names.join(" ")}`);
  assert.ok(!names.some((n) => n.includes(".tmp-") || n.includes(".old-")), "no temporary folders left");
  const { checkpoints } = await findCheckpoints(dir);
  assert.equal(checkpoints.length, names.length, "eval/curve.ts finds every checkpoint with its words");
  const gpu = await testGpu();
  for (const name of [words[0], `round${rounds}_po`]) {
    const ckpt = await loadCheckpoint(`${dir}/checkpoints/${name}`);
    assert.equal(ckpt.config.nEmbd, 32);
    GPT2.create(gpu, ckpt.config, ckpt.weights);
    Tokenizer.fromJSON(await Deno.readTextFile(`${dir}/checkpoints/${name}/tokenizer.json`), name);
    const st = JSON.parse(await Deno.readTextFile(`${dir}/checkpoints/${name}/training_state.json`));
    assert.ok(st.wordsSeen > 0 && st.name === name);
  }

  console.log(
    `  ${metrics.length} steps, ${metrics[metrics.length - 1].wordsSeen} words, checkpoints ${
      names.join(" ")
    }`,
  );
  // Full training state.
  const state = JSON.parse(await Deno.readTextFile(`${dir}/state/state.json`)) as RunState;
  assert.equal(state.done, true);
  assert.equal(state.step, metrics.length);
  assert.equal(state.wordsSeen, metrics[metrics.length - 1].wordsSeen);
  for (const f of ["model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.json"]) {
    assert.ok((await Deno.stat(`${dir}/state/${f}`)).size > 0, `state/${f}`);
  }
  return { metrics, tokenizer };
}

Deno.test("train end to end: vLLM chat teacher over HTTP with a dead server and faults, two rounds", async () => {
  const faults: Fault[] = ["503", "hang", "malformed", "empty", "429", "503"];
  const fake = startTeacherServer({ faults, delayMs: (n) => (n * 7) % 20 });
  const dir = await Deno.makeTempDir({ prefix: "train_e2e_" });
  try {
    const configPath = `${dir}/config.in.json`;
    await Deno.writeTextFile(
      configPath,
      JSON.stringify(smallConfig({
        teacher: {
          ...TINY.teacher,
          kind: "openai",
          mode: "chat",
          urls: [deadUrl(), fake.url],
          timeoutMs: 1500,
          maxInFlightPerServer: 4,
        },
      })),
    );
    const run = `${dir}/run`;
    const t0 = performance.now();
    const res = await train(["--config", configPath, "--out", run]);
    console.log(`  vLLM-chat run: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, /warning: teacher server unreachable/);
    assert.match(res.stderr, /retrying/);
    assert.match(res.stdout, /done: 24 steps/);

    const { metrics, tokenizer } = await checkRun(run, 2, { sft: 8, po: 4 });
    // Every request went to the chat route; the faults were retried (32 answers needed, more asked).
    assert.ok(fake.requests.every((r) => r.path === "/v1/chat/completions"));
    assert.ok(fake.generations() >= 32 + faults.length, `${fake.generations()} requests`);
    // At most 4 in flight, plus the hung request the server holds after the client gave up on it.
    assert.ok(fake.maxConcurrent() <= 5, `${fake.maxConcurrent()} requests open at once`);
    // The teacher's answer is the fake's correction of the student text, in student tokens, cut.
    for (let r = 0; r < 2; r++) {
      const recs = jsonl<InteractionRecord>(await Deno.readTextFile(`${run}/interactions/round_${r}.jsonl`));
      for (const rec of recs) {
        const full = tokenizer.encode(fakeAnswer(rec.student));
        assert.deepEqual(rec.teacherTokens, full.slice(0, rec.studentTokens.length));
      }
    }
    // The loss falls: first vs last SFT step of the run.
    const sft = metrics.filter((m) => m.phase === "sft");
    const first = sft[0].lmLoss, last = sft[sft.length - 1].lmLoss;
    console.log(`  SFT LM loss ${first.toFixed(3)} -> ${last.toFixed(3)}`);
    // From about ln V (uniform over 320 tokens: 5.77) down by more than 0.5 nats in 16 SFT steps.
    assert.ok(last < first - 0.5, `SFT LM loss ${first} -> ${last}`);
  } finally {
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("train end to end: llama.cpp /completion teacher, one round", async () => {
  const fake = startTeacherServer({ flavor: "llamacpp", faults: ["503", "malformed"] });
  const dir = await Deno.makeTempDir({ prefix: "train_e2e_" });
  try {
    const configPath = `${dir}/config.in.json`;
    await Deno.writeTextFile(configPath, JSON.stringify(smallConfig({ numRounds: 1, nSftEpochs: 1 })));
    const run = `${dir}/run`;
    const res = await train([
      "--config",
      configPath,
      "--out",
      run,
      "--teacher-url",
      fake.url,
      "--teacher-mode",
      "completion",
    ]);
    assert.equal(res.code, 0, res.stderr);
    await checkRun(run, 1, { sft: 4, po: 4 });
    assert.ok(fake.requests.every((r) => r.path === "/completion"));
    assert.equal(fake.generations(), 16 + 2);
    // The rendered Llama 3.1 prompt, without the BOS llama.cpp adds itself.
    const prompt = String(fake.requests[0].body.prompt);
    assert.ok(prompt.startsWith("<|start_header_id|>system<|end_header_id|>"), prompt.slice(0, 80));
  } finally {
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});
