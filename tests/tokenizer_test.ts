/**
 * The Tokenizer wrapper and the GPT-2 import: encodings equal tiktoken's GPT-2 encoding token for
 * token, decode inverts encode on arbitrary Unicode, the fast encoder equals the library, and bad input
 * gives errors that name the source. The real GPT-2 files are read from ../shared/data when present.
 */
import assert from "node:assert/strict";
import { Tiktoken } from "js-tiktoken/lite";
import gpt2Ranks from "js-tiktoken/ranks/gpt2";
import { BYTE_TO_CHAR } from "../model/bpe_format.ts";
import { GPT2_EOT, Tokenizer, tokenizerJsonFromGpt2Files } from "../model/tokenizer.ts";
import { loadTokenizer } from "../cli/files.ts";
import { uniforms } from "../model/random.ts";

const GPT2_DIR = new URL("../../shared/data/tokenizers/gpt2/", import.meta.url);

/** The GPT-2 tokenizer built from the shared vocab.json + merges.txt, or undefined (with a note). */
let gpt2: Tokenizer | undefined | null = null;
function loadGpt2(): Tokenizer | undefined {
  if (gpt2 !== null) return gpt2;
  try {
    const vocab = Deno.readTextFileSync(new URL("vocab.json", GPT2_DIR));
    const merges = Deno.readTextFileSync(new URL("merges.txt", GPT2_DIR));
    gpt2 = Tokenizer.fromJSON(tokenizerJsonFromGpt2Files(vocab, merges), "gpt2 (shared data)");
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    console.log(`  note: ${GPT2_DIR.pathname} is absent: GPT-2 comparisons skipped`);
    gpt2 = undefined;
  }
  return gpt2;
}

/** Characters from many scripts and classes, to build random text the pattern splits in every way. */
const ALPHABET = [
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
  ..."      \n\n\t\r.,;:!?'\"-()[]{}<>/\\|@#$%^&*_+=~`",
  ..."éèêëàâäôöûüçñÉÀßøåæœ",
  ..."中文字符日本語한국어",
  ..."αβγδ Ωπσ",
  ..."абвгдежз",
  ..."😀🎉👍🏽🚀𝔘𝔫𝔦",
  "\u00a0",
  "\u3000",
  "\u200b",
  "\u0301",
  "'s",
  "'ll",
  "'re",
  "'ve",
  "'d",
  "'m",
  "'t",
];

/** A random string of `n` picks from {@link ALPHABET}. */
function randomText(r: () => number, n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(r() * ALPHABET.length)];
  return s;
}

/** A random string of `n` valid code points (surrogates excluded: they have no UTF-8 form). */
function randomUnicode(r: () => number, n: number): string {
  const ranges: Array<[number, number]> = [
    [0x00, 0x7f],
    [0x80, 0x7ff],
    [0x800, 0xd7ff],
    [0xe000, 0xffff],
    [0x10000, 0x10ffff],
    [0x1f300, 0x1faff],
  ];
  let s = "";
  for (let i = 0; i < n; i++) {
    const [lo, hi] = ranges[Math.floor(r() * ranges.length)];
    s += String.fromCodePoint(lo + Math.floor(r() * (hi - lo + 1)));
  }
  return s;
}

const SAMPLES = [
  "Hello world! This is GPT-2's tokenizer.",
  "I'm sure they'll say we've done what you'd've thought; isn't it? DON'T SHOUT.",
  "Numbers: 3.14159, 1,000,000 and 2024-05-17 at 12:30pm; 007 or 1e-9.",
  "Whitespace   runs\t\ttabs   \n\n\nnewlines  \n  indented\r\nCRLF line   ",
  "   leading spaces and trailing spaces   ",
  "Emoji 😀🎉 and families 👨‍👩‍👧‍👦 and flags 🇫🇷, skin tones 👍🏽.",
  "中文的分词测试，日本語のテキスト、한국어 문장.",
  "Accented: café, naïve, résumé, Ångström, São Paulo, Dvořák, œuvre, straße.",
  "Math: ∑_{i=1}^n x_i² ≤ √(n·∑x²) — “quotes” and ‘single’ … ellipsis",
  "Code: if (a >= b && c != d) { return x[i] ** 2; } // comment #tag @user $var",
  "<html><body>Tags & entities &amp; done</body></html>",
  "a",
  " ",
  "\n",
  "",
];

