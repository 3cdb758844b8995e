/**
 * `deno task tokenizer --gpt2-vocab --gpt2-merges`: GPT-2's vocab.json + merges.txt become a
 * tokenizer.json that encodes exactly as the original (tiktoken's GPT-2 ranks, an independent
 * implementation of the same vocabulary), in this project's encoder and in @huggingface/tokenizers;
 * bad input is named and leaves the output alone. The real files come from ../shared/data when present.
 */
import assert from "node:assert/strict";
import { Tiktoken } from "js-tiktoken/lite";
import gpt2Ranks from "js-tiktoken/ranks/gpt2";
import { Tokenizer } from "../model/tokenizer.ts";

const CLI = new URL("../cli/tokenizer.ts", import.meta.url).pathname;
const GPT2_DIR = new URL("../../shared/data/tokenizers/gpt2/", import.meta.url).pathname;

async function runCli(args: string[]): Promise<{ code: number; out: string }> {
  const p = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: p.code, out: dec.decode(p.stdout) + dec.decode(p.stderr) };
}

const TEXTS = [
  "Hello world! This is GPT-2's tokenizer.",
  "I'm sure they'll say we've done what you'd've thought; isn't it?",
  "Whitespace   runs\t\ttabs   \n\n\nnewlines  \n  indented\r\nCRLF   ",
  "Dutch: de kinderen spelen buiten, één twee drie; Chinese: 小猫在花园里玩。",
  "Emoji 😀🎉 and 👍🏽, straße, café",
];

Deno.test("tokenizer task: GPT-2 vocab.json + merges.txt -> tokenizer.json that encodes as tiktoken's gpt2", async () => {
  try {
    await Deno.stat(`${GPT2_DIR}vocab.json`);
  } catch {
    console.log(`  note: ${GPT2_DIR} is absent: GPT-2 conversion check skipped`);
    return;
  }
  const dir = await Deno.makeTempDir();
  try {
    const r = await runCli([
      "--gpt2-vocab",
      `${GPT2_DIR}vocab.json`,
      "--gpt2-merges",
      `${GPT2_DIR}merges.txt`,
      "--out",
      `${dir}/out`,
    ]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /wrote .*tokenizer\.json: 50257 tokens/);
    const json = await Deno.readTextFile(`${dir}/out/tokenizer.json`);
    const tok = Tokenizer.fromJSON(json, "converted");
    const tik = new Tiktoken(gpt2Ranks);
    assert.equal(tok.vocabSize, 50257);
    assert.deepEqual([tok.bosId, tok.eosId], [50256, 50256]);
    for (const t of TEXTS) {
      const expected = tik.encode(t);
      assert.deepEqual(tok.encode(t), expected, `encode(${JSON.stringify(t)})`);
      assert.deepEqual(
        tok.encodeWithLibrary(t),
        expected,
        `@huggingface/tokenizers encode(${JSON.stringify(t)})`,
      );
      assert.equal(tok.decode(expected), t);
    }
    assert.deepEqual(tok.encode(" the hello Hello"), [262, 23748, 18435]);

    const before = json;
    await Deno.writeTextFile(`${dir}/bad_merges.txt`, "#version: 0.2\nĠ t\nzz qq\n");
    const fails: Array<[string[], RegExp]> = [
      [
        ["--gpt2-vocab", `${GPT2_DIR}vocab.json`, "--out", `${dir}/out`],
        /missing required option --gpt2-merges/,
      ],
      [
        ["--gpt2-vocab", `${dir}/nope.json`, "--gpt2-merges", `${GPT2_DIR}merges.txt`, "--out", `${dir}/out`],
        /--gpt2-vocab .*nope\.json/,
      ],
      [
        [
          "--gpt2-vocab",
          `${GPT2_DIR}vocab.json`,
          "--gpt2-merges",
          `${dir}/bad_merges.txt`,
          "--out",
          `${dir}/out`,
        ],
        /merges\.txt:3: token "zz" is not in vocab\.json|bad_merges\.txt: merges\.txt:3/,
      ],
      [
        ["--input", dir, "--gpt2-vocab", `${GPT2_DIR}vocab.json`, "--gpt2-merges", `${GPT2_DIR}merges.txt`],
        /give one/,
      ],
    ];
    for (const [args, pattern] of fails) {
      const f = await runCli(args);
      assert.equal(f.code, 1, `${args.join(" ")}: ${f.out}`);
      assert.match(f.out, pattern);
    }
    assert.equal(
      await Deno.readTextFile(`${dir}/out/tokenizer.json`),
      before,
      "failed runs leave the output alone",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
