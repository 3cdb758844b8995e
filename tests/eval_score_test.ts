import assert from "node:assert/strict";
import { completionSpan, firstOverlapping, scoreSpans, type Span } from "../eval/score.ts";
import { choiceResult, evaluateModel, wugResult } from "../eval/tasks.ts";
import { readingRegressions, wordSpans } from "../eval/reading.ts";
import { perplexitySpans } from "../eval/perplexity.ts";
import { BigramScorer, GreedyTokenizer } from "../eval/toy.ts";
import type { ChoiceItem, TextCodec } from "../eval/types.ts";
import type { ReadingRow } from "../eval/readers.ts";
import { assertClose, randn } from "./util.ts";

const PIECES = [" the", "Box", " contains", "ey.", "s t", "ke", " a", "ab", "ba"];

/** The same tokenizer with exact offsets from its pieces (the tokenEnds path). */
class WithEnds extends GreedyTokenizer {
  tokenEnds(text: string): number[] {
    let e = 0;
    return this.split(text).map((p) => (e += p.length));
  }
}
/** The same tokenizer whose decode does not round-trip (the prefix-tokenization fallback). */
class Lossy extends GreedyTokenizer {
  override decode(ids: number[]): string {
    return super.decode(ids).toUpperCase();
  }
}
/** UTF-8 bytes as tokens: decode gives U+FFFD for a split character, like byte-level BPE. */
const bytes: TextCodec = {
  addsBos: false,
  encode: (t) => [...new TextEncoder().encode(t)].map((b) => b + 1),
  decode: (ids) => new TextDecoder().decode(new Uint8Array(ids.map((i) => i - 1))),
};

/** First token whose end (from the pieces, by hand) exceeds startChar. */
function expectedFirst(tok: GreedyTokenizer, text: string, startChar: number): number {
  let e = 0;
  const k = tok.split(text).findIndex((p) => (e += p.length) > startChar);
  return k < 0 ? tok.split(text).length : k;
}

const CASES: Array<[string, string]> = [
  ["Box 0 contains the key.", "the key."], // " the" straddles the boundary: its space is in the prefix
  ["its tea", "tea"], // "s t" straddles the boundary
  ["Ann is tall. She reaches.", " She reaches."],
  ["a b", "b"],
  ["Box 1 contains ", " "],
  ["whole sentence", "whole sentence"],
];

Deno.test("completion masks: every token overlapping the completion, by three methods", () => {
  const toks = [new GreedyTokenizer(PIECES), new WithEnds(PIECES), new Lossy(PIECES)];
  for (const [s, c] of CASES) {
    const start = s.length - c.length;
    const want = expectedFirst(toks[0], s, start);
    for (const t of toks) {
      assert.equal(
        firstOverlapping(t, s, t.encode(s), start),
        want,
        `${t.constructor.name}: ${JSON.stringify([s, c])}`,
      );
    }
  }
  // Byte tokens: "é" is two tokens; a completion starting at "é" takes its first byte's token.
  assert.equal(firstOverlapping(bytes, "café au lait", bytes.encode("café au lait"), 3), 3);
  assert.equal(firstOverlapping(bytes, "café au lait", bytes.encode("café au lait"), 4), 5);
  assert.equal(completionSpan(bytes, "café", "é").from, 3);
  assert.throws(() => completionSpan(bytes, "abc", "x"), /not a suffix/);
});

