/**
 * The demo page's pure parts, without a browser: record checks on hostile run lines, the address
 * (parse, format, malformed input), the tar writer (unpacked by the system's `tar`), tick labels that
 * fit at any range, round labels that never collide, the per-round summary, the CSV export, and the
 * pairs' SimPO rewards (checked, joined to their pairs, sorted and filtered on).
 */
import assert, { deepEqual as assertEquals } from "node:assert/strict";
import {
  checkInteraction,
  checkMetrics,
  checkPairReward,
  pairsCsv,
  pairStats,
  parseRecords,
  summarizeRounds,
  withRewards,
} from "../demo/records.ts";
import { type Entry, selectPairs } from "../demo/pairs_view.ts";
import { emptyQuery, inspectHash, parseRoute } from "../demo/url_state.ts";
import { tarArchive } from "../demo/tar.ts";
import { niceTicks, roundLabelStep, tickLabels } from "../demo/plot.ts";
import type { MetricsRecord } from "../interaction/loop.ts";

Deno.test("records: bad lines are skipped and counted, with the reason and the line", () => {
  const lines = [
    JSON.stringify({ round: 0, index: 0, context: "c", student: "s", teacher: "t", studentTokens: [1] }),
    JSON.stringify({ round: 0, index: 1, context: { evil: 1 }, student: "s", teacher: "t" }),
    "",
    "{not json",
    JSON.stringify({ round: -1, index: 2, context: "c", student: "s", teacher: "t" }),
    JSON.stringify([1, 2]),
  ].join("\n");
  const p = parseRecords(lines, checkInteraction, "round_0.jsonl");
  assertEquals(p.rows, [{ round: 0, index: 0, source: undefined, context: "c", student: "s", teacher: "t" }]);
  assertEquals(p.bad, 4);
  assertEquals(p.problems[0], 'round_0.jsonl:2: "context" is not a string');
  assert(p.problems[1].startsWith("round_0.jsonl:4: not valid JSON"), p.problems[1]);
  assertEquals(p.problems[2], 'round_0.jsonl:5: "round" is not an integer >= 0');

  const m = (o: Record<string, unknown>) =>
    JSON.stringify({ phase: "sft", round: 0, epoch: 0, step: 1, lmLoss: 2, lr: 1e-3, wordsSeen: 5, ...o });
  const metrics = parseRecords(
    [m({}), m({ step: "two" }), m({ margin: "x" }), m({ margin: null }), m({ phase: "rl" })].join("\n"),
    checkMetrics,
    "metrics.jsonl",
  );
  assertEquals(metrics.rows.length, 2);
  assertEquals(metrics.bad, 3);
  assertEquals(metrics.problems, [
    'metrics.jsonl:2: "step" is not an integer >= 0',
    'metrics.jsonl:3: "margin" is not a finite number',
    'metrics.jsonl:5: "phase" is not "sft" or "po"',
  ]);
  assert(!("margin" in metrics.rows[1]), "null is absent");
});

Deno.test("url state: round trip, defaults left out, malformed parts reported not thrown", () => {
  const q = {
    round: 4,
    q: "a b&c=d%",
    sort: "overlap-asc" as const,
    filter: { key: "overlap" as const, max: 60 },
    pair: { round: 2, index: 17 },
  };
  const hash = inspectHash("run/1", q);
  assertEquals(
    hash,
    "#inspect/run%2F1?round=5&q=a+b%26c%3Dd%25&sort=overlap-asc&f=overlap%3A%3A60&pair=3.17",
  );
  const back = parseRoute(hash);
  assertEquals(back, {
    mode: "inspect",
    run: "run/1",
    query: { ...q, filter: { key: "overlap", min: undefined, max: 60 } },
  });
  assertEquals(inspectHash("r", emptyQuery()), "#inspect/r");
  assertEquals(parseRoute("#live"), { mode: "live", query: emptyQuery() });
  assertEquals(parseRoute(""), { mode: "live", query: emptyQuery() });
  const bad = parseRoute("#inspect/%E0%A4%A?round=x&sort=nope&pair=1&q=%ZZ");
  assertEquals(bad.run, undefined);
  assertEquals(bad.query.q, "%ZZ");
  assert(bad.problem!.includes("malformed %-escape"), bad.problem);
  for (const part of ["round=x", "sort=nope", "pair=1"]) {
    assert(bad.problem!.includes(part), `${part}: ${bad.problem}`);
  }
  assertEquals(parseRoute("#inspect?round=all").query.round, "all");
});

