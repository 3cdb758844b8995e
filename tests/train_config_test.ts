/**
 * `deno task train` configuration and bad input: the presets against the model card, --print-config,
 * unknown keys and impossible values, missing corpus files, an unreachable teacher, a teacher whose
 * answers are never text, existing run directories and --resume misuse. Every refused start must leave
 * the file system as it was.
 */
import assert from "node:assert/strict";
import { main } from "../cli/train.ts";
import { BABYLM_INTERACTION, mergeConfig, TINY, type TrainConfig } from "../interaction/config.ts";
import { deadUrl, type Fault, startTeacherServer } from "./teacher_server.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Run main() with console.log captured; returns what it printed. */
async function printed(args: string[]): Promise<string> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    await main(args);
  } finally {
    console.log = log;
  }
  return lines.join("\n");
}

/** main() with stderr lines silenced (the tokenizer training log). */
async function quiet<T>(f: () => Promise<T>): Promise<T> {
  const err = console.error;
  console.error = () => {};
  try {
    return await f();
  } finally {
    console.error = err;
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** A temp dir with `config.in.json` holding `config`; returns both paths. */
async function withConfig(config: unknown): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "train_config_" });
  const path = `${dir}/config.in.json`;
  await Deno.writeTextFile(path, JSON.stringify(config));
  return { dir, path };
}

Deno.test("babylm-interaction preset is the model card", () => {
  const c = BABYLM_INTERACTION;
  assert.deepEqual(c.architecture, { nLayer: 12, nHead: 12, nEmbd: 768, nPositions: 1024 });
  assert.equal(c.vocabSize, 50257);
  assert.deepEqual(
    [c.numRounds, c.datapointLength, c.contextLength, c.nSftEpochs, c.nPoEpochs, c.batchSize],
    [20, 512, 256, 8, 2, 16],
  );
  assert.deepEqual(
    [c.student.temperature, c.student.topP, c.student.topK, c.student.minTokens, c.student.maxTokens],
    [1, 0.8, 0, 255, 256],
  );
  assert.deepEqual([c.simpoBeta, c.simpoBeta * c.simpoGammaRatio, c.lmWeight], [2, 1, 0.2]);
  assert.deepEqual(
    [c.lr, c.schedule, c.warmupSteps, c.totalSteps, c.clipNorm, c.beta1, c.beta2, c.eps, c.weightDecay],
    [5e-5, "cosine", 2000, 200000, 1, 0.9, 0.999, 1e-8, 0],
  );
  assert.deepEqual(c.checkpointWords, [[1e7, 1e6], [1e8, 1e7], [1e9, 1e8]]);
  assert.equal(c.teacher.kind, "openai");
  assert.equal(c.teacher.model, "meta-llama/Llama-3.1-8B-Instruct");
  assert.equal(c.maxDatapointsPerRound, 0);
  // Trained as a default GPT2Config after student.train(), on the corpus read as ' '.join(f.readlines()).
  assert.deepEqual(c.dropout, { embdPdrop: 0.1, attnPdrop: 0.1, residPdrop: 0.1 });
  assert.equal(c.corpusJoin, "baseline");
  assert.deepEqual([TINY.dropout, TINY.corpusJoin], [{ embdPdrop: 0, attnPdrop: 0, residPdrop: 0 }, "raw"]);
});

