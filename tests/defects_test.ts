/**
 * Defects a hostile review of `deno task train` found (issue #16): seeds (-1 draws one and records it;
 * fractional or out-of-range seeds and non-finite numbers are refused naming the config file before any
 * work), a config.json edited before --resume, an empty or corrupt state, temporary folders left by a
 * kill, round files checked before metrics.jsonl is rewritten, and teacher errors naming the datapoint
 * and round. Runs are tiny (one layer, width 32, 8 datapoints a round): a few seconds each.
 */
import assert from "node:assert/strict";
import { main } from "../cli/train.ts";
import { changedConfigKeys, drawSeed, TINY, type TrainConfig } from "../interaction/config.ts";
import { findCheckpoints } from "../eval/curve.ts";
import { startTeacherServer } from "./teacher_server.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** 2 rounds of 8 datapoints, one SFT and one PO epoch each, word checkpoints every 150 words. */
const CONFIG: Partial<TrainConfig> = {
  seed: 5,
  architecture: { nLayer: 1, nHead: 2, nEmbd: 32, nPositions: 32 },
  vocabSize: 300,
  corpus: { kind: "embedded", words: 3000 },
  numRounds: 2,
  datapointLength: 32,
  contextLength: 16,
  maxDatapointsPerRound: 8,
  student: { ...TINY.student, minTokens: 7, maxTokens: 8, batchSize: 8 },
  nSftEpochs: 1,
  nPoEpochs: 1,
  batchSize: 4,
  warmupSteps: 2,
  totalSteps: 100,
  checkpointWords: [[5000, 150]],
};

/** `deno task train ARGS` in a subprocess: exit code and stdout + stderr. */
async function train(args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/train.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

/** A temp dir holding `config.in.json` with `text` (a string is written as is: JSON has no Infinity). */
async function withConfig(config: unknown): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "defects_" });
  const path = `${dir}/config.in.json`;
  await Deno.writeTextFile(path, typeof config === "string" ? config : JSON.stringify(config));
  return { dir, path };
}

Deno.test("seed -1: --seed -1 parses, draws a seed recorded in config.json and the log", async () => {
  const { dir, path } = await withConfig(CONFIG);
  try {
    const r = await train(["--config", path, "--seed", "-1", "--rounds", "1", "--out", `${dir}/run`]);
    assert.equal(r.code, 0, r.out);
    const m = /seed -1: drew seed (\d+) at random \(recorded in .*run\/config\.json\)/.exec(r.out);
    assert.ok(m, r.out);
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/run/config.json`)) as TrainConfig;
    assert.equal(saved.seed, Number(m[1]));
    assert.ok(Number.isInteger(saved.seed) && saved.seed >= 0 && saved.seed < 2 ** 32);
    // --print-config shows what was asked for; the draw happens when a run starts.
    const printed = await train(["--config", path, "--seed", "-1", "--print-config"]);
    assert.equal(printed.code, 0, printed.out);
    assert.equal(JSON.parse(printed.out).seed, -1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.deepEqual(drawSeed({ ...TINY, seed: -1 }, () => 7), { config: { ...TINY, seed: 7 }, drawn: 7 });
  assert.deepEqual(drawSeed(TINY, () => 7), { config: TINY });
});

Deno.test("config values are checked before any work, naming the config file: seeds, infinities, presets", async () => {
  // The corpus folder does not exist: any check that came after reading it would not be reached.
  const corpus = { kind: "dir", path: "/nonexistent/corpus" };
  const cases: [string, RegExp][] = [
    [
      JSON.stringify({ seed: 1.5, corpus }),
      /config\.in\.json: "seed" must be an integer in \[0, 2\^32\), or -1/,
    ],
    [JSON.stringify({ seed: -2, corpus }), /"seed" must be an integer in \[0, 2\^32\)/],
    [JSON.stringify({ seed: 2 ** 32, corpus }), /"seed" must be an integer in \[0, 2\^32\)/],
    [`{"lr": 1e999, "corpus": ${JSON.stringify(corpus)}}`, /config\.in\.json: "lr" must be a finite number/],
    [
      `{"student": {"temperature": 1e999}, "corpus": ${JSON.stringify(corpus)}}`,
      /"student\.temperature" must be a finite number/,
    ],
    [JSON.stringify({ preset: "huge", corpus }), /config\.in\.json: "preset" must be one of tiny, babylm/],
    [JSON.stringify({ preset: "toString", corpus }), /"preset" must be one of/],
    [
      JSON.stringify({ vocabSize: 0.5, tokenizer: "x.json", corpus }),
      /"vocabSize" must be a positive integer/,
    ],
  ];
  for (const [text, expected] of cases) {
    const { dir, path } = await withConfig(text);
    try {
      await assert.rejects(main(["--config", path, "--out", `${dir}/run`]), expected, text);
      assert.ok(!(await Deno.stat(`${dir}/run`).then(() => true, () => false)), `nothing written: ${text}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  await assert.rejects(main(["--seed", "1.5", "--print-config"]), /--seed must be an integer/);
  await assert.rejects(main(["--seed", "-2", "--print-config"]), /--seed must be in \[-1, 4294967295\]/);
  // A negative number is a value for any option that takes one (parseArgs calls it ambiguous).
  await assert.rejects(main(["--rounds", "-3", "--print-config"]), /--rounds must be in \[1, /);
});

Deno.test("changed config keys: leaves named with their dotted paths", () => {
  assert.deepEqual(changedConfigKeys(TINY, TINY), []);
  const edited = {
    ...TINY,
    seed: 9,
    student: { ...TINY.student, topP: 0.5 },
    checkpointWords: [[1e5, 2e4]] as Array<[number, number]>,
  };
  assert.deepEqual(changedConfigKeys(TINY, edited), ["checkpointWords", "seed", "student.topP"]);
});

/** Every file under `dir` with its bytes, for "nothing was touched" checks. */
async function snapshot(dir: string, prefix = ""): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const e of Deno.readDir(prefix ? `${dir}/${prefix}` : dir)) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory) { for (const [k, v] of await snapshot(dir, rel)) out.set(k, v); }
    else out.set(rel, new TextDecoder("latin1").decode(await Deno.readFile(`${dir}/${rel}`)));
  }
  return out;
}

