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
