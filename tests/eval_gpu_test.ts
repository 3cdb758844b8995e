/**
 * The evaluation on the GPU model: every task over a slice of the real BabyLM 2025 files, scored by a
 * small random GPT-2 with a byte-level BPE of GPT-2's kind trained on the slice.
 *
 * The reference for each item is computed independently of eval/score.ts: token character ends come
 * from the library's token strings (byte-level: one character per byte) rather than from decode, the
 * completion's tokens are those with end > start (the pipeline's phrase mask, token 0 never scored),
 * and each sentence is scored alone on the GPU (batch of one) instead of in the evaluation's sorted,
 * padded batches. Reading surprisal is rebuilt from the pipeline's get_p2 definition the same way.
 * Needs ../shared/data (skipped with a note otherwise).
 */
import assert from "node:assert/strict";
import { GPT2 } from "../model/gpt2.ts";
import { saveCheckpoint } from "../cli/files.ts";
import type { GPT2Config } from "../model/config.ts";
import { BatchScorer } from "../model/score.ts";
import { Tokenizer, tokenizerJsonFromGpt2Files } from "../model/tokenizer.ts";
import { trainBpe, trainedBpeJson } from "../model/bpe_train.ts";
import { evalEncoder, GpuEvalScorer, specialWrap } from "../eval/model.ts";
import { prepareTask } from "../eval/tasks.ts";
import { scoreSpans } from "../eval/score.ts";
import { parseBlimp, parseEntityTracking, parseEwok, parseReadingCsv, parseWug } from "../eval/readers.ts";
import { readingSpans } from "../eval/reading.ts";
import { EWOK_PASSWORD, readZip } from "../eval/zip.ts";
import { main } from "../cli/eval.ts";
import type { ModelReport } from "../eval/report.ts";
import type { ChoiceItem } from "../eval/types.ts";
import { assertClose, testGpu } from "./util.ts";

const DATA = new URL("../../shared/data/", import.meta.url).pathname;
const EVAL = `${DATA}babylm_eval_2025/full_eval`;

function exists(p: string): boolean {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
}
const HAVE_DATA = exists(EVAL) && exists(`${DATA}tokenizers/gpt2/vocab.json`);
if (!HAVE_DATA) console.log(`eval_gpu_test: skipped, no BabyLM data at ${EVAL}`);

/** The first `n` lines of a file's text (plus the header for CSV). */
const head = (text: string, n: number) => text.split("\n").slice(0, n).join("\n") + "\n";

/** A slice of the real files: a few items of each task, in the layout the evaluation reads. */
async function makeSlice(dir: string): Promise<void> {
  const copy = async (sub: string, files: string[], n: number) => {
    await Deno.mkdir(`${dir}/${sub}`, { recursive: true });
    for (const f of files) {
      await Deno.writeTextFile(`${dir}/${sub}/${f}`, head(await Deno.readTextFile(`${EVAL}/${sub}/${f}`), n));
    }
  };
  await copy("blimp_filtered", ["anaphor_number_agreement.jsonl", "wh_questions_subject_gap.jsonl"], 3);
  await copy("supplement_filtered", ["qa_congruence_easy.jsonl", "turn_taking.jsonl"], 3);
  await copy("entity_tracking", ["ambiref.jsonl", "move_contents.jsonl", "regular.jsonl"], 2);
  await copy("wug_adj_nominalization", ["wug_adj_nominalization.jsonl"], 6);
  await copy("reading", ["reading_data.csv"], 41); // header + 40 rows
  // EWoK: two of the zip's files, unpacked into the folder form the evaluation also reads.
  const zip = await readZip(await Deno.readFile(`${EVAL}/ewok_filtered.zip`), EWOK_PASSWORD, "ewok");
  const names = [...zip.keys()].filter((n) => n.endsWith(".jsonl")).sort().slice(0, 2);
  await Deno.mkdir(`${dir}/ewok_filtered`);
  for (const n of names) {
    const base = n.split("/").pop()!;
    await Deno.writeTextFile(`${dir}/ewok_filtered/${base}`, head(new TextDecoder().decode(zip.get(n)!), 3));
  }
}

