/**
 * `deno task finetune`: the pipeline's task formats and truncation, its metrics and schedule, learning a
 * small separable task on the GPU, and a smoke run of the command on real slices of RTE and MRPC that
 * checks every file it writes.
 */
import assert from "node:assert/strict";
import { GPT2, initWeights } from "../model/gpt2.ts";
import { loadCheckpoint, saveCheckpoint } from "../cli/files.ts";
import { tokenizerJsonFromGpt2Files } from "../model/tokenizer.ts";
import { parseSafetensors } from "../model/safetensors.ts";
import { Rng } from "../model/random.ts";
import {
  type EncodedExample,
  encodeExamples,
  longestFirst,
  padBatch,
  readTaskFile,
  taskByName,
} from "../eval/finetune_data.ts";
import { classificationMetrics, FINETUNE_DEFAULTS, finetuneTask, lrFactor } from "../eval/finetune.ts";
import { HEAD_TENSORS } from "../eval/finetune_model.ts";
import { main } from "../cli/finetune.ts";
import { main as evalMain } from "../cli/eval.ts";
import { testGpu } from "./util.ts";

const DATA = new URL("../../shared/data/", import.meta.url).pathname;
const GLUE = `${DATA}babylm_eval_2025/full_eval/glue_filtered`;
const OUT = new URL("./out/finetune/", import.meta.url).pathname;

function exists(p: string): boolean {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
}
const HAVE_DATA = exists(`${GLUE}/rte.train.jsonl`) && exists(`${DATA}tokenizers/gpt2/vocab.json`);
if (!HAVE_DATA) console.log(`finetune_test: real-data cases skipped, no data at ${GLUE}`);

Deno.test("longest-first truncation keeps the lengths Hugging Face's tokenizers keep", () => {
  // tokenizers' own table for max_length 7 (pairs of lengths 0, 2, 4 and 8).
  const table: [number, number, number, number][] = [
    [0, 8, 0, 7],
    [2, 8, 2, 5],
    [4, 4, 3, 4],
    [4, 8, 3, 4],
    [8, 0, 7, 0],
    [8, 2, 5, 2],
    [8, 4, 4, 3],
    [8, 8, 3, 4],
    [2, 4, 2, 4],
  ];
  for (const [n1, n2, k1, k2] of table) assert.deepEqual(longestFirst(n1, n2, 7), [k1, k2], `${n1}, ${n2}`);
  assert.deepEqual(longestFirst(300, 300, 512), [256, 256]);
  assert.deepEqual(longestFirst(600, 20, 512), [492, 20]);
});

Deno.test("task formats: pairs joined with nothing; MultiRC's and WSC's templates; bad lines named", () => {
  const multirc = readTaskFile(
    '{"paragraph": "P.", "question": "Q?", "answer": "A", "label": 1, "idx": 0}\n',
    "m.jsonl",
    taskByName("multirc"),
  );
  assert.deepEqual(multirc, [{ a: "Question: Q? Answer: A", b: "P.", label: 1 }]);
  const wsc = readTaskFile(
    '{"text": "T", "span1_index": 0, "span2_index": 3, "span1_text": "Mark", "span2_text": "He", "label": 0}\n',
    "w.jsonl",
    taskByName("wsc"),
  );
  assert.deepEqual(wsc, [{ a: 'Does "He" refer to "Mark" in this passage?', b: "T", label: 0 }]);
  const chars = (s: string) => Array.from(s, (c) => c.charCodeAt(0));
  const [enc] = encodeExamples([{ a: "abcdef", b: "xy", label: 1 }], chars, 5);
  assert.deepEqual(enc.ids, chars("abcxy"));
  assert.throws(
    () =>
      readTaskFile(
        '{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": "a", "label": 1}\n',
        "r.jsonl",
        taskByName("rte"),
      ),
    /r\.jsonl:2: field "sentence2" must be a string/,
  );
  assert.throws(
    () => readTaskFile('{"premise": "a", "hypothesis": "b", "label": 3}\n', "n.jsonl", taskByName("mnli")),
    /n\.jsonl:1: "label" must be an integer in 0\.\.2/,
  );
  const left = padBatch([{ ids: [5, 6, 7], label: 1 }, { ids: [8], label: 0 }], 0, "left");
  assert.deepEqual([...left.tokens], [5, 6, 7, 0, 0, 8]);
  assert.deepEqual([...left.keyStart], [0, 2]);
  const right = padBatch([{ ids: [5, 6, 7], label: 1 }, { ids: [8], label: 0 }], 0, "right");
  assert.deepEqual([...right.tokens], [5, 6, 7, 8, 0, 0]);
  assert.deepEqual([...right.keyStart], [0, 0]);
});

