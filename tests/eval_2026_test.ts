import assert from "node:assert/strict";
import { parseComps, parseEntityTracking, parseEwok, parseGlobalPiqa } from "../eval/readers.ts";
import { checkTaskData, choiceResult, evaluateModel, wugResult } from "../eval/tasks.ts";
import { wordsFromName } from "../eval/curve.ts";
import { main } from "../cli/eval.ts";
import { BigramScorer, GreedyTokenizer } from "../eval/toy.ts";
import type { ChoiceItem, Scorer, TextCodec } from "../eval/types.ts";

const SHARED = new URL("../../shared/data/", import.meta.url).pathname;
const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

function present(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    console.log(`  skipped: ${path} is not present`);
    return false;
  }
}

/** Tokens are UTF-16 code units, so a completion's tokens are exactly its characters. */
const CHARS: TextCodec = {
  addsBos: false,
  encode: (t) => Array.from(t, (c) => c.charCodeAt(0)),
  decode: (ids) => String.fromCharCode(...ids),
};

/** ln p of token i given the whole prefix: a hash of tokens 0..i in [−6, −0.1] (not normalised). */
function lp(ids: number[], i: number): number {
  let h = 0x811c9dc5;
  for (let k = 0; k <= i; k++) h = Math.imul(h ^ ids[k], 0x01000193);
  h = Math.imul(h ^ (h >>> 13), 0x5bd1e995);
  return -0.1 - 5.9 * (((h ^ (h >>> 15)) >>> 0) / 4294967296);
}

/** A scorer whose every log-probability depends on the whole prefix (a bigram model would tie COMPS). */
const CONTEXT: Scorer = {
  tokenLogprobs: (seqs) =>
    Promise.resolve(
      seqs.map((s) => Float32Array.from({ length: Math.max(0, s.length - 1) }, (_, i) => lp(s, i + 1))),
    ),
};

/** The pipeline's score of a sentence whose completion is its last `n` characters, computed directly. */
function direct(sentence: string, completion: string): number {
  const ids = CHARS.encode(sentence);
  let s = 0;
  for (let i = Math.max(1, ids.length - completion.length); i < ids.length; i++) s += Math.fround(lp(ids, i));
  return s;
}

Deno.test("2026 readers: EWoK compares contexts; entity tracking skips 'nothing'; COMPS and GlobalPIQA", () => {
  const ewok = JSON.stringify({
    Domain: "d",
    ContextType: "t",
    ContextDiff: "c",
    TargetDiff: "g",
    Context1: "The box is open.",
    Context2: "The box is shut.",
    Target1: "It can be filled.",
    Target2: "It cannot be filled.",
  });
  assert.deepEqual(parseEwok(ewok, "e.jsonl", "2026")[0].sentences, [
    "The box is open. It can be filled.",
    "The box is shut. It can be filled.",
  ]);
  assert.deepEqual(parseEwok(ewok, "e.jsonl", "2026")[0].completions, [
    " It can be filled.",
    " It can be filled.",
  ]);
  assert.deepEqual(parseEwok(ewok, "e.jsonl")[0].sentences, [
    "The box is open. It can be filled.",
    "The box is open. It cannot be filled.",
  ]);
  const et = [
    { input_prefix: "Box 1 contains", numops: 0, options: [" the apple.", " nothing."] },
    { input_prefix: "Box 1 contains", numops: 1, options: [" the apple.", " the pear."] },
    { input_prefix: "Box 1 contains", numops: 1, options: [" Nothing much.", " the pear."] },
  ].map((r) => JSON.stringify(r)).join("\n");
  assert.equal(parseEntityTracking(et, "regular.jsonl").length, 3);
  assert.deepEqual(parseEntityTracking(et, "regular.jsonl", "2026").map((i) => i.uid), [
    "regular_1_ops",
    "regular_1_ops",
  ]);
  const comps = ["comps_base", "comps_wugs", "comps_wugs_dist-before", "comps_wugs_dist-in-between"].map(
    (stem) => {
      const file = `${FIXTURES}comps/${stem}.jsonl`;
      return parseComps(Deno.readTextFileSync(file), file);
    },
  );
  assert.deepEqual(comps.map((items) => [items.length, items[0].uid]), [
    [3, "base"],
    [2, "wugs"],
    [2, "wugs_dist_before"],
    [1, "wugs_dist_in_between"],
  ]);
  assert.deepEqual(comps[1][0].sentences, [
    "A dax is a rabbit. Therefore, a dax has fur.",
    "A dax is a trout. Therefore, a dax has fur.",
  ]);
  assert.deepEqual(comps[1][0].completions, ["has fur.", "has fur."]);
  const piqa = JSON.stringify({ prompt: "P?", solution0: "a", solution1: "b", label: 1, example_id: "x" });
  assert.deepEqual(parseGlobalPiqa(piqa, "g.jsonl", 2)[0], {
    sentences: ["P? a", "P? b"],
    completions: [" a", " b"],
    label: 1,
    uid: "x",
    groups: {},
  });
  assert.throws(
    () => parseGlobalPiqa(piqa.replace('"label":1', '"label":2'), "g.jsonl", 2),
    /g\.jsonl:1: field "label"/,
  );
});