Deno.test("GPT-2 vocab.json + merges.txt encode exactly as tiktoken's gpt2", () => {
  const tok = loadGpt2();
  if (!tok) return;
  const tik = new Tiktoken(gpt2Ranks);
  assert.equal(tok.vocabSize, 50257);
  assert.deepEqual([tok.bosId, tok.eosId, tok.padId], [50256, 50256, 50256]);
  assert.equal(tok.fastEncoder, true);
  let tokens = 0;
  for (const s of SAMPLES) {
    const expected = tik.encode(s);
    assert.deepEqual(tok.encode(s), expected, `encode(${JSON.stringify(s)})`);
    assert.deepEqual(tok.encodeWithLibrary(s), expected, `library encode(${JSON.stringify(s)})`);
    tokens += expected.length;
  }
  const r = uniforms(7);
  for (let i = 0; i < 300; i++) {
    const s = randomText(r, 1 + Math.floor(r() * 60));
    const expected = tik.encode(s);
    assert.deepEqual(tok.encode(s), expected, `encode(${JSON.stringify(s)})`);
    assert.deepEqual(tok.encodeWithLibrary(s), expected, `library encode(${JSON.stringify(s)})`);
    tokens += expected.length;
  }
  console.log(`  ${SAMPLES.length} samples + 300 random strings: ${tokens} tokens, all equal to tiktoken`);
});

Deno.test("GPT-2: decode(encode(s)) === s for random Unicode, astral plane included", () => {
  const tok = loadGpt2();
  if (!tok) return;
  const r = uniforms(11);
  for (let i = 0; i < 200; i++) {
    const s = i % 2 ? randomUnicode(r, 1 + Math.floor(r() * 40)) : randomText(r, 1 + Math.floor(r() * 40));
    const ids = tok.encode(s);
    assert.deepEqual(tok.encodeWithLibrary(s), ids, `fast and library encodings of ${JSON.stringify(s)}`);
    assert.equal(tok.decode(ids), s);
  }
  for (const s of SAMPLES) assert.equal(tok.decode(tok.encode(s)), s);
  // Token by token, a split character decodes to U+FFFD; whole, it comes back.
  assert.equal(tok.decode(tok.encode("😀").slice(0, 1)), "\ufffd");
  // The special token's text maps to its id and back, as in Hugging Face.
  assert.deepEqual(tok.encode(`a${GPT2_EOT}b`), [64, 50256, 65]);
  assert.equal(tok.decode([64, 50256, 65]), `a${GPT2_EOT}b`);
});

/**
 * A tiny GPT-2-format vocabulary: the 256 byte characters at ids 0..255 (in byte order), then the
 * merges "Ġ t" -> 256, "h e" -> 257, "Ġt he" -> 258, and <|endoftext|> at 259.
 */
function tinyFiles(): { vocab: string; merges: string } {
  const v: Record<string, number> = {};
  BYTE_TO_CHAR.forEach((c, b) => (v[c] = b));
  Object.assign(v, { "Ġt": 256, "he": 257, "Ġthe": 258, [GPT2_EOT]: 259 });
  return { vocab: JSON.stringify(v), merges: "#version: 0.2\nĠ t\nh e\nĠt he\n" };
}

Deno.test("tokenizerJsonFromGpt2Files: hand-checked encodings on a tiny vocabulary", () => {
  const { vocab, merges } = tinyFiles();
  const tok = Tokenizer.fromJSON(tokenizerJsonFromGpt2Files(vocab, merges), "tiny");
  assert.equal(tok.vocabSize, 260);
  assert.deepEqual([tok.bosId, tok.eosId, tok.padId], [259, 259, 259]);
  const t = 0x74, h = 0x68, e = 0x65, space = 0x20;
  const cases: Array<[string, number[]]> = [
    [" the", [258]],
    ["the", [t, 257]],
    ["the the", [t, 257, 258]],
    [" th", [256, h]],
    ["hehe", [257, 257]],
    ["  the", [space, 258]], // the space before a word goes with the word; the other one stays alone
    [`he${GPT2_EOT} the`, [257, 259, 258]],
    ["é", [0xc3, 0xa9]],
  ];
  for (const [s, ids] of cases) {
    assert.deepEqual(tok.encode(s), ids, `encode(${JSON.stringify(s)})`);
    assert.deepEqual(tok.encodeWithLibrary(s), ids, `library encode(${JSON.stringify(s)})`);
    assert.equal(tok.decode(ids), s);
  }
  assert.equal(e, 0x65);
  const r = uniforms(3);
  for (let i = 0; i < 100; i++) {
    const s = randomUnicode(r, 1 + Math.floor(r() * 30));
    assert.equal(tok.decode(tok.encode(s)), s);
  }
  // toJSON gives the text back, and it loads to the same tokenizer.
  const again = Tokenizer.fromJSON(tok.toJSON(), "again");
  assert.deepEqual(again.encode("the the he"), tok.encode("the the he"));
  assert.deepEqual(Tokenizer.fromJSON(JSON.parse(tok.toJSON()), "object").encode(" the"), [258]);
});