Deno.test("metrics as sklearn computes them; the schedule's first step is at lr 0 and it ends at the floor", () => {
  // TP 2, FP 1, FN 1, TN 2: accuracy 4/6, F1 2/3, MCC (4 - 1) / 9.
  const m = classificationMetrics([1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0], 2);
  assert.ok(Math.abs(m.accuracy - 4 / 6) < 1e-12);
  assert.ok(Math.abs(m.f1 - 2 / 3) < 1e-12);
  assert.ok(Math.abs(m.mcc - 1 / 3) < 1e-12);
  // One class predicted throughout: F1 and MCC 0 where their denominators are.
  assert.deepEqual(classificationMetrics([0, 0, 0], [0, 1, 0], 2), { accuracy: 2 / 3, f1: 0, mcc: 0 });
  // Three classes, 5 of 8 right, predicted and true counts (4, 2, 2) each: sklearn's multiclass MCC is
  // (5 * 8 - 24) / sqrt((64 - 24) (64 - 24)) = 0.4.
  const m3 = classificationMetrics([0, 1, 2, 0, 1, 2, 0, 0], [0, 1, 2, 1, 2, 0, 0, 0], 3);
  assert.ok(Math.abs(m3.mcc - 0.4) < 1e-12, `mcc ${m3.mcc}`);
  assert.equal(m3.accuracy, 5 / 8);
  assert.equal(lrFactor(0, 6, 100, 0.1, "cosine"), 0);
  assert.equal(lrFactor(3, 6, 100, 0.1, "cosine"), 0.5);
  assert.equal(lrFactor(6, 6, 100, 0.1, "cosine"), 1);
  assert.ok(Math.abs(lrFactor(100, 6, 100, 0.1, "cosine") - 0.1) < 1e-12);
  assert.equal(lrFactor(0, 0, 10, 0.1, "cosine"), 1);
  assert.equal(lrFactor(0, 6, 100, 0.1, "none"), 1);
});

Deno.test("fine-tuning learns a separable task (label: does token 7 occur) from the last token of left-padded batches", async () => {
  const gpu = await testGpu();
  const ckpt = await loadCheckpoint(new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname);
  const r = new Rng(3);
  const make = (n: number): EncodedExample[] =>
    Array.from({ length: n }, (_, i) => {
      const ids = Array.from({ length: 3 + r.int(6) }, () => 10 + r.int(50));
      if (i % 2 === 1) ids[r.int(ids.length)] = 7;
      return { ids, label: i % 2 };
    });
  const train = make(96), valid = make(48);
  const model = GPT2.create(gpu, ckpt.config, ckpt.weights);
  const s = {
    ...FINETUNE_DEFAULTS,
    lr: 3e-3,
    batchSize: 8,
    epochs: 6,
    pooling: "last" as const,
    paddingSide: "left" as const,
  };
  const result = await finetuneTask(model, taskByName("rte"), train, valid, 60, s);
  model.destroy();
  console.log(
    `  epochs: ${
      result.epochs.map((e) => `${e.trainLoss.toFixed(3)}/${e.valid.accuracy.toFixed(3)}`).join(" ")
    }`,
  );
  assert.equal(result.steps, 6 * 12);
  assert.equal(result.warmupSteps, Math.floor(0.06 * 72));
  assert.ok(result.epochs[0].trainLoss > result.epochs.at(-1)!.trainLoss, "the training loss falls");
  assert.ok(result.metrics.accuracy >= 0.9, `valid accuracy ${result.metrics.accuracy}`);
  // The best epoch is the first with the highest accuracy.
  const best = Math.max(...result.epochs.map((e) => e.valid.accuracy));
  assert.equal(result.bestEpoch, result.epochs.find((e) => e.valid.accuracy === best)!.epoch);
});