Deno.test("per-item score = sum of ln p over completion-overlapping tokens; sorted batches, input order", async () => {
  for (const addsBos of [false, true]) {
    const tok = new GreedyTokenizer(PIECES, addsBos);
    const lm = new BigramScorer(tok.vocabSize);
    const sentences = [...CASES, ["Box 2 contains the cake and the tea.", "the tea."], [
      "ab ba ab",
      "b ba ab",
    ]];
    const spans: Span[] = sentences.map(([s, c]) => completionSpan(tok, s, c));
    const got = await scoreSpans(lm, spans, { batchSize: 3 });
    const want = sentences.map(([s, c]) => {
      const ids = [...(addsBos ? [0] : []), ...tok.encode(s)];
      const k = expectedFirst(tok, s, s.length - c.length) + (addsBos ? 1 : 0);
      let sum = 0;
      for (let i = Math.max(1, k); i < ids.length; i++) sum += lm.logprob(ids[i - 1], ids[i]);
      return sum;
    });
    assertClose(`scores addsBos=${addsBos}`, got, want, { rtol: 1e-5, atol: 1e-5 });
    const lens = lm.calls.flat();
    assert.deepEqual(lens, [...lens].sort((a, b) => a - b), "sequences are scored shortest first");
    assert.ok(lm.calls.every((c) => c.length <= 3));
    assert.equal(lens.length, sentences.length);
  }
  // A model with 4 positions scores 5 tokens (it reads the first 4, as the pipeline feeds tokens[:-1]).
  const four = new BigramScorer(300, 4);
  const fits = await scoreSpans(four, [{ ids: [1, 2, 3, 4, 5], from: 1 }], { batchSize: 2 });
  assertClose(
    "n_positions + 1 tokens",
    fits,
    [[2, 3, 4, 5].reduce((s, t) => s + four.logprob(t - 1, t), 0)],
    {
      rtol: 1e-6,
    },
  );
  const long = [{ ids: [1, 2, 3, 4, 5, 6], from: 1 }, { ids: [1, 2], from: 1 }];
  await assert.rejects(
    () => scoreSpans(four, long, { batchSize: 2, label: "task x" }),
    /task x: 1 of 2 sequences exceed the 5 tokens the model scores \(4 positions; the longest has 6\)/,
  );
  const nan = await scoreSpans(four, long, { batchSize: 2, unfit: "nan" });
  assert.ok(Number.isNaN(nan[0]) && Math.abs(nan[1] - four.logprob(1, 2)) < 1e-6);
});

Deno.test("accuracy: ties are wrong, macro over UIDs, micro, groups, entity-tracking splits", () => {
  const item = (uid: string, field = "f"): ChoiceItem => ({
    sentences: [],
    completions: [],
    uid,
    groups: { field },
  });
  const items = [item("a"), item("a"), item("a", "g"), item("b", "g")];
  const r = choiceResult("blimp", items, [[-1, -2], [-2, -2], [-3, -1], [0, -5]]);
  assert.equal(r.groups.UID.a.correct, 1);
  assertClose("macro, micro", [r.average, r.micro], [(100 / 3 + 100) / 2, 50], { rtol: 1e-12, atol: 0 });
  assert.deepEqual(r.groups.field.g, { correct: 1, total: 2, accuracy: 50 });
  const et = ["regular_0_ops", "regular_1_ops", "regular_1_ops", "ambiref_0_ops"].map((u) => item(u));
  const e = choiceResult("entity_tracking", et, [[0, -1, -1], [0, -1, 0], [0, -1, -2], [-1, 0, -2]]);
  // regular: UIDs at 100 and 50 -> 75; ambiref 0; mean of splits 37.5 (micro 50).
  assert.deepEqual(e.splits, { regular: 75, ambiref: 0 });
  assert.equal(e.average, 37.5);
  assert.equal(e.micro, 50);
});

Deno.test("WUG: p(first) is the softmax of the pair; Spearman with the ratio", () => {
  const items = [0.9, 0.5, 0.1, 0.3].map((ratio) => ({
    sentences: ["a", "b"] as [string, string],
    ratio,
    uid: "w",
  }));
  // differences s1 − s2 = 2, 1, −1, 0 give p = σ(2), σ(1), σ(−1), ½: the order of the ratios -> rho = 1.
  const r = wugResult(items, [2, 1, -1, 0], [0, 0, 0, 0]);
  assert.equal(r.spearman, 1);
  assert.equal(r.preferFirst, 50);
  // p = σ(−2), ½, σ(1), σ(−1): ranks 1, 3, 4, 2 against ratio ranks 4, 3, 1, 2 -> rho = 1 − 6·18/60.
  assertClose("rho", [wugResult(items, [0, 0, 1, 0], [2, 0, 0, 1]).spearman], [1 - 108 / 60], {
    rtol: 1e-12,
    atol: 1e-15,
  });
});

