/**
 * A tiny Strict-Small-shaped run (the `strict-small` preset with a small student and the embedded corpus)
 * against the fake teacher server: a word budget that round 1 would pass stops the run before any
 * training; raised so one round fits, the run trains round 1, writes its budget summary and word counts,
 * and stops before round 2 naming the count and the limit; raised again (config.json), `--resume`
 * finishes rounds 2 and 3 with totals that are the sums of the rounds'. Also: `--print-config` shows the
 * presets' budget settings, and an epoch count past `maxEpochs` is refused before round 1.
 */
import assert from "node:assert/strict";
import type { BudgetSummary, WordTally } from "../interaction/budget.ts";
import type { MetricsRecord, RunState } from "../interaction/loop.ts";
import { TINY, type TrainConfig } from "../interaction/config.ts";
import { startTeacherServer } from "./teacher_server.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** 3 rounds of 16 datapoints (16 + 16 tokens), batch 4, width 32, one layer, no dropout. */
function overrides(teacherUrl: string, wordBudget: number): Partial<TrainConfig> {
  return {
    seed: 5,
    architecture: { nLayer: 1, nHead: 2, nEmbd: 32, nPositions: 32 },
    tokenizer: "train",
    vocabSize: 320,
    corpus: { kind: "embedded", words: 6000 },
    corpusJoin: "raw",
    numRounds: 3,
    datapointLength: 32,
    contextLength: 16,
    maxDatapointsPerRound: 16,
    student: { ...TINY.student, minTokens: 7, maxTokens: 8, batchSize: 8 },
    teacher: { ...TINY.teacher, kind: "openai", urls: [teacherUrl], mode: "chat", model: "fake-teacher" },
    nSftEpochs: 3,
    nPoEpochs: 1,
    dropout: TINY.dropout,
    batchSize: 4,
    lr: 3e-3,
    warmupSteps: 2,
    totalSteps: 100,
    checkpointWords: [[5000, 1000]],
    wordBudget,
  };
}

async function train(args: string[]): Promise<{ code: number; out: string; stdout: string }> {
  const p = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/train.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: p.code, out: dec.decode(p.stderr) + dec.decode(p.stdout), stdout: dec.decode(p.stdout) };
}

const jsonLines = async <T>(path: string): Promise<T[]> => {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as T);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
};

/** Set `key` of the run's config.json (what a user does to raise a limit before resuming). */
async function setConfig(dir: string, key: string, value: unknown): Promise<void> {
  const c = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  c[key] = value;
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(c, null, 2) + "\n");
}

const sumRounds = (rounds: WordTally[]): WordTally => {
  const out = { ...rounds[0] };
  for (const r of rounds.slice(1)) for (const k of Object.keys(out) as (keyof WordTally)[]) out[k] += r[k];
  return out;
};

Deno.test("--print-config shows the Strict and Strict-Small budget settings", async () => {
  for (const [preset, budget, upTo] of [["strict", 100e6, 1e9], ["strict-small", 10e6, 1e8]] as const) {
    const r = await train(["--preset", preset, "--print-config"]);
    assert.equal(r.code, 0, r.out);
    const c = JSON.parse(r.stdout) as TrainConfig;
    assert.deepEqual(
      [c.wordBudget, c.maxEpochs, c.budgetCounts, c.wordMeasure, c.nSftEpochs + c.nPoEpochs],
      [budget, 10, ["corpusContext", "teacher"], "whitespace", 10],
      preset,
    );
    assert.equal(c.checkpointWords.at(-1)![0], upTo);
  }
});