Deno.test("tar: the system's tar unpacks the archive to the same files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "demo-tar-test-" });
  try {
    const long = `run/${"checkpoints/checkpoint_".repeat(6)}10K/model.safetensors`;
    const files = new Map<string, string | Uint8Array>([
      ["run/config.json", '{"a": 1}\n'],
      ["run/interactions/round_0.jsonl", "é ü 中\n".repeat(300)],
      [long, new Uint8Array(1025).map((_, i) => i % 251)],
      ["run/empty.txt", ""],
    ]);
    const tar = tarArchive(files, Date.UTC(2026, 0, 1));
    assertEquals(tar.length % 512, 0);
    await Deno.writeFile(`${dir}/a.tar`, tar);
    const r = await new Deno.Command("tar", { args: ["xf", "a.tar"], cwd: dir, stderr: "piped" }).output();
    assert(r.success, new TextDecoder().decode(r.stderr));
    for (const [path, content] of files) {
      const got = await Deno.readFile(`${dir}/${path}`);
      assertEquals(got, typeof content === "string" ? new TextEncoder().encode(content) : content, path);
    }
    assert.throws(() => tarArchive(new Map([["../x", "a"]])), /not a relative path/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plot: tick labels stay short and distinct at any range; round labels never collide", () => {
  const cases: Array<[number, number]> = [
    [0, 1],
    [1, 3],
    [0, 200_000],
    [1e-9, 3e-9],
    [-1.7e308, 1.7e308],
    [5.69, 5.7],
    [999_000, 1_001_000],
    [0.0001, 0.01],
    [-3, 3e6],
  ];
  for (const [lo, hi] of cases) {
    const labels = tickLabels(niceTicks(lo, hi, 4));
    console.log(`  [${lo}, ${hi}] -> ${labels.join(" ")}`);
    assert(labels.length >= 2, `ticks for [${lo}, ${hi}]`);
    assertEquals(new Set(labels).size, labels.length, `distinct: ${labels}`);
    assert(labels.every((l) => l.length <= 7), `short enough for the margin: ${labels}`);
    assert(labels.every((l) => !l.includes(",") && !l.includes("(")), labels.join(" "));
  }
  // 20 rounds across a 300-unit-wide plot: labels at least 26 units apart.
  const px = Array.from({ length: 19 }, (_, i) => 40 + (i + 1) * 15);
  const k = roundLabelStep(px, 26);
  const shown = px.filter((_, i) => i % k === 0);
  assert(shown.every((x, i) => i === 0 || x - shown[i - 1] >= 26), `${k}: ${shown}`);
  assertEquals(k, 2);
  assertEquals(roundLabelStep([10, 100, 200], 26), 1);
});

Deno.test("summary: step means per phase, pair means; CSV quotes what needs it", () => {
  const m = (phase: "sft" | "po", round: number, step: number, extra: Partial<MetricsRecord> = {}) =>
    ({
      phase,
      round,
      epoch: 0,
      step,
      lmLoss: step,
      lr: 0,
      wordsSeen: step,
      gradNorm: 1,
      tokensPerSec: 1,
      time: "",
      ...extra,
    }) as MetricsRecord;
  const metrics = [
    m("sft", 0, 1),
    m("sft", 0, 2),
    m("po", 0, 3, { chosenReward: -1, rejectedReward: -3, margin: 2, winRate: 1 }),
    m("po", 0, 4, { chosenReward: -2, rejectedReward: -2, margin: 0, winRate: 0.5 }),
    m("sft", 1, 5),
  ];
  const pair = { round: 0, index: 0, context: 'say "hi",\nthen', student: "a b c d", teacher: "a x c" };
  const stats = pairStats(pair);
  assertEquals(stats, { shared: 2, studentWords: 4, teacherWords: 3, overlap: 0.5 });
  const rows = summarizeRounds(metrics, new Map([[0, [stats, { ...stats, overlap: 1, studentWords: 2 }]]]));
  assertEquals(rows, [
    {
      round: 0,
      steps: 4,
      lmLoss: 1.5,
      chosenReward: -1.5,
      rejectedReward: -2.5,
      margin: 1,
      winRate: 0.75,
      pairs: 2,
      overlap: 0.75,
      studentWords: 3,
      teacherWords: 3,
    },
    {
      round: 1,
      steps: 1,
      lmLoss: 5,
      chosenReward: undefined,
      rejectedReward: undefined,
      margin: undefined,
      winRate: undefined,
    },
  ]);
  const csv = pairsCsv([{ pair, stats }]);
  assertEquals(
    csv,
    "round,index,source,shared_words,overlap,student_words,teacher_words,chosen_reward,rejected_reward," +
      "margin,context,student,teacher\r\n" +
      '1,0,,2,0.5,4,3,,,,"say ""hi"",\nthen",a b c d,a x c\r\n',
  );
});

Deno.test("pair rewards: checked on load, joined by datapoint, sorted and filtered on; pairs without them", () => {
  const line = (o: Record<string, unknown>) =>
    JSON.stringify({
      round: 0,
      index: 0,
      chosen: -1,
      rejected: -2,
      margin: 1,
      epoch: 0,
      batch: 0,
      step: 3,
      ...o,
    });
  const rewards = parseRecords(
    [
      line({ index: 2, chosen: -1.5, rejected: -1, margin: -0.5 }),
      line({ index: 0, chosen: -3, rejected: -5, margin: 2 }),
      line({ index: 1, margin: "big" }),
      line({ index: 3, chosen: null }),
    ].join("\n"),
    checkPairReward,
    "round_0.rewards.jsonl",
  );
  assertEquals(rewards.bad, 2);
  assertEquals(rewards.problems, [
    'round_0.rewards.jsonl:3: "margin" is not a finite number',
    'round_0.rewards.jsonl:4: "chosen" is not a finite number',
  ]);
  const pair = (index: number) => ({ round: 0, index, context: "c", student: "s t", teacher: "s u" });
  // Datapoint 1's line was bad and 3's too: those pairs have no rewards.
  const joined = withRewards([0, 1, 2, 3].map(pair), rewards.rows);
  assertEquals(joined.map((p) => p.reward), [
    { chosen: -3, rejected: -5, margin: 2 },
    undefined,
    { chosen: -1.5, rejected: -1, margin: -0.5 },
    undefined,
  ]);
  const rounds = new Map<number, Entry[] | null>([[
    0,
    joined.map((p) => ({ pair: p, stats: pairStats(p) })),
  ]]);
  const order = (q: Partial<Parameters<typeof selectPairs>[1]>) =>
    selectPairs(rounds, { q: "", sort: "index", ...q }, 0).map((e) => e.pair.index);
  assertEquals(order({ sort: "margin-asc" }), [2, 0, 1, 3], "smallest margin first, no rewards last");
  assertEquals(order({ sort: "margin-desc" }), [0, 2, 1, 3]);
  assertEquals(order({ sort: "chosen-desc" }), [2, 0, 1, 3]);
  assertEquals(order({ sort: "rejected-desc" }), [2, 0, 1, 3]);
  assertEquals(order({ filter: { key: "margin", min: 0 } }), [0], "a reward range leaves out pairs without");
  assertEquals(order({ filter: { key: "chosen", max: -2 } }), [0]);
  assertEquals(order({ filter: { key: "rejected", min: -1.5, max: -1 } }), [2]);
  assertEquals(order({ filter: { key: "overlap", min: 0 } }), [0, 1, 2, 3], "other filters keep them");
  // The address keeps reward orders and filters, negative bounds included.
  const q = {
    ...emptyQuery(),
    sort: "margin-desc" as const,
    filter: { key: "chosen" as const, min: -6, max: -3 },
  };
  assertEquals(parseRoute(inspectHash("r", q)).query, q);
  // Exports carry the rewards.
  const csv = pairsCsv(rounds.get(0)!.slice(0, 2)).split("\r\n");
  assertEquals(csv[1].split(",").slice(7, 10), ["-3", "-5", "2"]);
  assertEquals(csv[2].split(",").slice(7, 10), ["", "", ""]);
});