let finished: Promise<string> | undefined;
/** A copy of one finished 2-round run of {@link CONFIG} (trained once per test process) at `dst`. */
async function finishedRun(dst: string): Promise<void> {
  finished ??= (async () => {
    const { dir, path } = await withConfig(CONFIG);
    const r = await train(["--config", path, "--out", `${dir}/run`]);
    assert.equal(r.code, 0, r.out);
    return `${dir}/run`;
  })();
  const src = await finished;
  const cp = await new Deno.Command("cp", { args: ["-a", src, dst] }).output();
  assert.ok(cp.success, `cp -a ${src} ${dst}`);
}

Deno.test("resume: an empty or damaged state/state.json is refused naming it, never a restart from step 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "defects_" });
  try {
    await finishedRun(`${dir}/run`);
    for (const text of ["", "\n", '{"version": 1, "round": 1', '{"version": 1}']) {
      await Deno.writeTextFile(`${dir}/run/state/state.json`, text);
      const before = await snapshot(`${dir}/run`);
      const r = await train(["--resume", `${dir}/run`]);
      assert.equal(r.code, 1, r.out);
      assert.match(
        r.out,
        /error: .*run\/state\/state\.json: (empty|not valid JSON|expected version 1)/,
        r.out,
      );
      assert.match(r.out, /the saved state is damaged/);
      assert.deepEqual(await snapshot(`${dir}/run`), before, `files changed after ${JSON.stringify(text)}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resume: temporaries of killed writes are removed, a state cut between its renames comes back; eval never lists one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "defects_" });
  const run = `${dir}/run`;
  try {
    await finishedRun(run);
    const state = await snapshot(`${run}/state`);
    // What kills leave: a checkpoint folder half written (config.json and training_state.json already
    // there), file temporaries, and the state renamed away with its replacement not yet in place.
    const half = `${run}/checkpoints/checkpoint_0.15K.tmp-89abcdef`;
    await Deno.mkdir(half);
    await Deno.copyFile(`${run}/checkpoints/checkpoint_0.15K/config.json`, `${half}/config.json`);
    await Deno.copyFile(
      `${run}/checkpoints/checkpoint_0.15K/training_state.json`,
      `${half}/training_state.json`,
    );
    // A replaced checkpoint's previous version whose removal a kill cut short (its new one is in place).
    await Deno.mkdir(`${run}/checkpoints/round1_sft.old-01234567`);
    await Deno.writeTextFile(`${run}/checkpoints/round1_sft.old-01234567/config.json`, "{}");
    await Deno.writeTextFile(`${run}/metrics.jsonl.0badc0de.tmp`, "{");
    await Deno.writeTextFile(`${run}/interactions/round_0.jsonl.12345678.tmp`, "{");
    await Deno.mkdir(`${run}/state.tmp-fedcba98`);
    await Deno.writeTextFile(`${run}/state.tmp-fedcba98/model.safetensors`, "cut short");
    await Deno.rename(`${run}/state`, `${run}/state.old-aaaabbbb`);

    const names = (await findCheckpoints(run)).checkpoints.map((c) => c.name);
    assert.deepEqual(
      names.filter((n) => /tmp|old/.test(n)),
      [],
      `eval lists temporaries as checkpoints: ${names.join(", ")}`,
    );

    const r = await train(["--resume", run]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /restored .*run\/state from state\.old-aaaabbbb/);
    assert.match(r.out, /the run is complete/, "resumed from the restored state, not from step 0");
    for (
      const left of ["state.tmp-fedcba98", "checkpoint_0.15K.tmp-89abcdef", "metrics.jsonl.0badc0de.tmp"]
    ) {
      assert.match(r.out, new RegExp(`removed .*${left.replaceAll(".", "\\.")}`));
    }
    const all = [...(await snapshot(run)).keys()];
    assert.deepEqual(all.filter((f) => /\.(tmp|old)-|\.tmp$/.test(f)), [], "no temporaries left");
    assert.deepEqual(await snapshot(`${run}/state`), state, "the state is the last complete one");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resume: config.json edited since the start is refused naming the keys; teacher settings may change", async () => {
  const dir = await Deno.makeTempDir({ prefix: "defects_" });
  const run = `${dir}/run`;
  try {
    await finishedRun(run);
    const original = await Deno.readTextFile(`${run}/config.json`);
    const c = JSON.parse(original) as TrainConfig;
    // -1 asks for a seed to be drawn: a run that has started has its drawn seed recorded.
    await Deno.writeTextFile(`${run}/config.json`, JSON.stringify({ ...c, seed: -1 }));
    const random = await train(["--resume", run]);
    assert.equal(random.code, 1, random.out);
    assert.match(
      random.out,
      /run\/config\.json: "seed" must be an integer in \[0, 2\^32\) \(a run's seed is drawn/,
    );
    await Deno.writeTextFile(
      `${run}/config.json`,
      JSON.stringify({ ...c, seed: 6, student: { ...c.student, topP: 0.5 } }, null, 2),
    );
    const before = await snapshot(run);
    const r = await train(["--resume", run]);
    assert.equal(r.code, 1, r.out);
    assert.match(
      r.out,
      /run\/config\.json was changed since the run started: seed 5 -> 6, student\.topP 0\.8 -> 0\.5/,
    );
    assert.match(r.out, /\(only outDir, .*teacher\.urls, .* may change\)/);
    assert.deepEqual(await snapshot(run), before);
    // Where the teacher is and how long to wait for it change no training step.
    const teacher = { ...c.teacher, urls: ["http://127.0.0.1:9"], timeoutMs: 1000, maxAttempts: 3 };
    await Deno.writeTextFile(`${run}/config.json`, JSON.stringify({ ...c, teacher }, null, 2));
    const ok = await train(["--resume", run]);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /the run is complete/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resume before the first saved state: config.json is compared with start_config.json", async () => {
  const { dir, path } = await withConfig({
    ...CONFIG,
    numRounds: 1,
    student: { ...CONFIG.student, batchSize: 4 },
    teacher: { ...TINY.teacher, kind: "openai", urls: [], maxAttempts: 1, maxInFlightPerServer: 1 },
  });
  const teacher = startTeacherServer({ faults: ["401"] });
  const run = `${dir}/run`;
  try {
    const r = await train(["--config", path, "--teacher-url", teacher.url, "--out", run]);
    assert.equal(r.code, 1, r.out);
    const c = JSON.parse(await Deno.readTextFile(`${run}/config.json`)) as TrainConfig;
    const { outDir: _, ...started } = c;
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${run}/start_config.json`)), started);
    assert.equal(await Deno.stat(`${run}/state`).then(() => true, () => false), false, "no state saved yet");
    // What a kill after the first of two student batches leaves: 4 continuations made under the config.
    const student = `${run}/interactions/round_0.student.jsonl`;
    await Deno.writeTextFile(
      student,
      (await Deno.readTextFile(student)).split("\n").slice(0, 4).join("\n") + "\n",
    );
    await Deno.remove(`${run}/interactions/round_0.teacher.jsonl`).catch(() => {});
    await Deno.writeTextFile(
      `${run}/config.json`,
      JSON.stringify({ ...c, student: { ...c.student, topP: 0.5 } }, null, 2),
    );
    const before = await snapshot(run);
    const edited = await train(["--resume", run]);
    assert.equal(edited.code, 1, edited.out);
    assert.match(
      edited.out,
      /run\/config\.json was changed since the run started: student\.topP 0\.8 -> 0\.5/,
    );
    assert.deepEqual(await snapshot(run), before, "nothing written");
    await Deno.writeTextFile(`${run}/start_config.json`, "{");
    const damaged = await train(["--resume", run]);
    assert.equal(damaged.code, 1, damaged.out);
    assert.match(damaged.out, /run\/start_config\.json: not valid JSON/);
    // The config put back (the teacher's URL may change): the run goes on from the stored continuations.
    await Deno.writeTextFile(`${run}/start_config.json`, before.get("start_config.json")!);
    await Deno.writeTextFile(`${run}/config.json`, JSON.stringify(c, null, 2));
    const ok = await train(["--resume", run]);
    assert.equal(ok.code, 0, ok.out);
    assert.equal((await Deno.readTextFile(student)).trim().split("\n").length, 8);
  } finally {
    await teacher.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resume: round files are checked before metrics.jsonl is rewritten", async () => {
  const dir = await Deno.makeTempDir({ prefix: "defects_" });
  const run = `${dir}/run`;
  try {
    await finishedRun(run);
    // The state of a run killed early in round 2's SFT phase: metrics hold later steps, to be dropped.
    const state = JSON.parse(await Deno.readTextFile(`${run}/state/state.json`));
    await Deno.writeTextFile(
      `${run}/state/state.json`,
      JSON.stringify({ ...state, round: 1, phase: "sft", epoch: 0, batch: 0, step: 2, done: false }),
    );
    // Round 2's interactions cut to 3 of its 8 records.
    const round = (await Deno.readTextFile(`${run}/interactions/round_1.jsonl`)).split("\n");
    await Deno.writeTextFile(`${run}/interactions/round_1.jsonl`, round.slice(0, 3).join("\n") + "\n");
    const before = await snapshot(run);
    const r = await train(["--resume", run]);
    assert.equal(r.code, 1, r.out);
    assert.match(
      r.out,
      /interactions\/round_1\.jsonl: expected 8 interactions \(one per datapoint\), found 3/,
    );
    assert.deepEqual(await snapshot(run), before, "nothing rewritten, metrics.jsonl included");
    // A bad teacher line of a round in progress is named too.
    await Deno.remove(`${run}/interactions/round_1.jsonl`);
    await Deno.writeTextFile(`${run}/interactions/round_1.teacher.jsonl`, '{"index": 8, "text": "x"}\n');
    const bad = await train(["--resume", run]);
    assert.equal(bad.code, 1, bad.out);
    assert.match(bad.out, /round_1\.teacher\.jsonl:1: expected \{"index": datapoint in \[0, 8\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resume: a teacher error names the datapoint and the round, not the place among the missing answers", async () => {
  const { dir, path } = await withConfig({
    ...CONFIG,
    numRounds: 1,
    teacher: { ...TINY.teacher, kind: "openai", urls: [], maxAttempts: 1, maxInFlightPerServer: 1 },
  });
  const first = startTeacherServer({ faults: ["401"] });
  const second = startTeacherServer({ faults: ["401"] });
  const run = `${dir}/run`;
  try {
    const r = await train(["--config", path, "--teacher-url", first.url, "--out", run]);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /teacher, round 1 datapoint 0: .*401/);
    // The first three answers stored before a kill; the next start asks another server for the rest.
    const answers = [0, 1, 2].map((index) => JSON.stringify({ index, text: " a stored answer" }) + "\n");
    await Deno.writeTextFile(`${run}/interactions/round_0.teacher.jsonl`, answers.join(""));
    const c = JSON.parse(await Deno.readTextFile(`${run}/config.json`)) as TrainConfig;
    await Deno.writeTextFile(
      `${run}/config.json`,
      JSON.stringify({ ...c, teacher: { ...c.teacher, urls: [second.url] } }),
    );
    const resumed = await train(["--resume", run]);
    assert.equal(resumed.code, 1, resumed.out);
    assert.match(resumed.out, /teacher, round 1 datapoint 3: .*401/);
    assert.doesNotMatch(resumed.out, /item 0/);
  } finally {
    await first.close();
    await second.close();
    await Deno.remove(dir, { recursive: true });
  }
});