/** The choice items of a sliced task folder, in the evaluation's order (files sorted by name). */
function itemsOf(dir: string, parse: (text: string, file: string) => ChoiceItem[]): ChoiceItem[] {
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".jsonl")).sort();
  return names.flatMap((n) => parse(Deno.readTextFileSync(`${dir}/${n}`), `${dir}/${n}`));
}

/** UTF-16 end of every token of `text`, from the byte length of each byte-level token string. */
function charEnds(tok: Tokenizer, text: string): number[] {
  // byteEnd[i] = UTF-8 bytes of text[0..i); a token ending inside a character covers that character.
  const charAtByte: number[] = [0];
  let bytes = 0;
  for (let i = 0; i < text.length;) {
    const cp = text.codePointAt(i)!;
    const w = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    i += cp > 0xffff ? 2 : 1;
    for (let k = 0; k < w; k++) charAtByte[++bytes] = i;
  }
  let b = 0;
  return tok.tokens(text).map((t) => charAtByte[b += [...t].length]);
}

/** The pipeline's score of one candidate: Σ ln p over tokens i >= 1 whose end exceeds the start. */
async function referenceScore(
  gpu: BatchScorer,
  tok: Tokenizer,
  sentence: string,
  completion: string,
): Promise<number> {
  const ids = tok.encode(sentence);
  const ends = charEnds(tok, sentence);
  assert.equal(ends.length, ids.length, `token strings and ids of ${JSON.stringify(sentence)}`);
  const start = sentence.length - completion.length;
  const [lp] = await gpu.tokenLogprobs([ids], { batchSize: 1 });
  let s = 0;
  for (let i = 1; i < ids.length; i++) if (ends[i] > start) s += lp[i - 1];
  return s;
}

/** A small random GPT-2 for `vocabSize` ids. */
function smallConfig(vocabSize: number): GPT2Config {
  return {
    vocabSize,
    nPositions: 256,
    nEmbd: 32,
    nLayer: 1,
    nHead: 2,
    layerNormEpsilon: 1e-5,
    bosTokenId: 0,
    eosTokenId: 0,
  };
}

