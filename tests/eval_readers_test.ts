import assert from "node:assert/strict";
import { parseBlimp, parseEntityTracking, parseEwok, parseReadingCsv, parseWug } from "../eval/readers.ts";
import { parseCsv } from "../eval/csv.ts";
import { prepareTask } from "../eval/tasks.ts";
import { GreedyTokenizer } from "../eval/toy.ts";

const SHARED = new URL("../../shared/data/", import.meta.url);
const sharedPresent = (() => {
  try {
    Deno.statSync(SHARED);
    return true;
  } catch {
    return false;
  }
})();

const j = (o: unknown) => JSON.stringify(o);

Deno.test("BLiMP: fields, syntax_semantics renamed, supplement UID is the file stem", () => {
  const blimp = [
    j({
      sentence_good: "A b.",
      sentence_bad: "B a.",
      field: "syntax_semantics",
      linguistics_term: "quantifiers",
      UID: "q_1",
      pairID: "0",
    }),
    "",
    j({
      sentence_good: "C.",
      sentence_bad: "D.",
      field: "morphology",
      linguistics_term: "t",
      UID: "m",
      pair_id: 3,
    }),
  ].join("\n");
  const items = parseBlimp(blimp, "/x/q_1.jsonl");
  assert.equal(items.length, 2);
  assert.deepEqual(items[0], {
    sentences: ["A b.", "B a."],
    completions: ["A b.", "B a."],
    uid: "q_1",
    groups: { field: "syntax/semantics", linguistics_term: "quantifiers" },
  });
  assert.equal(items[1].groups.field, "morphology");
  const sup = parseBlimp(
    j({ row: 0, sentence_good: "What?\nI got a chair.", sentence_bad: "What?\nI got a teacher." }) + "\n",
    "dir/qa_congruence_easy.jsonl",
  );
  assert.equal(sup[0].uid, "qa_congruence_easy");
  assert.deepEqual(sup[0].groups, { field: "supplement", linguistics_term: "supplement" });
  assert.equal(sup[0].sentences[0], "What?\nI got a chair.");
});

Deno.test("malformed lines name the file and the line", () => {
  assert.throws(
    () => parseBlimp(`${j({ sentence_good: "a", sentence_bad: "b" })}\n{"sentence_good": "a",\n`, "f.jsonl"),
    /f\.jsonl:2: expected a JSON object, found invalid JSON/,
  );
  assert.throws(
    () => parseBlimp(`\n\n${j({ sentence_good: 3, sentence_bad: "b" })}`, "g.jsonl"),
    /g\.jsonl:3: field "sentence_good": expected a string, found 3/,
  );
  assert.throws(() => parseBlimp(`[1,2]`, "h.jsonl"), /h\.jsonl:1: expected a JSON object/);
  assert.throws(
    () =>
      parseEntityTracking(
        j({ input_prefix: "Box 0 contains ", numops: 1, options: ["the key."] }),
        "regular.jsonl",
      ),
    /regular\.jsonl:1: field "options": expected a list of at least 2 strings/,
  );
  assert.throws(
    () => parseEntityTracking(j({ input_prefix: "B ", numops: "1", options: ["a", "b"] }), "regular.jsonl"),
    /field "numops": expected an integer/,
  );
  assert.throws(
    () => parseWug(j({ sentences: "only one", ratio: 0.5 }), "w.jsonl"),
    /w\.jsonl:1: .*2 alternatives separated by a TAB, found 1/,
  );
  assert.throws(
    () => parseWug(j({ sentences: "a\tb", ratio: "x" }), "w.jsonl"),
    /field "ratio": expected a number/,
  );
  assert.throws(
    () => parseEwok(j({ Domain: "d", Context1: "c" }), "e.jsonl"),
    /e\.jsonl:1: field "Target1": expected a string, found nothing/,
  );
});

