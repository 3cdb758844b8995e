import assert from "node:assert/strict";
import {
  curveCsv,
  curveHtml,
  curveJson,
  type CurvePoint,
  curveSvg,
  findCheckpoints,
  wordsFromName,
  wordsFromState,
} from "../eval/curve.ts";
import { formatReport, makeReport } from "../eval/report.ts";
import { choiceResult } from "../eval/tasks.ts";
import { main } from "../cli/eval.ts";
import { BigramScorer, GreedyTokenizer } from "../eval/toy.ts";

/**
 * A strict check that `xml` is well-formed: one root, balanced and properly nested tags, quoted
 * attributes without duplicates, and only the five predefined or numeric entities. Returns the tag counts.
 */
function checkXml(xml: string): Map<string, number> {
  const counts = new Map<string, number>();
  const stack: string[] = [];
  let roots = 0;
  const text = (t: string) => {
    for (const m of t.matchAll(/&([^;]*);?/g)) {
      assert.ok(
        /^(lt|gt|amp|quot|apos|#\d+|#x[0-9a-fA-F]+)$/.test(m[1]) && m[0].endsWith(";"),
        `bad entity ${m[0]}`,
      );
    }
    assert.ok(!t.includes("<") && !t.includes(">"), "stray angle bracket");
  };
  let i = xml.indexOf("<");
  assert.equal(xml.slice(0, i).trim(), "", "text before the root");
  while (i < xml.length) {
    const j = xml.indexOf(">", i);
    assert.ok(j > i, `unclosed tag at ${i}`);
    const tag = xml.slice(i + 1, j);
    if (tag.startsWith("/")) {
      const name = tag.slice(1).trim();
      assert.equal(stack.pop(), name, `mismatched </${name}>`);
    } else {
      const selfClosing = tag.endsWith("/");
      const body = selfClosing ? tag.slice(0, -1) : tag;
      const m = /^([A-Za-z_][\w:.-]*)((?:\s+[A-Za-z_][\w:.-]*="[^"<]*")*)\s*$/.exec(body);
      assert.ok(m, `malformed tag <${tag}>`);
      const names = [...m[2].matchAll(/([\w:.-]+)="([^"]*)"/g)].map((a) => {
        text(a[2]);
        return a[1];
      });
      assert.equal(new Set(names).size, names.length, `duplicate attribute in <${m[1]}>`);
      if (stack.length === 0) roots++;
      counts.set(m[1], (counts.get(m[1]) ?? 0) + 1);
      if (!selfClosing) stack.push(m[1]);
    }
    const k = xml.indexOf("<", j + 1);
    const next = k < 0 ? xml.length : k;
    const t = xml.slice(j + 1, next);
    if (stack.length === 0) assert.equal(t.trim(), "", "text after the root");
    else text(t);
    i = next;
  }
  assert.equal(stack.length, 0, `unclosed <${stack.at(-1)}>`);
  assert.equal(roots, 1);
  return counts;
}

const POINTS: CurvePoint[] = [
  { name: "checkpoint_1M", words: 1e6, headline: { blimp: 55.1, wug: 0.12, "reading/eye_tracking": 0.4 } },
  { name: "round_01_po", words: 5.2e6, headline: { blimp: 58.9, wug: NaN, "reading/eye_tracking": 0.9 } },
  { name: "checkpoint_10M", words: 1e7, headline: { blimp: 61.3, wug: 0.3, "reading/eye_tracking": 1.2 } },
  {
    name: "checkpoint_100M",
    words: 1e8,
    headline: { blimp: 66.0, wug: 0.35, "reading/eye_tracking": 1.5, 'a<b&c,"d"': 1 },
  },
];