Deno.test("tokenizerJsonFromGpt2Files: errors name the file and line", () => {
  const { vocab, merges } = tinyFiles();
  const bad = (v: string, m: string, pattern: RegExp) =>
    assert.throws(() => tokenizerJsonFromGpt2Files(v, m), pattern);
  bad("{", merges, /vocab\.json: not valid JSON/);
  bad("[1, 2]", merges, /vocab\.json: expected an object/);
  bad(JSON.stringify({ a: 0, b: "x" }), merges, /vocab\.json: token "b" has id "x"/);
  bad(JSON.stringify({ a: 0, b: 0 }), merges, /vocab\.json: id 0 is used by both "a" and "b"/);
  bad(JSON.stringify({ a: 0 }), "", /vocab\.json: no <\|endoftext\|> token/);
  bad(vocab, "#version: 0.2\nĠ t\nh e x\n", /merges\.txt:3: expected "left right", found "h e x"/);
  bad(vocab, "#version: 0.2\nq z\n", /merges\.txt:2: token "qz" is not in vocab\.json/);
});

Deno.test("Tokenizer.fromJSON: errors name the source", () => {
  const { vocab, merges } = tinyFiles();
  const good = JSON.parse(tokenizerJsonFromGpt2Files(vocab, merges));
  assert.throws(
    () => Tokenizer.fromJSON("{not json", "x/tokenizer.json"),
    /x\/tokenizer\.json: not valid JSON/,
  );
  assert.throws(
    () => Tokenizer.fromJSON("[]", "src"),
    /src: expected a tokenizer\.json object, found an array/,
  );
  assert.throws(() => Tokenizer.fromJSON({ version: "1.0" }, "src"), /src: expected a "model" object/);
  assert.throws(
    () => Tokenizer.fromJSON({ ...good, model: { type: "WordLevel", vocab: {} } }, "src"),
    /src: model\.type "WordLevel" is not supported \(expected BPE, WordPiece, Unigram\)/,
  );
  assert.throws(
    () => Tokenizer.fromJSON({ ...good, added_tokens: [] }, "src"),
    /src: no end-of-text token: expected a special added token named one of <eos>/,
  );
  assert.throws(
    () => Tokenizer.fromJSON(good, "src", { pad: "<pad>" }),
    /src: pad token "<pad>" is not in the vocabulary/,
  );
  assert.throws(
    () => Tokenizer.fromJSON({ ...good, pre_tokenizer: { type: "NoSuchThing" } }, "src"),
    /src: @huggingface\/tokenizers cannot load it/,
  );
  const tok = Tokenizer.fromJSON(good, "src");
  assert.equal(tok.decode([]), "");
  assert.throws(() => tok.decode([260]), /src: cannot decode id 260: not in the vocabulary of 260 ids/);
  assert.throws(() => tok.decode([1.5]), /cannot decode id 1\.5/);
  // Explicit names pick other tokens for the roles.
  const named = Tokenizer.fromJSON(good, "src", { bos: "Ġthe", pad: "he" });
  assert.deepEqual([named.bosId, named.eosId, named.padId], [258, 259, 257]);
});

Deno.test("Tokenizer: separate <bos>/<eos>/<pad> tokens are found by name", () => {
  const { vocab, merges } = tinyFiles();
  const j = JSON.parse(tokenizerJsonFromGpt2Files(vocab, merges));
  const extra = [["<pad>", 260], ["<bos>", 261], ["<eos>", 262]] as const;
  for (const [content, id] of extra) {
    j.model.vocab[content] = id;
    j.added_tokens.push({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    });
  }
  const tok = Tokenizer.fromJSON(j, "three specials");
  assert.deepEqual([tok.bosId, tok.eosId, tok.padId, tok.vocabSize], [261, 262, 260, 263]);
  assert.deepEqual(tok.encode("<bos>the<eos><pad>"), [261, 0x74, 257, 262, 260]);
  assert.deepEqual(tok.encodeWithLibrary("<bos>the<eos><pad>"), [261, 0x74, 257, 262, 260]);
});

Deno.test("loadTokenizer: a file or a directory; missing files are named", async () => {
  const { vocab, merges } = tinyFiles();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/tokenizer.json`, tokenizerJsonFromGpt2Files(vocab, merges));
    assert.deepEqual((await loadTokenizer(dir)).encode(" the"), [258]);
    assert.deepEqual((await loadTokenizer(`${dir}/tokenizer.json`)).encode(" the"), [258]);
    await assert.rejects(() => loadTokenizer(`${dir}/nope.json`), /cannot read .*nope\.json/);
    await Deno.mkdir(`${dir}/empty`);
    await assert.rejects(() => loadTokenizer(`${dir}/empty`), /the directory .*empty has no tokenizer\.json/);
    await Deno.writeTextFile(`${dir}/broken.json`, "{");
    await assert.rejects(() => loadTokenizer(`${dir}/broken.json`), /broken\.json: not valid JSON/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