Deno.test("EWoK, entity tracking and WUG records become the pipeline's alternatives", () => {
  const ew = parseEwok(
    j({
      Domain: "social-relations",
      ConceptA: "a",
      ConceptB: "b",
      ContextType: "direct",
      ContextDiff: "antonym",
      TargetDiff: "concept swap",
      Context1: "Ann is tall.",
      Context2: "Ann is short.",
      Target1: "She reaches.",
      Target2: "She cannot reach.",
    }),
    "x/social-relations.jsonl",
  );
  assert.deepEqual(ew[0].sentences, ["Ann is tall. She reaches.", "Ann is tall. She cannot reach."]);
  assert.deepEqual(ew[0].completions, [" She reaches.", " She cannot reach."]);
  assert.equal(ew[0].uid, "social-relations");
  assert.deepEqual(ew[0].groups, {
    context_type: "direct",
    context_contrast: "antonym",
    target_contrast: "concept swap",
  });
  const et = parseEntityTracking(
    j({
      sample_id: 1,
      numops: 2,
      input_prefix: "Box 0 contains ",
      options: ["the key.", "the gift."],
      example_id: 1,
    }),
    "d/move_contents.jsonl",
  );
  assert.deepEqual(et[0].sentences, ["Box 0 contains the key.", "Box 0 contains the gift."]);
  assert.deepEqual(et[0].completions, ["the key.", "the gift."]);
  assert.equal(et[0].uid, "move_contents_2_ops");
  const w = parseWug(
    j({ sentences: "x. ability\tx. ableness", ratio: 0.25 }),
    "d/wug_adj_nominalization.jsonl",
  );
  assert.deepEqual(w[0], {
    sentences: ["x. ability", "x. ableness"],
    ratio: 0.25,
    uid: "wug_adj_nominalization",
  });
});

Deno.test("CSV: quoted fields, doubled quotes, embedded commas and newlines, CRLF; errors name the line", () => {
  const rows = parseCsv('a,b,c\r\n1,"x, y","he said ""hi"""\n2,"two\nlines",\n', "t.csv");
  assert.deepEqual(rows.map((r) => r.fields), [["a", "b", "c"], ["1", "x, y", 'he said "hi"'], [
    "2",
    "two\nlines",
    "",
  ]]);
  assert.deepEqual(rows.map((r) => r.line), [1, 2, 3]);
  assert.throws(() => parseCsv('a,b\n1,"open\n2,3\n', "u.csv"), /u\.csv:2: expected a closing quote/);
  assert.throws(() => parseCsv('a,b\n1,"x"y\n', "v.csv"), /v\.csv:2: expected a comma/);
});

const HEADER =
  ",item,word,word2,sentence,context_length,sent_id,item_id,list,Subtlex_log10,length,RTfirstfix,RTfirstpass,RTgopast," +
  "RTrightbound,self_paced_reading_time,ELAN,LAN,N400,P600,EPNP,PNP,prev_word,prev_item,prev_length";

Deno.test("reading CSV: missing item is 'None', pandas NA strings in prev_item mean no spillover", () => {
  const nums = "1,2,3,1,5.5,3,100,110,120,130,300,0.1,0.2,0.3,0.4,0.5,0.6";
  const text = [
    HEADER,
    `0,Arthur placed,the,THE,"Arthur placed the bars, then left.",${nums},placed,Arthur,6`,
    `1,,of,OF,None of them.,${nums},,,-1`,
    `2,A b,c,C,A b c.,${nums.replace("5.5", "")},b,None,1`,
  ].join("\n") + "\n";
  const rows = parseReadingCsv(text, "r.csv");
  assert.equal(rows.length, 3);
  assert.equal(rows[0].item, "Arthur placed");
  assert.equal(rows[0].prevItem, "Arthur");
  assert.equal(rows[0].prevWord, "placed");
  assert.equal(rows[0].num.Subtlex_log10, 5.5);
  assert.equal(rows[0].num.PNP, 0.6);
  assert.equal(rows[1].item, "None");
  assert.equal(rows[1].prevItem, null);
  assert.equal(rows[1].num.prev_length, -1);
  assert.ok(Number.isNaN(rows[2].num.Subtlex_log10));
  assert.equal(rows[2].prevItem, null, 'a prev_item of "None" is NA for pandas');
  assert.throws(
    () => parseReadingCsv(`${HEADER}\n0,a,b\n`, "r.csv"),
    /r\.csv:2: expected 25 fields, found 3/,
  );
  assert.throws(
    () => parseReadingCsv(`${HEADER}\n0,a,b,B,s,${nums.replace("100", "fast")},x,y,1\n`, "r.csv"),
    /r\.csv:2: column "RTfirstfix": expected a number, found "fast"/,
  );
  assert.throws(() => parseReadingCsv(`,item,word\n`, "r.csv"), /r\.csv:1: expected a column "prev_item"/);
});