Deno.test("--dropout sets all three rates, --sft-epochs the LM epochs; --print-config shows them", async () => {
  const c = JSON.parse(
    await printed([
      "--print-config",
      "--preset",
      "babylm-interaction",
      "--dropout",
      "0",
      "--sft-epochs",
      "7",
    ]),
  ) as TrainConfig;
  assert.deepEqual(c, {
    ...BABYLM_INTERACTION,
    dropout: { embdPdrop: 0, attnPdrop: 0, residPdrop: 0 },
    nSftEpochs: 7,
  });
  const tiny = JSON.parse(await printed(["--print-config", "--dropout", "0.25"])) as TrainConfig;
  assert.deepEqual(tiny.dropout, { embdPdrop: 0.25, attnPdrop: 0.25, residPdrop: 0.25 });
  await assert.rejects(main(["--dropout", "1"]), /--dropout must be a rate in \[0, 1\), got 1/);
  await assert.rejects(main(["--dropout=-0.1"]), /--dropout must be in \[0, /);
  await assert.rejects(main(["--sft-epochs", "7.5"]), /--sft-epochs must be an integer/);
});

Deno.test("--lr, --warmup-steps and --clip-norm set the config's lr, warmupSteps and clipNorm, as sft's do", async () => {
  const flags = ["--lr", "3e-4", "--warmup-steps", "50", "--clip-norm", "0.5"];
  const c = JSON.parse(
    await printed(["--print-config", "--preset", "babylm-interaction", ...flags]),
  ) as TrainConfig;
  assert.deepEqual(c, { ...BABYLM_INTERACTION, lr: 3e-4, warmupSteps: 50, clipNorm: 0.5 });
  const tiny = JSON.parse(await printed(["--print-config", "--clip-norm", "0"])) as TrainConfig;
  assert.deepEqual(tiny, { ...TINY, clipNorm: 0 });
  await assert.rejects(main(["--lr", "-1"]), /--lr must be in \[0, /);
  await assert.rejects(main(["--warmup-steps", "2.5"]), /--warmup-steps must be an integer/);
  await assert.rejects(main(["--resume", "runs/none", "--lr", "1e-3"]), /drop --lr/);
});

Deno.test("--print-config prints the resolved config: preset, --config file and options", async () => {
  const tiny = JSON.parse(await printed(["--print-config"])) as TrainConfig;
  assert.deepEqual(tiny, TINY);
  const { dir, path } = await withConfig({
    numRounds: 5,
    student: { topP: 0.9 },
    architecture: { nLayer: 3 },
  });
  try {
    const c = JSON.parse(
      await printed(["--print-config", "--config", path, "--seed", "4", "--out", `${dir}/r`]),
    );
    assert.deepEqual(c, {
      ...TINY,
      numRounds: 5,
      seed: 4,
      outDir: `${dir}/r`,
      student: { ...TINY.student, topP: 0.9 },
      architecture: { ...TINY.architecture, nLayer: 3 },
    });
    const card = JSON.parse(
      await printed(["--print-config", "--preset", "babylm-interaction", "--teacher-url", "http://h:9/v1"]),
    );
    assert.deepEqual(card, {
      ...BABYLM_INTERACTION,
      teacher: { ...BABYLM_INTERACTION.teacher, urls: ["http://h:9/v1"] },
    });
    assert.ok(!(await exists(`${dir}/r`)), "--print-config writes nothing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad configs are refused with the key and the expected value, before anything is written", async () => {
  const cases: [unknown, RegExp][] = [
    [{ architecture: { nEmbed: 32 } }, /unknown config key "architecture\.nEmbed"/],
    [{ learningRate: 1e-3 }, /unknown config key "learningRate"/],
    [{ batchSize: 0 }, /"batchSize" must be a positive integer, got 0/],
    [{ batchSize: "8" }, /"batchSize" must be a number, got "8"/],
    [
      { contextLength: 64, datapointLength: 64 },
      /"contextLength" must be smaller than datapointLength \(64\)/,
    ],
    [{ student: { minTokens: 40, maxTokens: 32 } }, /"student.minTokens" must be an integer in \[0, /],
    [{ student: { topP: 0 } }, /"student.topP" must be in \(0, 1\]/],
    [{ architecture: { nPositions: 16 } }, /"architecture.nPositions" must be at least 65/],
    [{ architecture: { nHead: 3 } }, /"architecture.nEmbd" must be divisible by nHead \(3\)/],
    [{ teacher: { kind: "openai", urls: [] } }, /"teacher.urls" must be at least one URL/],
    [{ teacher: { kind: "openai", urls: ["not a url"] } }, /"teacher.urls" must be valid http\(s\) URLs/],
    [{ checkpointWords: [[100]] }, /checkpointWords\[0\]" must be a pair/],
    [{ dropout: { attnPdrop: 1 } }, /"dropout.attnPdrop" must be a rate in \[0, 1\), got 1/],
    [{ dropout: { resid: 0.1 } }, /unknown config key "dropout.resid"/],
    [{ corpusJoin: "lines" }, /"corpusJoin" must be "baseline" or "raw", got "lines"/],
    [[1, 2], /must be a JSON object/],
  ];
  for (const [config, expected] of cases) {
    const { dir, path } = await withConfig(config);
    try {
      await assert.rejects(main(["--config", path, "--out", `${dir}/run`]), expected, JSON.stringify(config));
      assert.ok(!(await exists(`${dir}/run`)), `nothing written for ${JSON.stringify(config)}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  await assert.rejects(main(["--config", "/nonexistent/c.json"]), /--config \/nonexistent\/c\.json: /);
  await assert.rejects(main(["--bogus"]), /Unknown option '--bogus'/);
  await assert.rejects(
    main(["--preset", "huge"]),
    /--preset must be one of tiny, babylm-interaction, strict, strict-small, got huge/,
  );
  await assert.rejects(main(["--rounds", "0"]), /--rounds must be in \[1, /);
  // mergeConfig on its own names the source.
  assert.throws(
    () => mergeConfig(TINY, { corpus: 3 } as never, "x.json"),
    /x\.json: "corpus" must be \{"kind"/,
  );
  assert.throws(
    () => mergeConfig(TINY, { corpus: { kind: "dir", path: "d", words: 1 } } as never, "x.json"),
    /"corpus" must be/,
  );
  assert.deepEqual(mergeConfig(TINY, { corpus: { kind: "dir", path: "d" } }, "x.json").corpus, {
    kind: "dir",
    path: "d",
  });
});

Deno.test("missing corpus files and an unreachable teacher stop the start before the run dir exists", async () => {
  const dir = await Deno.makeTempDir({ prefix: "train_config_" });
  try {
    await assert.rejects(
      quiet(() => main(["--corpus", `${dir}/no_such_corpus`, "--out", `${dir}/run1`])),
      /corpus directory .*no_such_corpus does not exist/,
    );
    await Deno.mkdir(`${dir}/empty_corpus`);
    await Deno.writeTextFile(`${dir}/empty_corpus/README`, "not a source");
    await assert.rejects(
      quiet(() => main(["--corpus", `${dir}/empty_corpus`, "--out", `${dir}/run2`])),
      /has no \.train or \.txt files/,
    );
    await assert.rejects(
      quiet(() => main(["--tokenizer", `${dir}/missing.json`, "--out", `${dir}/run3`])),
      /missing\.json/,
    );
    const { path } = await withConfig({ corpus: { kind: "embedded", words: 3000 }, vocabSize: 300 });
    const dead = [deadUrl(), deadUrl()];
    await assert.rejects(
      quiet(() =>
        main(["--config", path, "--teacher-url", dead[0], "--teacher-url", dead[1], "--out", `${dir}/run4`])
      ),
      (e: Error) => {
        assert.match(e.message, /no teacher server answers/);
        for (const u of dead) assert.ok(e.message.includes(u), e.message);
        return true;
      },
    );
    for (const r of ["run1", "run2", "run3", "run4"]) assert.ok(!(await exists(`${dir}/${r}`)), r);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an existing run directory is never overwritten; --resume misuse is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "train_config_" });
  try {
    await Deno.writeTextFile(`${dir}/metrics.jsonl`, '{"step":1}\n');
    await assert.rejects(main(["--out", dir]), /is not empty \(metrics\.jsonl\).*--resume/);
    assert.equal(await Deno.readTextFile(`${dir}/metrics.jsonl`), '{"step":1}\n');
    await assert.rejects(main(["--resume", dir]), /no config\.json there/);
    await assert.rejects(main(["--resume", dir, "--seed", "3"]), /drop --seed/);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...TINY, numRounds: -1 }));
    await assert.rejects(main(["--resume", dir]), /"numRounds" must be a positive integer, got -1/);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...TINY, extra: 1 }));
    await assert.rejects(main(["--resume", dir]), /config\.json: unknown config key "extra"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a teacher that never answers with text stops the run with the reason; the student turn is kept", async () => {
  // Every request gets an empty answer or a body that is not JSON; 2 attempts per item.
  const faults: Fault[] = Array.from({ length: 100 }, (_, i) => i % 2 ? "empty" : "malformed");
  const fake = startTeacherServer({ faults });
  const { dir, path } = await withConfig({
    architecture: { nLayer: 1, nHead: 2, nEmbd: 32, nPositions: 32 },
    vocabSize: 300,
    corpus: { kind: "embedded", words: 3000 },
    numRounds: 1,
    datapointLength: 32,
    contextLength: 16,
    maxDatapointsPerRound: 8,
    student: { ...TINY.student, minTokens: 7, maxTokens: 8, batchSize: 8 },
    teacher: { ...TINY.teacher, kind: "openai", urls: [fake.url], maxAttempts: 2 },
  });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "cli/train.ts", "--config", path, "--out", `${dir}/run`],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, stderr);
    assert.match(
      stderr,
      /error: no teacher answered round 1 datapoint \d+ after 2 attempts .*(answer is empty|not JSON)/,
    );
    const student = (await Deno.readTextFile(`${dir}/run/interactions/round_0.student.jsonl`)).trim().split(
      "\n",
    );
    assert.equal(student.length, 8, "the student's continuations are kept for --resume");
    assert.ok(await exists(`${dir}/run/config.json`));
    assert.ok(!(await exists(`${dir}/run/interactions/round_0.jsonl`)));
  } finally {
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});