Deno.test("2026 ties: drawn with the seed, counted, and credited by their share; 2025 counts them wrong", () => {
  const items: ChoiceItem[] = ["u", "u", "u", "v", "v", "v", "v"].map((uid) => ({
    sentences: [],
    completions: [],
    uid,
    groups: {},
  }));
  items[6].label = 2;
  const scores = [[0, 0], [-1, -1], [1, 0], [NaN, -1], [-1, NaN], [0, 0, 0], [-2, 0, 0]];
  const old = choiceResult("blimp", items, scores);
  assert.equal(old.micro, 100 / 7, "only [1, 0]: ties and NaN are wrong");
  assert.equal(old.ties, undefined);
  const a = choiceResult("blimp", items, scores, { protocol: "2026", seed: 7 });
  const b = choiceResult("blimp", items, scores, { protocol: "2026", seed: 7 });
  assert.deepEqual(a, b, "the same seed draws the same ties");
  assert.equal(a.ties, 4);
  // Credits: 1/2, 1/2, 1, 0 (NaN is −∞), 1, 1/3, 1/2.
  const credit = [0.5, 0.5, 1, 0, 1, 1 / 3, 0.5];
  assert.ok(Math.abs(a.creditedMicro! - (100 * credit.reduce((s, v) => s + v)) / 7) < 1e-12);
  const uMean = (100 * (0.5 + 0.5 + 1)) / 3, vMean = (100 * (0 + 1 + 1 / 3 + 0.5)) / 4;
  assert.ok(Math.abs(a.creditedAverage! - (uMean + vMean) / 2) < 1e-12);
  assert.ok(Math.abs(a.groups.UID.v.creditedAccuracy! - vMean) < 1e-12);
  // Over many seeds the drawn accuracy averages to the credited one.
  let sum = 0;
  for (let seed = 0; seed < 3000; seed++) {
    sum += choiceResult("blimp", items, scores, { protocol: "2026", seed }).micro;
  }
  assert.ok(Math.abs(sum / 3000 - a.creditedMicro!) < 1.5, `${sum / 3000} vs ${a.creditedMicro}`);
  const unique = choiceResult("blimp", items.slice(2, 3), [[1, 0]], { protocol: "2026" });
  assert.equal(unique.ties, 0);
  assert.equal(unique.creditedMicro, 100);
});