Deno.test({
  name: "deno task finetune on slices of RTE and MRPC writes the pipeline's files with every metric",
  ignore: !HAVE_DATA,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const gpu = await testGpu();
    await Deno.remove(OUT, { recursive: true }).catch(() => {});
    const config = {
      vocabSize: 50257,
      nPositions: 512,
      nEmbd: 32,
      nLayer: 1,
      nHead: 2,
      layerNormEpsilon: 1e-5,
      bosTokenId: 50256,
      eosTokenId: 50256,
    };
    const tokJson = tokenizerJsonFromGpt2Files(
      await Deno.readTextFile(`${DATA}tokenizers/gpt2/vocab.json`),
      await Deno.readTextFile(`${DATA}tokenizers/gpt2/merges.txt`),
    );
    await saveCheckpoint(`${OUT}model`, config, initWeights(config, 1), { "tokenizer.json": tokJson });
    const summary = await main([
      "--model",
      `${OUT}model`,
      "--data",
      GLUE,
      "--tasks",
      "rte,mrpc,boolq",
      "--protocol",
      "2026",
      "--limit-train",
      "40",
      "--limit-valid",
      "24",
      "--batch-size",
      "8",
      "--micro-batch",
      "3",
      "--epochs",
      "2",
      "--valid-batch-size",
      "16",
      "--output",
      `${OUT}results`,
      "--save",
      `${OUT}saved`,
    ], gpu);
    assert.deepEqual(summary.map((t) => [t.task, t.status]), [["rte", "done"], ["mrpc", "done"], [
      "boolq",
      "skipped",
    ]]);
    for (const task of ["rte", "mrpc"]) {
      const dir = `${OUT}results/${task}`;
      const lines = (await Deno.readTextFile(`${dir}/results.txt`)).split("\n");
      assert.deepEqual(lines.map((l) => l.split(": ")[0]), ["accuracy", "f1", "mcc"]);
      for (const l of lines) assert.ok(Number.isFinite(Number(l.split(": ")[1])), l);
      const preds = JSON.parse(await Deno.readTextFile(`${dir}/predictions.json`))[task].predictions;
      assert.equal(preds.length, 24);
      assert.deepEqual(Object.keys(preds[0]), ["id", "pred", "logits"]);
      assert.equal(preds[3].id, `${task}_3`);
      for (const p of preds) {
        assert.equal(p.logits.length, 2);
        assert.equal(p.pred, p.logits[1] > p.logits[0] ? 1 : 0);
      }
      const rec = JSON.parse(await Deno.readTextFile(`${dir}/results.json`));
      assert.equal(rec.task, task);
      assert.equal(rec.selectedBy, task === "mrpc" ? "f1" : "accuracy");
      assert.equal(rec.epochs.length, 2);
      assert.equal(rec.steps, 2 * 5);
      assert.equal(rec.settings.pooling, "last");
      assert.equal(rec.settings.paddingSide, "left");
      assert.deepEqual([rec.batchSize, rec.microBatch], [8, 3]);
      assert.deepEqual(rec.transformerDropout, { embdPdrop: 0.1, attnPdrop: 0.1, residPdrop: 0.1 });
      assert.deepEqual(rec.metrics, rec.epochs[rec.bestEpoch - 1].valid);
      const acc = preds.filter((p: { pred: number }, i: number) => p.pred === labelsOf(task)[i]).length / 24;
      assert.ok(
        Math.abs(acc - rec.metrics.accuracy) < 1e-12,
        "predictions.json holds the best epoch's predictions",
      );
      const saved = await loadCheckpoint(`${OUT}saved/${task}`);
      assert.equal(saved.config.nEmbd, 32);
      const head =
        parseSafetensors(await Deno.readFile(`${OUT}saved/${task}/classifier.safetensors`)).tensors;
      assert.deepEqual(head.get(HEAD_TENSORS.outWeight)!.shape, [2, 32]);
      assert.deepEqual(head.get(HEAD_TENSORS.denseWeight)!.shape, [32, 32]);
    }
    // Checkpoints carry the pad token transformers needs to pad a batch (GPT-2 pads with EOS).
    for (const dir of [`${OUT}model`, `${OUT}saved/rte`]) {
      const tc = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
      assert.equal(tc.pad_token, "<|endoftext|>");
      assert.equal(tc.eos_token, "<|endoftext|>");
      assert.equal(tc.tokenizer_class, "PreTrainedTokenizerFast");
      const map = JSON.parse(await Deno.readTextFile(`${dir}/special_tokens_map.json`));
      assert.deepEqual(Object.keys(map).sort(), ["bos_token", "eos_token", "pad_token", "unk_token"]);
    }
    const all = JSON.parse(await Deno.readTextFile(`${OUT}results/results.json`));
    assert.equal(all.tasks.length, 3);
  },
});

/** The first 24 validation labels of a task. */
function labelsOf(task: string): number[] {
  return Deno.readTextFileSync(`${GLUE}/${task}.valid.jsonl`).split("\n").filter(Boolean).slice(0, 24)
    .map((l) => JSON.parse(l).label);
}