Deno.test({
  name: "eval on the GPU: every task on real data equals independent per-item GPU sums; deterministic",
  ignore: !HAVE_DATA,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // GPT-2's HF call adds no BOS, so the first token of every sentence is never scored.
    const gpt2Json = tokenizerJsonFromGpt2Files(
      await Deno.readTextFile(`${DATA}tokenizers/gpt2/vocab.json`),
      await Deno.readTextFile(`${DATA}tokenizers/gpt2/merges.txt`),
    );
    assert.deepEqual(specialWrap(gpt2Json), { prefix: [], suffix: [] });

    // The model: GPT-2's full 50257-id head costs minutes per pass on llvmpipe, so a byte-level BPE
    // of the same kind (ByteLevel post-processor, <|endoftext|> id 0) is trained on the slice itself.
    const dir = await Deno.makeTempDir({ prefix: "eval_gpu_" });
    await makeSlice(dir);
    const texts: string[] = [];
    for (const e of Deno.readDirSync(dir)) {
      if (e.isDirectory) {
        for (const f of Deno.readDirSync(`${dir}/${e.name}`)) {
          texts.push(Deno.readTextFileSync(`${dir}/${e.name}/${f.name}`));
        }
      }
    }
    const { bpe } = await trainBpe(texts, { vocabSize: 600 });
    const tokJson = trainedBpeJson(bpe);
    const tok = Tokenizer.fromJSON(tokJson, "slice tokenizer.json");
    const enc = evalEncoder(tok);
    assert.equal(enc.addsBos, false);
    const CONFIG = smallConfig(tok.vocabSize);
    const gpu = await testGpu();
    const model = GPT2.create(gpu, CONFIG, undefined, 7);
    const scorer = new GpuEvalScorer(model);
    const direct = new BatchScorer(model);
    const opts = { dataDir: dir, tasks: [], batchSize: 5, context: CONFIG.nPositions };

    // Choice tasks and WUG: the evaluation's per-span sums against the reference per candidate.
    const choice: Array<[string, string, (t: string, f: string) => ChoiceItem[]]> = [
      ["blimp", "blimp_filtered", parseBlimp],
      ["supplement", "supplement_filtered", parseBlimp],
      ["ewok", "ewok_filtered", parseEwok],
      ["entity_tracking", "entity_tracking", parseEntityTracking],
    ];
    let checked = 0;
    for (const [task, sub, parse] of choice) {
      const items = itemsOf(`${dir}/${sub}`, parse);
      const spans = (await prepareTask(task, enc, opts)).spans;
      const got = await scoreSpans(scorer, spans, { batchSize: 5 });
      const want: number[] = [];
      for (const it of items) {
        for (const [k, s] of it.sentences.entries()) {
          want.push(await referenceScore(direct, tok, s, it.completions[k]));
        }
      }
      assert.equal(got.length, want.length, `${task}: spans`);
      assertClose(`${task} (${items.length} items)`, got, want, { atol: 2e-4, rtol: 1e-5 });
      checked += want.length;
    }
    const wugDir = `${dir}/wug_adj_nominalization`;
    const wug = parseWug(Deno.readTextFileSync(`${wugDir}/wug_adj_nominalization.jsonl`), "wug");
    const wugGot = await scoreSpans(scorer, (await prepareTask("wug", enc, opts)).spans, { batchSize: 5 });
    const wugWant: number[] = [];
    for (const it of wug) for (const s of it.sentences) wugWant.push(await referenceScore(direct, tok, s, s));
    assertClose(`wug (${wug.length} items)`, wugGot, wugWant, { atol: 2e-4, rtol: 1e-5 });

    // Reading: pred = -log2 p(word | item) with get_p2's token-by-token contexts, no BOS.
    const rows = parseReadingCsv(Deno.readTextFileSync(`${dir}/reading/reading_data.csv`), "reading");
    const { spans: rSpans, finish } = readingSpans(enc, rows, "reading");
    const { pred } = finish(await scoreSpans(scorer, rSpans, { batchSize: 5 }));
    const predWant: number[] = [];
    for (const r of rows.slice(0, 12)) {
      let ctx = r.item, lnp = 0;
      for (const [k, t] of tok.encode(r.word).entries()) {
        const id = k === 0 ? t : tok.encode(tok.decode([t]))[0];
        const ids = [...tok.encode(ctx), id];
        const [lp] = await direct.tokenLogprobs([ids], { batchSize: 1 });
        lnp += lp[ids.length - 2];
        ctx += tok.decode([t]);
      }
      predWant.push(-lnp / Math.LN2);
    }
    assertClose("reading pred (12 rows)", pred.subarray(0, 12), predWant, { atol: 2e-4, rtol: 1e-5 });
    console.log(`checked ${checked + wugWant.length} candidate scores and 12 reading surprisals`);

    // The command end to end, twice, through loadScorer: identical results; all tasks present.
    const modelDir = `${dir}/model`;
    await saveCheckpoint(modelDir, CONFIG, await model.getWeights(), { "tokenizer.json": tokJson });
    const reports: ModelReport[] = [];
    for (const k of [0, 1]) {
      await main(["--model", modelDir, "--data", dir, "--batch-size", "16", "--output", `${dir}/r${k}.json`]);
      reports.push(JSON.parse(await Deno.readTextFile(`${dir}/r${k}.json`)));
    }
    assert.deepEqual(reports[0].results, reports[1].results);
    assert.deepEqual(Object.keys(reports[0].results), [
      "blimp",
      "supplement",
      "ewok",
      "entity_tracking",
      "wug",
      "reading",
    ]);
    for (const [k, v] of Object.entries(reports[0].headline)) {
      assert.ok(Number.isFinite(v), `headline ${k} is ${v}`);
    }
    console.log("headline:", JSON.stringify(reports[0].headline));
    direct.destroy();
    scorer.destroy();
    await Deno.remove(dir, { recursive: true });
  },
});