Deno.test("WUG: float32 softmax as the pipeline; a saturated p = 1 ties", () => {
  const items = [0.9, 0.1, 0.5, 0.2].map((ratio, i) => ({
    sentences: ["a", "b"] as [string, string],
    ratio,
    uid: `w${i}`,
  }));
  // Differences 20 and 30 nats both give p = 1 in float32 (ranks 3.5, 3.5); float64 would rank them 3, 4.
  const r = wugResult(items, [20, 30, 0, -1], [0, 0, 0, 0]);
  assert.ok(Math.abs(r.spearman - 0.5 / Math.sqrt(4.5 * 5)) < 1e-12, `rho ${r.spearman}`);
});

Deno.test("COMPS and GlobalPIQA scored end to end: sums over the completion, GlobalPIQA per token", async () => {
  const res = await evaluateModel(CONTEXT, CHARS, {
    dataDir: FIXTURES,
    tasks: ["comps"],
    batchSize: 3,
    protocol: "2026",
  });
  const comps = res.comps;
  assert.equal(comps.kind, "choice");
  if (comps.kind !== "choice") return;
  let correct = 0;
  const perUid: Record<string, [number, number]> = {};
  for (const stem of ["comps_base", "comps_wugs", "comps_wugs_dist-before", "comps_wugs_dist-in-between"]) {
    const file = `${FIXTURES}comps/${stem}.jsonl`;
    for (const it of parseComps(Deno.readTextFileSync(file), file)) {
      const [g, b] = it.sentences.map((s, k) => direct(s, it.completions[k]));
      const ok = g > b ? 1 : 0;
      correct += ok;
      const t = (perUid[it.uid] ??= [0, 0]);
      t[0] += ok;
      t[1]++;
    }
  }
  assert.equal(comps.items, 8);
  assert.equal(comps.micro, (100 * correct) / 8);
  const uidMean = Object.values(perUid).reduce((s, [c, n]) => s + (100 * c) / n, 0) / 4;
  assert.ok(Math.abs(comps.average - uidMean) < 1e-9);
  assert.ok(correct > 0 && correct < 8, "the fixture's decisions depend on the prefix");

  const piqaDir = `${SHARED}babylm_eval_2026/full_eval`;
  if (!present(piqaDir)) return;
  const r = await evaluateModel(CONTEXT, CHARS, {
    dataDir: piqaDir,
    tasks: ["global_piqa_parallel", "global_piqa_nonparallel"],
    batchSize: 64,
    protocol: "2026",
  });
  for (
    const [task, n, count, labels] of [
      ["global_piqa_parallel", 4, 103, [25, 31, 25, 22]],
      ["global_piqa_nonparallel", 2, 100, [46, 54]],
    ] as const
  ) {
    const file = `${piqaDir}/${task}/eng_latn.jsonl`;
    const items = parseGlobalPiqa(Deno.readTextFileSync(file), file, n);
    assert.equal(items.length, count);
    assert.deepEqual(labels.map((_, k) => items.filter((it) => it.label === k).length), labels);
    let norm = 0, raw = 0, differ = 0;
    for (const it of items) {
      const sums = it.sentences.map((s, k) => direct(s, it.completions[k]));
      const means = sums.map((v, k) => v / it.completions[k].length);
      const best = (xs: number[]) => xs.indexOf(Math.max(...xs));
      if (best(means) === it.label) norm++;
      if (best(sums) === it.label) raw++;
      if (best(sums) !== best(means)) differ++;
    }
    const got = r[task];
    assert.ok(got.kind === "choice");
    if (got.kind !== "choice") continue;
    assert.equal(got.ties, 0);
    assert.equal(got.micro, (100 * norm) / count, task);
    assert.ok(Math.abs(got.average - got.micro) < 1e-9, "one item per UID (example_id)");
    console.log(
      `  ${task}: ${norm}/${count} with length normalisation, ${raw}/${count} without; ${differ} decisions differ`,
    );
    assert.ok(differ > 0, "length normalisation changes decisions here");
  }
});