Deno.test("reading: word surprisal follows the pipeline's token-by-token construction", async () => {
  const tok = new GreedyTokenizer(["ke", " the"]);
  const lm = new BigramScorer(tok.vocabSize);
  const spans = wordSpans(tok, "a nice", "cake", "r.csv:2");
  // "cake" -> c, a, ke: three predictions, each after tokenize(context + decoded tokens so far).
  assert.deepEqual(spans.map((s) => tok.decode(s.ids)), ["a nicec", "a niceca", "a nicecake"]);
  const sums = await scoreSpans(lm, spans, { batchSize: 8 });
  const ids = tok.encode("a nicecake");
  let direct = 0;
  for (let i = ids.length - 3; i < ids.length; i++) direct += lm.logprob(ids[i - 1], ids[i]);
  assertClose("ln p(cake | a nice)", [sums.reduce((s, v) => s + v, 0)], [direct], { rtol: 1e-5, atol: 1e-6 });
  assert.throws(() => wordSpans(tok, "", "x", "r.csv:9"), /r\.csv:9: the context "" has no tokens/);
});

Deno.test("reading regressions: pred recovered; spillover drops rows without prev_pred; score formula", () => {
  const n = 400;
  const e = randn(5 * n, 5);
  const rows: ReadingRow[] = [], pred = new Float64Array(n), prev = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const S = 10 + 2 * e[i], L = 2 + (i % 9), C = 1 + (i % 13), PL = i % 7 === 0 ? -1 : 1 + (i % 5);
    pred[i] = 6 + 2 * e[n + i];
    prev[i] = i % 7 === 0 ? NaN : 6 + 2 * e[2 * n + i];
    const noise = 5 * e[3 * n + i];
    const rt = 150 - 2 * S + 4 * L + 0.2 * S * L + 3 * pred[i] + noise;
    const num: Record<string, number> = { Subtlex_log10: S, length: L, context_length: C, prev_length: PL };
    for (
      const dv of [
        "RTfirstfix",
        "RTfirstpass",
        "RTgopast",
        "RTrightbound",
        "ELAN",
        "LAN",
        "N400",
        "P600",
        "EPNP",
        "PNP",
      ]
    ) {
      num[dv] = rt + e[4 * n + i] * (dv.length % 3);
    }
    num.self_paced_reading_time = 300 + 2 * (Number.isNaN(prev[i]) ? 0 : prev[i]) * L + 5 * pred[i] + noise;
    rows.push({ line: i + 2, item: "x", word: "y", prevItem: null, prevWord: null, num });
  }
  const r = readingRegressions(rows, pred, prev);
  const ff = r.noSpillover[0];
  assert.equal(ff.dv, "RTfirstfix");
  assertClose("pred coefficient", [ff.coefficient], [3], { rtol: 0.1, atol: 0 });
  assert.equal(ff.n, n);
  for (const f of [...r.noSpillover, ...r.spillover]) {
    assertClose(`score ${f.dv}`, [f.score], [((f.r2 - f.r2Baseline) / (1 - f.r2Baseline)) * 100], {
      rtol: 1e-12,
      atol: 1e-12,
    });
  }
  const spr = r.spillover.find((f) => f.dv === "self_paced_reading_time")!;
  assert.equal(spr.n, n - Math.ceil(n / 7));
  assertClose("spr pred coefficient", [spr.coefficient], [5], { rtol: 0.1, atol: 0 });
  assert.equal(r.selfPaced, spr.score);
  assertClose("eye tracking = mean of RT* scores", [r.eyeTracking], [
    r.noSpillover.slice(0, 4).reduce((s, f) => s + f.score, 0) / 4,
  ], { rtol: 1e-12, atol: 0 });
});

Deno.test("perplexity windows predict every token exactly once", async () => {
  const tok = new GreedyTokenizer([" the"]);
  const text = "the cat sat on the mat and the dog sat on the log";
  const lm = new BigramScorer(tok.vocabSize);
  const ids = [0, ...tok.encode(text)];
  let direct = 0;
  for (let i = 1; i < ids.length; i++) direct += lm.logprob(ids[i - 1], ids[i]);
  for (const [context, stride] of [[5, 4], [8, 3], [1000, 999]]) {
    const { spans, predicted } = perplexitySpans(tok, text, context, stride);
    assert.equal(predicted, ids.length - 1);
    assert.equal(spans.reduce((s, sp) => s + sp.ids.length - sp.from, 0), predicted);
    assert.ok(spans.every((s) => s.ids.length <= context && s.from >= 1));
    const sums = await scoreSpans(lm, spans, { batchSize: 4 });
    // A bigram model needs one token of context, which every window has: the sum equals the whole-text sum.
    assertClose(`nll context=${context} stride=${stride}`, [sums.reduce((s, v) => s + v, 0)], [direct], {
      rtol: 1e-5,
      atol: 1e-5,
    });
  }
});

