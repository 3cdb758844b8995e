/**
 * `deno task export`: a run's word checkpoints laid out as the BabyLM 2026 revisions (main, chck_1M ...
 * chck_10M, chck_20M ... chck_100M, and for Strict chck_200M ... chck_1000M) with a manifest; a missing
 * checkpoint is named and nothing is written; a non-empty output folder is refused.
 */
import assert from "node:assert/strict";
import { exportRun } from "../cli/export.ts";
import { checkpointName } from "../interaction/loop.ts";
import { revisionName, TRACKS } from "../interaction/tracks.ts";

/** A run folder with a checkpoint at each word count (tiny stand-in files) and the final round's. */
async function fakeRun(dir: string, words: number[], numRounds = 2): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ preset: "strict-small", numRounds }));
  const names = [
    ...words.map((w) => [checkpointName(w), w] as const),
    [`round${numRounds}_po`, 123e6] as const,
  ];
  for (const [i, [name, w]] of names.entries()) {
    const d = `${dir}/checkpoints/${name}`;
    await Deno.mkdir(d, { recursive: true });
    await Deno.writeTextFile(`${d}/config.json`, `{"n_layer": 1, "which": "${name}"}`);
    await Deno.writeTextFile(`${d}/model.safetensors`, `weights of ${name}`);
    await Deno.writeTextFile(`${d}/tokenizer.json`, "{}");
    await Deno.writeTextFile(
      `${d}/training_state.json`,
      JSON.stringify({ name, wordsSeen: w + 17, step: i }),
    );
  }
}

Deno.test("revision names and schedules of the two tracks", () => {
  const small = TRACKS["strict-small"].revisionWords.map(revisionName);
  assert.deepEqual(small, [
    ...Array.from({ length: 10 }, (_, i) => `chck_${i + 1}M`),
    ...Array.from({ length: 9 }, (_, i) => `chck_${(i + 2) * 10}M`),
  ]);
  const strict = TRACKS.strict.revisionWords.map(revisionName);
  assert.deepEqual(strict, [...small, ...Array.from({ length: 9 }, (_, i) => `chck_${(i + 2) * 100}M`)]);
  assert.equal(strict.at(-1), "chck_1000M");
  assert.deepEqual([TRACKS.strict.wordBudget, TRACKS["strict-small"].wordBudget], [100e6, 10e6]);
  assert.deepEqual(TRACKS["strict-small"].revisionWords.map(checkpointName).slice(9, 11), [
    "checkpoint_10M",
    "checkpoint_20M",
  ]);
});

Deno.test("export: the Strict-Small layout, files identical, a manifest; Strict needs up to 1000M", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await fakeRun(`${dir}/run`, TRACKS["strict-small"].revisionWords);
    const m = await exportRun(`${dir}/run`, `${dir}/out`);
    assert.equal(m.track, "strict-small", "the track defaults to the run's preset");
    const names = [];
    for await (const e of Deno.readDir(`${dir}/out`)) names.push(e.name);
    const expected = ["main", ...TRACKS["strict-small"].revisionWords.map(revisionName)];
    assert.deepEqual(names.sort(), [...expected, "manifest.json"].sort());
    for (const r of m.revisions) {
      const src = `${dir}/run/checkpoints/${r.checkpoint}`;
      for (const f of ["config.json", "model.safetensors", "tokenizer.json", "training_state.json"]) {
        assert.equal(
          await Deno.readTextFile(`${dir}/out/${r.revision}/${f}`),
          await Deno.readTextFile(`${src}/${f}`),
          `${r.revision}/${f}`,
        );
      }
    }
    assert.deepEqual(m.revisions[0], {
      revision: "main",
      checkpoint: "round2_po",
      wordsSeen: 123e6 + 17,
      step: 19,
    });
    assert.deepEqual(m.revisions[3], {
      revision: "chck_3M",
      checkpoint: "checkpoint_3M",
      wordsSeen: 3e6 + 17,
      step: 2,
    });
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/out/manifest.json`));
    assert.deepEqual(manifest, m);

    // The same run lacks everything past 100M for Strict.
    await assert.rejects(
      exportRun(`${dir}/run`, `${dir}/strict`, "strict"),
      (e: Error) => {
        assert.match(e.message, /9 of 29 revisions missing/);
        assert.match(e.message, /chck_200M needs .*checkpoints\/checkpoint_200M\n/);
        assert.match(e.message, /chck_1000M needs .*checkpoint_1000M/);
        return true;
      },
    );
    await assert.rejects(Deno.stat(`${dir}/strict`), Deno.errors.NotFound, "nothing written");
    await assert.rejects(exportRun(`${dir}/run`, `${dir}/out`), /--out .*out is not empty/);
    await assert.rejects(
      exportRun(`${dir}/run`, `${dir}/x`, "loose"),
      /--track must be one of strict, strict-small/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("export: missing and incomplete checkpoints are all named, and nothing is written", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const words = TRACKS["strict-small"].revisionWords.filter((w) => w !== 30e6);
    await fakeRun(`${dir}/run`, words);
    await Deno.remove(`${dir}/run/checkpoints/checkpoint_7M/model.safetensors`);
    await Deno.remove(`${dir}/run/checkpoints/round2_po`, { recursive: true });
    await Deno.mkdir(`${dir}/out`);
    await assert.rejects(exportRun(`${dir}/run`, `${dir}/out`, "strict-small"), (e: Error) => {
      assert.match(e.message, /3 of 20 revisions missing/);
      assert.match(e.message, /main needs .*checkpoints\/round2_po\n/);
      assert.match(e.message, /chck_7M needs .*checkpoint_7M \(it lacks model\.safetensors\)/);
      assert.match(e.message, /chck_30M needs .*checkpoint_30M\n/);
      return true;
    });
    const left = [];
    for await (const e of Deno.readDir(dir)) left.push(e.name);
    assert.deepEqual(left.sort(), ["out", "run"], "no partial folder left");
    for await (const _ of Deno.readDir(`${dir}/out`)) assert.fail("the empty output folder stays empty");
    await Deno.writeTextFile(`${dir}/cfg`, "{}");
    await assert.rejects(
      exportRun(`${dir}/nope`, `${dir}/o`, "strict"),
      /--run .*nope: no config\.json there/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