Deno.test("entity tracking 2026 on the real data: the pipeline's per-UID counts after the 'nothing' skip", () => {
  const dir = `${SHARED}babylm_eval_2025/full_eval/entity_tracking`;
  if (!present(dir)) return;
  const sizes: Record<string, number> = {};
  for (const f of ["regular", "ambiref", "move_contents"]) {
    const file = `${dir}/${f}.jsonl`;
    for (const it of parseEntityTracking(Deno.readTextFileSync(file), file, "2026")) {
      sizes[it.uid] = (sizes[it.uid] ?? 0) + 1;
    }
  }
  // ENTITY_TRACKING_SIZES of the 2026 pipeline's collate_preds.py.
  const want = {
    regular: [517, 409, 405, 425, 388, 94],
    ambiref: [508, 428, 413, 409, 434, 123],
    move_contents: [516, 437, 399, 406, 353, 116],
  };
  for (const [split, ns] of Object.entries(want)) {
    ns.forEach((n, ops) => assert.equal(sizes[`${split}_${ops}_ops`], n, `${split}_${ops}_ops`));
  }
});

Deno.test("fast_eval layout; a failing task is reported and the command exits non-zero", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const j = JSON.stringify;
    await Deno.mkdir(`${dir}/fast/blimp_fast`, { recursive: true });
    await Deno.mkdir(`${dir}/fast/entity_tracking_fast`);
    await Deno.writeTextFile(
      `${dir}/fast/blimp_fast/p.jsonl`,
      [["ab ba", "ba ab"], ["a b", "b a"]].map(([g, b]) =>
        j({ sentence_good: g, sentence_bad: b, field: "syntax", linguistics_term: "t", UID: "p" })
      ).join("\n"),
    );
    await Deno.writeTextFile(
      `${dir}/fast/entity_tracking_fast/regular.jsonl`,
      j({ input_prefix: "Box 1 contains a long list of things and", numops: 0, options: [" x", " y"] }),
    );
    const fast = { dataDir: `${dir}/fast`, tasks: [], batchSize: 2, layout: "fast" as const };
    await checkTaskData("blimp", fast);
    await assert.rejects(() => checkTaskData("comps", fast), /task comps: not part of the fast_eval layout/);
    await assert.rejects(
      () => checkTaskData("blimp", { ...fast, layout: "full" }),
      /blimp_filtered, found none/,
    );

    await Deno.mkdir(`${dir}/m`);
    await Deno.writeTextFile(`${dir}/m/tokenizer.json`, "{}");
    const tok = new GreedyTokenizer();
    // 16 positions: BLiMP fits, the entity-tracking sentences (43 tokens) do not.
    const load = () => Promise.resolve({ scorer: new BigramScorer(tok.vocabSize, 16), encoder: tok });
    const args = ["--model", `${dir}/m`, "--data", `${dir}/fast`, "--layout", "fast", "--protocol", "2026"];
    await assert.rejects(
      () =>
        main([...args, "--tasks", "blimp,entity_tracking", "--output", `${dir}/r.json`, "--profile"], load),
      /1 task\(s\) failed:\n {2}entity_tracking: task entity_tracking: 2 of 2 sequences exceed the 17 tokens/,
    );
    const report = JSON.parse(await Deno.readTextFile(`${dir}/r.json`));
    assert.deepEqual(report.failed, ["entity_tracking"]);
    assert.equal(report.results.blimp.items, 2);
    assert.equal(report.results.entity_tracking.kind, "error");
    assert.equal(report.protocol, "2026");
    assert.equal(report.layout, "fast");
    assert.deepEqual(report.timing.map((t: { task: string }) => t.task), ["blimp", "entity_tracking"]);
    assert.equal(report.timing[0].sequences, 4);
    assert.ok("blimp" in report.headline && !("entity_tracking" in report.headline));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("2026 revision names give words seen", () => {
  assert.equal(wordsFromName("chck_30M"), 3e7);
  assert.equal(wordsFromName("chck_1000M"), 1e9);
});