Deno.test("task folders: fixtures in a temp dir; missing folders are named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const enc = new GreedyTokenizer();
    await Deno.mkdir(`${dir}/blimp_filtered`);
    await Deno.writeTextFile(
      `${dir}/blimp_filtered/a.jsonl`,
      j({ sentence_good: "ab", sentence_bad: "ba", field: "syntax", linguistics_term: "t", UID: "a" }) + "\n",
    );
    const t = await prepareTask("blimp", enc, { dataDir: dir, tasks: [], batchSize: 4 });
    assert.equal(t.spans.length, 2);
    await assert.rejects(
      () => prepareTask("supplement", enc, { dataDir: dir, tasks: [], batchSize: 4 }),
      /task supplement: expected the folder .*supplement_filtered/,
    );
    await assert.rejects(
      () => prepareTask("ewok", enc, { dataDir: dir, tasks: [], batchSize: 4 }),
      /task ewok: expected .*ewok_filtered\.zip or the folder/,
    );
    await assert.rejects(
      () => prepareTask("reading", enc, { dataDir: dir, tasks: [], batchSize: 4 }),
      /task reading: expected the file/,
    );
    await assert.rejects(
      () => prepareTask("nope", enc, { dataDir: dir, tasks: [], batchSize: 4 }),
      /unknown task "nope"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("real data: every file parses with the documented counts", async () => {
  if (!sharedPresent) {
    console.log("  skipped: ../shared/data is not present");
    return;
  }
  const full = new URL("babylm_eval_2025/full_eval/", SHARED).pathname;
  const count = async (dir: string, parse: (t: string, f: string) => unknown[]) => {
    let n = 0, files = 0;
    for (const e of Deno.readDirSync(dir)) {
      if (!e.name.endsWith(".jsonl")) continue;
      n += parse(await Deno.readTextFile(`${dir}/${e.name}`), e.name).length;
      files++;
    }
    return [files, n];
  };
  assert.deepEqual(await count(`${full}/blimp_filtered`, parseBlimp), [67, 59875]);
  assert.deepEqual(await count(`${full}/supplement_filtered`, parseBlimp), [5, 842 + 64 + 165 + 3867 + 280]);
  assert.deepEqual(await count(`${full}/entity_tracking`, parseEntityTracking), [3, 3224 + 3107 + 3152]);
  assert.deepEqual(await count(`${full}/wug_adj_nominalization`, parseWug), [1, 200]);
  assert.deepEqual(await count(new URL("blimp", SHARED).pathname, parseBlimp), [67, 67000]);
  const blimp = parseBlimp(
    await Deno.readTextFile(`${full}/blimp_filtered/adjunct_island.jsonl`),
    "adjunct_island.jsonl",
  );
  assert.equal(blimp[0].sentences[0], "Who should Derek hug after shocking Richard?");
  const rows = parseReadingCsv(
    await Deno.readTextFile(`${full}/reading/reading_data.csv`),
    "reading_data.csv",
  );
  assert.equal(rows.length, 1726);
  assert.equal(rows.filter((r) => r.prevItem === null).length, 206, "205 empty prev_item + one 'None'");
  assert.equal(rows.filter((r) => Number.isNaN(r.num.Subtlex_log10)).length, 30);
  console.log(
    "  blimp 59875, supplement 5218, entity tracking 9483, wug 200, original BLiMP 67000, reading 1726 rows",
  );
});