Deno.test("evaluateModel on fixture folders: every task runs and progress reaches the total", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = (p: string, t: string) => Deno.writeTextFile(`${dir}/${p}`, t);
    for (
      const f of [
        "blimp_filtered",
        "supplement_filtered",
        "ewok_filtered",
        "entity_tracking",
        "wug_adj_nominalization",
        "reading",
      ]
    ) {
      await Deno.mkdir(`${dir}/${f}`);
    }
    const j = JSON.stringify;
    await w(
      "blimp_filtered/a.jsonl",
      j({
        sentence_good: "the cat",
        sentence_bad: "cat the",
        field: "syntax",
        linguistics_term: "t",
        UID: "a",
      }),
    );
    await w("supplement_filtered/s.jsonl", j({ sentence_good: "a b", sentence_bad: "b a" }));
    const ew = {
      Domain: "d",
      ContextType: "c",
      ContextDiff: "x",
      TargetDiff: "y",
      Context1: "A b.",
      Context2: "B a.",
    };
    await w("ewok_filtered/d.jsonl", j({ ...ew, Target1: "It is.", Target2: "It is not." }));
    await w(
      "entity_tracking/regular.jsonl",
      j({ numops: 0, input_prefix: "Box 0 contains ", options: ["the key.", "the cat."] }),
    );
    await w(
      "wug_adj_nominalization/w.jsonl",
      [0.2, 0.7, 0.4].map((r, i) => j({ sentences: `x${i}ity\tx${i}ness`, ratio: r })).join("\n"),
    );
    const nums = (i: number) =>
      `${i % 4 + 1},1,1,1,${5 + (i * 7) % 11},${1 + i % 6},${100 + (i * 37) % 50},${110 + (i * 13) % 40},${
        120 + i
      },${130 + (i * 3) % 17},${300 + (i * 29) % 70},0.1,0.2,${(i * 7) % 5},0.4,0.5,0.6`;
    const csv = [
      ",item,word,word2,sentence,context_length,sent_id,item_id,list,Subtlex_log10,length,RTfirstfix,RTfirstpass,RTgopast,RTrightbound,self_paced_reading_time,ELAN,LAN,N400,P600,EPNP,PNP,prev_word,prev_item,prev_length",
    ];
    for (let i = 0; i < 40; i++) {
      csv.push(
        `${i},${["the cat", "the dogs", "a hen"][i % 3]},on,ON,s,${nums(i)},${
          i % 5 ? `sat,${["the cat", "a dog", "my hen", "its"][i % 4]},${3 + (i * 5) % 7}` : ",,-1"
        }`,
      );
    }
    await w("reading/reading_data.csv", csv.join("\n"));
    const tok = new GreedyTokenizer([" the"]);
    let last = [0, 0];
    const res = await evaluateModel(new BigramScorer(tok.vocabSize), tok, {
      dataDir: dir,
      tasks: ["blimp", "supplement", "ewok", "entity_tracking", "wug", "reading"],
      batchSize: 16,
      onProgress: (d, t) => (last = [d, t]),
    });
    assert.deepEqual(Object.keys(res), ["blimp", "supplement", "ewok", "entity_tracking", "wug", "reading"]);
    assert.equal(last[0], last[1]);
    assert.ok(last[1] > 80);
    const rd = res.reading;
    assert.ok(rd.kind === "reading" && Number.isFinite(rd.eyeTracking) && Number.isFinite(rd.selfPaced));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("real reading data with the toy model: regressions run on 1726 rows", async () => {
  const file = new URL("../../shared/data/babylm_eval_2025/full_eval/", import.meta.url);
  try {
    Deno.statSync(file);
  } catch {
    console.log("  skipped: ../shared/data is not present");
    return;
  }
  const tok = new GreedyTokenizer([" the", "the", "ing", "ed"]);
  const res = await evaluateModel(new BigramScorer(tok.vocabSize), tok, {
    dataDir: file.pathname,
    tasks: ["reading"],
    batchSize: 512,
  });
  const r = res.reading;
  assert.ok(r.kind === "reading");
  assert.equal(r.rows, 1726);
  assert.equal(r.noSpillover[0].n, 1726 - 30, "rows without Subtlex_log10 are dropped");
  assert.equal(r.spillover[0].n, 1726 - 30 - 206 + 6, "and rows without prev_pred (6 rows lack both)");
  assert.ok(Number.isFinite(r.eyeTracking) && Number.isFinite(r.selfPaced));
  console.log(`  toy model: eye tracking ${r.eyeTracking.toFixed(3)}, self-paced ${r.selfPaced.toFixed(3)}`);
});

Deno.test("GPT-2 BPE on the real data: decode-based masks equal masks from exact byte offsets", async () => {
  const root = new URL("../../shared/data/babylm_eval_2025/full_eval/", import.meta.url).pathname;
  try {
    Deno.statSync(root);
  } catch {
    console.log("  skipped: ../shared/data is not present");
    return;
  }
  const { getEncoding } = await import("js-tiktoken");
  const bpe = getEncoding("gpt2");
  // Token bytes from the encoder's table (js-tiktoken keeps them in `textMap`).
  const bytesOf = (bpe as unknown as { textMap: Map<number, Uint8Array> }).textMap;
  const gpt2: TextCodec = {
    addsBos: false,
    bosId: 50256,
    encode: (t) => bpe.encode(t),
    decode: (ids) => bpe.decode(ids),
  };
  const utf8 = new TextEncoder();
  /** Hugging Face-style token ends: a token ending inside a character covers the whole character. */
  const exactFirst = (text: string, ids: number[], startChar: number) => {
    const charEndOfByte: number[] = [0]; // [b] = UTF-16 end of the character holding byte b-1
    for (let c = 0; c < text.length;) {
      const ch = String.fromCodePoint(text.codePointAt(c)!);
      for (let m = 0; m < utf8.encode(ch).length; m++) charEndOfByte.push(c + ch.length);
      c += ch.length;
    }
    let bytes = 0;
    const k = ids.findIndex((id) => charEndOfByte[bytes += bytesOf.get(id)!.length] > startChar);
    return k < 0 ? ids.length : k;
  };
  const check = (items: ChoiceItem[]) => {
    let n = 0, merged = 0;
    for (const it of items) {
      it.sentences.forEach((s, k) => {
        const start = s.length - it.completions[k].length;
        const ids = gpt2.encode(s);
        const want = exactFirst(s, ids, start);
        assert.equal(firstOverlapping(gpt2, s, ids, start), want, JSON.stringify([s, it.completions[k]]));
        // Count completions whose first token straddles the boundary (e.g. " the" after "contains ").
        if (want < ids.length && want > 0 && gpt2.decode(ids.slice(0, want)).length < start) merged++;
        n++;
      });
    }
    return [n, merged];
  };
  const { parseEntityTracking, parseEwok } = await import("../eval/readers.ts");
  const { readZip, EWOK_PASSWORD } = await import("../eval/zip.ts");
  const files = await readZip(await Deno.readFile(`${root}/ewok_filtered.zip`), EWOK_PASSWORD);
  const ewok = [...files].flatMap(([name, d]) => parseEwok(new TextDecoder().decode(d), name));
  const et = parseEntityTracking(
    await Deno.readTextFile(`${root}/entity_tracking/regular.jsonl`),
    "regular.jsonl",
  );
  // Multi-byte characters split across byte-level tokens, completions starting at every character.
  const multi = ["naïve café au lait", "日本語のテキスト です", "ok 🙂🙂 fine", "Zoë’s “quote”"].flatMap((
    t,
  ) =>
    [...t].map((_, i) => {
      const c = [...t].slice(i).join("");
      return { sentences: [t], completions: [c], uid: "m", groups: {} };
    })
  );
  const [n0] = check(multi);
  const [n1, m1] = check(ewok.slice(0, 2500)), [n2, m2] = check(et.slice(0, 300));
  console.log(
    `  ${n0} multi-byte cases, EWoK ${n1} sentences, entity tracking ${n2}: masks agree; ${m1 + m2} straddle`,
  );
  assert.ok(m2 > 0, "entity tracking completions start with a token merged across the boundary");
});