Deno.test("learning curve: SVG and HTML are well-formed and self-contained; CSV and JSON tables", async () => {
  const svg = curveSvg(POINTS, "Run <x> & y");
  const counts = checkXml(svg);
  assert.equal(counts.get("svg"), 1);
  assert.equal(counts.get("circle"), 4 + 3 + 4 + 1, "one dot per finite value");
  assert.equal(counts.get("path"), 4, "one line per metric");
  assert.ok(!/href|<script|@import|url\(/i.test(svg), "no external references or scripts");
  assert.ok(svg.includes("(log scale)"));
  const html = curveHtml(POINTS, "t");
  assert.ok(html.startsWith("<!doctype html>") && !/<script|href=|src=/i.test(html));
  checkXml(html.slice(html.indexOf("<svg"), html.indexOf("</svg>") + 6));
  const csv = curveCsv(POINTS).trimEnd().split("\n");
  assert.equal(csv[0], 'checkpoint,words_seen,blimp,wug,reading/eye_tracking,"a<b&c,""d"""');
  assert.equal(csv[2], "round_01_po,5200000,58.9,,0.9,");
  const json = JSON.parse(curveJson(POINTS));
  assert.equal(json.rows[1].wug, null);
  assert.equal(json.rows[3]['a<b&c,"d"'], 1);
  // An independent XML parser, when Python is installed.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/c.svg`, svg);
    const r = await new Deno.Command("python3", {
      args: [
        "-c",
        "import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); print(r.tag)",
        `${dir}/c.svg`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output().catch(() => undefined);
    if (r === undefined) console.log("  python3 not found: the ElementTree check is skipped");
    else {
      assert.ok(r.success, new TextDecoder().decode(r.stderr));
      assert.equal(new TextDecoder().decode(r.stdout).trim(), "{http://www.w3.org/2000/svg}svg");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint words: from names and from training_state.json", () => {
  assert.equal(wordsFromName("checkpoint_10M"), 1e7);
  assert.equal(wordsFromName("checkpoint_1.5B"), 1.5e9);
  assert.equal(wordsFromName("checkpoint_250k"), 250000);
  assert.equal(wordsFromName("checkpoint_1200"), 1200);
  assert.equal(wordsFromName("round_3"), undefined);
  assert.equal(wordsFromState({ round: 2, progress: { wordsSeen: 123 } }), 123);
  assert.equal(wordsFromState({ words_seen: 7 }), 7);
  assert.equal(wordsFromState({ a: { b: { c: { words: 1 } } } }), undefined);
});

Deno.test("the text report lists every task", () => {
  const items = [{ sentences: [], completions: [], uid: "a", groups: { field: "syntax" } }];
  const r = makeReport("m", { tasks: ["blimp"], batchSize: 8 }, 1, {
    blimp: choiceResult("blimp", items, [[0, -1]]),
  });
  const text = formatReport(r);
  assert.match(text, /blimp\s+accuracy, mean over UIDs\s+100\.00\s+1/);
  assert.equal(r.headline.blimp, 100);
});

async function writeFixtures(dir: string): Promise<void> {
  const j = JSON.stringify;
  await Deno.mkdir(`${dir}/data/blimp_filtered`, { recursive: true });
  await Deno.mkdir(`${dir}/data/wug_adj_nominalization`);
  const blimp = [["the cat sat", "cat the sat"], ["a dog ran", "dog a ran"], ["we ate", "ate we"]];
  await Deno.writeTextFile(
    `${dir}/data/blimp_filtered/p.jsonl`,
    blimp.map(([g, b], i) =>
      j({ sentence_good: g, sentence_bad: b, field: "syntax", linguistics_term: "t", UID: `u${i % 2}` })
    ).join("\n"),
  );
  await Deno.writeTextFile(
    `${dir}/data/wug_adj_nominalization/w.jsonl`,
    [0.1, 0.6, 0.3].map((r, i) => j({ sentences: `n${i}ity\tn${i}ness`, ratio: r })).join("\n"),
  );
  const ckpt = async (name: string, state?: unknown) => {
    await Deno.mkdir(`${dir}/run/${name}`, { recursive: true });
    await Deno.writeTextFile(`${dir}/run/${name}/config.json`, "{}");
    await Deno.writeTextFile(`${dir}/run/${name}/tokenizer.json`, "{}");
    if (state) await Deno.writeTextFile(`${dir}/run/${name}/training_state.json`, j(state));
  };
  await ckpt("checkpoint_10M");
  await ckpt("checkpoint_1M");
  await ckpt("round_01_sft_end", { round: 1, wordsSeen: 4e6 });
  await ckpt("mystery");
  await Deno.mkdir(`${dir}/run/logs`);
}

Deno.test("deno task eval: one model and a run's learning curves, with a CPU model", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeFixtures(dir);
    const tok = new GreedyTokenizer([" the"]);
    const loaded: string[] = [];
    const load = (modelDir: string) => {
      loaded.push(modelDir);
      // Each checkpoint gets a different toy model (seed) so the curve is not flat.
      return Promise.resolve({
        scorer: new BigramScorer(tok.vocabSize, undefined, loaded.length),
        encoder: tok,
      });
    };
    const found = await findCheckpoints(`${dir}/run`);
    assert.deepEqual(found.checkpoints.map((c) => [c.name, c.words]), [["checkpoint_1M", 1e6], [
      "round_01_sft_end",
      4e6,
    ], ["checkpoint_10M", 1e7]]);
    assert.equal(found.skipped.length, 1);
    assert.match(found.skipped[0], /mystery: no training_state\.json/);

    const one = `${dir}/run/checkpoint_1M`;
    await main([
      "--model",
      one,
      "--data",
      `${dir}/data`,
      "--tasks",
      "blimp,wug",
      "--batch-size",
      "2",
      "--output",
      `${dir}/one.json`,
    ], load);
    const report = JSON.parse(await Deno.readTextFile(`${dir}/one.json`));
    assert.deepEqual(Object.keys(report.results), ["blimp", "wug"]);
    assert.equal(report.results.blimp.items, 3);
    assert.ok(Number.isFinite(report.headline.blimp) && "wug" in report.headline);

    await main(["--run", `${dir}/run`, "--data", `${dir}/data`, "--tasks", "blimp,wug"], load);
    assert.equal(loaded.length, 1 + 3);
    const csv = (await Deno.readTextFile(`${dir}/run/eval/learning_curve.csv`)).trimEnd().split("\n");
    assert.equal(csv[0], "checkpoint,words_seen,blimp,wug");
    assert.deepEqual(csv.slice(1).map((l) => l.split(",").slice(0, 2).join(",")), [
      "checkpoint_1M,1000000",
      "round_01_sft_end,4000000",
      "checkpoint_10M,10000000",
    ]);
    checkXml(await Deno.readTextFile(`${dir}/run/eval/learning_curve.svg`));
    assert.ok((await Deno.readTextFile(`${dir}/run/eval/learning_curve.html`)).includes("<svg"));
    // A second run reuses the per-checkpoint reports.
    await main(["--run", `${dir}/run`, "--data", `${dir}/data`, "--tasks", "blimp"], load);
    assert.equal(loaded.length, 4);

    await assert.rejects(
      () => main(["--model", `${dir}/run/logs`, "--data", `${dir}/data`, "--tasks", "blimp"], load),
      /expected tokenizer\.json/,
    );
    await assert.rejects(
      () => main(["--model", one, "--data", `${dir}/data`, "--tasks", "ewok"], load),
      /task ewok: expected .*ewok_filtered\.zip/,
    );
    await assert.rejects(
      () => main(["--model", one, "--tasks", "blimp"], load),
      /missing required option --data/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