Deno.test("a Strict-Small-shaped run stops before a round that would pass the budget, and resumes", async () => {
  const fake = startTeacherServer();
  const dir = await Deno.makeTempDir();
  const run = `${dir}/run`;
  try {
    await Deno.writeTextFile(`${dir}/cfg.json`, JSON.stringify(overrides(fake.url, 1)));
    // Budget 1: round 1's projection passes it; nothing is trained or asked.
    const first = await train(["--preset", "strict-small", "--config", `${dir}/cfg.json`, "--out", run]);
    assert.equal(first.code, 1, first.out);
    const m =
      /round 1 would bring the budgeted words \(corpusContext \+ teacher\) to \S+ \((\d+)\): 0 so far \+ \S+ corpusContext \+ \S+ teacher \(projected\), past wordBudget 1 \(1\)\. The run stopped before training round 1 and can be resumed/
        .exec(first.out);
    assert.ok(m, first.out);
    const projected = Number(m[1]);
    assert.equal(fake.generations(), 0, "no teacher request before the budget check");
    assert.deepEqual(await jsonLines(`${run}/metrics.jsonl`), []);

    // One round and a half of budget: round 1 trains, round 2 would pass it.
    await setConfig(run, "wordBudget", Math.round(1.5 * projected));
    const second = await train(["--resume", run]);
    assert.equal(second.code, 1, second.out);
    assert.match(second.out, /words after round 1: corpus \S+ context/);
    assert.match(
      second.out,
      /round 2 would bring the budgeted words \(corpusContext \+ teacher\) to .* \(projected\), past wordBudget/,
    );
    const summaries1 = await jsonLines<BudgetSummary>(`${run}/budget.jsonl`);
    assert.equal(summaries1.length, 1);
    const s1 = summaries1[0];
    assert.equal(s1.round, 0);
    assert.deepEqual(s1.totalWords, s1.roundWords);
    assert.ok(s1.roundWords.corpusContext > 0 && s1.roundWords.teacher > 0 && s1.roundWords.student > 0);
    assert.equal(s1.budgetedWords, s1.roundWords.corpusContext + s1.roundWords.teacher);
    assert.ok(s1.budgetedWords <= s1.wordBudget);
    const state1 = JSON.parse(await Deno.readTextFile(`${run}/state/state.json`)) as RunState;
    assert.deepEqual(
      [state1.round, state1.phase, state1.done],
      [1, "student", false],
      "resumable at round 2",
    );
    assert.deepEqual(state1.words, s1.totalWords);
    assert.equal(s1.roundWords.trained, state1.wordsSeen, "trained words are the words seen");
    const metrics1 = await jsonLines<MetricsRecord>(`${run}/metrics.jsonl`);
    assert.ok(metrics1.length > 0 && metrics1.every((r) => r.round === 0));
    assert.deepEqual(metrics1.at(-1)!.words, { round: s1.roundWords, total: s1.totalWords });

    // No budget: the run finishes; every round has a summary and the totals add up.
    await setConfig(run, "wordBudget", 0);
    const third = await train(["--resume", run]);
    assert.equal(third.code, 0, third.out);
    assert.match(third.out, /resumed at round 2, phase student/);
    const summaries = await jsonLines<BudgetSummary>(`${run}/budget.jsonl`);
    assert.deepEqual(summaries.map((s) => s.round), [0, 1, 2]);
    assert.deepEqual(summaries[0], s1, "round 1's summary is kept as it was");
    assert.deepEqual(summaries[2].totalWords, sumRounds(summaries.map((s) => s.roundWords)));
    const state = JSON.parse(await Deno.readTextFile(`${run}/state/state.json`)) as RunState;
    assert.equal(state.done, true);
    assert.deepEqual(state.words, summaries[2].totalWords);
    assert.equal(state.wordsSeen, summaries[2].totalWords.trained);
    assert.equal(summaries[2].epochs, 4);
    assert.ok(
      Math.abs(summaries[2].repetition - state.wordsSeen / summaries[2].totalWords.trainedDistinct) < 1e-12,
    );
    const metrics = await jsonLines<MetricsRecord>(`${run}/metrics.jsonl`);
    for (const s of summaries) {
      const last = metrics.filter((r) => r.round === s.round).at(-1)!;
      assert.deepEqual(last.words, { round: s.roundWords, total: s.totalWords }, `round ${s.round + 1}`);
    }
    assert.equal(fake.generations(), 3 * 16, "one teacher request per datapoint, none repeated");
  } finally {
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("more passes over a round's data than maxEpochs are refused before round 1", async () => {
  const fake = startTeacherServer();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/cfg.json`,
      JSON.stringify({ ...overrides(fake.url, 0), nSftEpochs: 9, nPoEpochs: 2 }),
    );
    const r = await train(["--preset", "strict-small", "--config", `${dir}/cfg.json`, "--out", `${dir}/run`]);
    assert.equal(r.code, 1, r.out);
    assert.match(
      r.out,
      /round 1 would train 11 epochs over its data \(nSftEpochs 9 \+ nPoEpochs 2\), past maxEpochs 10/,
    );
    assert.equal(fake.generations(), 0);
  } finally {
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});