Deno.test({
  name:
    "eval --run --finetune adds each checkpoint's fine-tuning scores to the learning curves, reused on rerun",
  ignore: !HAVE_DATA,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = `${OUT}evalrun`;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    const config = {
      vocabSize: 50257,
      nPositions: 128,
      nEmbd: 16,
      nLayer: 1,
      nHead: 2,
      layerNormEpsilon: 1e-5,
      bosTokenId: 50256,
      eosTokenId: 50256,
    };
    const tokJson = tokenizerJsonFromGpt2Files(
      await Deno.readTextFile(`${DATA}tokenizers/gpt2/vocab.json`),
      await Deno.readTextFile(`${DATA}tokenizers/gpt2/merges.txt`),
    );
    for (const [i, name] of ["checkpoint_1M", "checkpoint_2M"].entries()) {
      await saveCheckpoint(`${dir}/run/${name}`, config, initWeights(config, 10 + i), {
        "tokenizer.json": tokJson,
      });
    }
    // A folder of task files: 40 RTE training pairs (one batch of 32 per epoch) and 8 to validate.
    const lines = (file: string, n: number) =>
      Deno.readTextFileSync(`${GLUE}/${file}`).split("\n").filter(Boolean).slice(0, n).join("\n") + "\n";
    await Deno.mkdir(`${dir}/glue`, { recursive: true });
    await Deno.writeTextFile(`${dir}/glue/rte.train.jsonl`, lines("rte.train.jsonl", 40));
    await Deno.writeTextFile(`${dir}/glue/rte.valid.jsonl`, lines("rte.valid.jsonl", 8));
    const wug = "wug_adj_nominalization/wug_adj_nominalization.jsonl";
    await Deno.mkdir(`${dir}/data/wug_adj_nominalization`, { recursive: true });
    await Deno.writeTextFile(`${dir}/data/${wug}`, lines(`../${wug}`, 4));
    const args = [
      "--run",
      `${dir}/run`,
      "--data",
      `${dir}/data`,
      "--tasks",
      "wug",
      "--finetune",
      `${dir}/glue`,
    ];
    await evalMain(args);
    const curve = JSON.parse(await Deno.readTextFile(`${dir}/run/eval/learning_curve.json`));
    assert.ok(curve.metrics.includes("finetune/rte"), `metrics ${curve.metrics}`);
    for (const row of curve.rows) {
      const rec = JSON.parse(
        await Deno.readTextFile(`${dir}/run/eval/finetune/${row.checkpoint}/rte/results.json`),
      );
      assert.equal(rec.steps, 10);
      assert.ok(Math.abs(row["finetune/rte"] - 100 * rec.metrics.accuracy) < 1e-9);
    }
    const before = (await Deno.stat(`${dir}/run/eval/finetune/checkpoint_1M/rte/results.json`)).mtime;
    await evalMain(args);
    const after = (await Deno.stat(`${dir}/run/eval/finetune/checkpoint_1M/rte/results.json`)).mtime;
    assert.deepEqual(after, before, "a finished fine-tuning is reused");
  },
});

Deno.test({
  name: "finetune refuses a tokenizer whose post-processor adds special tokens, and mismatched padding flags",
  ignore: !HAVE_DATA,
  async fn() {
    const dir = `${OUT}bos_model`;
    const config = {
      vocabSize: 50257,
      nPositions: 64,
      nEmbd: 16,
      nLayer: 1,
      nHead: 2,
      layerNormEpsilon: 1e-5,
      bosTokenId: 50256,
      eosTokenId: 50256,
    };
    const tok = JSON.parse(tokenizerJsonFromGpt2Files(
      await Deno.readTextFile(`${DATA}tokenizers/gpt2/vocab.json`),
      await Deno.readTextFile(`${DATA}tokenizers/gpt2/merges.txt`),
    ));
    const bos = { SpecialToken: { id: "<|endoftext|>", type_id: 0 } };
    tok.post_processor = {
      type: "TemplateProcessing",
      single: [bos, { Sequence: { id: "A", type_id: 0 } }],
      pair: [bos, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<|endoftext|>": { id: "<|endoftext|>", ids: [50256], tokens: ["<|endoftext|>"] } },
    };
    await saveCheckpoint(dir, config, initWeights(config, 1), { "tokenizer.json": JSON.stringify(tok) });
    await assert.rejects(
      () => main(["--model", dir, "--data", GLUE, "--tasks", "rte"]),
      /post-processor adds special tokens \(\[50256\] text \[\]\)/,
    );
    delete tok.post_processor;
    await saveCheckpoint(`${dir}_plain`, config, initWeights(config, 1), {
      "tokenizer.json": JSON.stringify(tok),
    });
    await assert.rejects(
      () => main(["--model", `${dir}_plain`, "--data", GLUE, "--padding-side", "left"]),
      /--padding-side left needs --take-final/,
    );
    await assert.rejects(
      () => main(["--model", `${dir}_plain`, "--data", GLUE, "--take-final"]),
      /--take-final requires --padding-side left/,
    );
  },
});
