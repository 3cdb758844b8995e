/**
 * The BPE trainer: its incremental merges equal a naive trainer that recounts every pair at every
 * step; chunking of the streamed corpus changes nothing; the written tokenizer.json has the standard
 * layout and encodes held-out text the same in this project's encoder and in @huggingface/tokenizers;
 * the command writes the file and refuses bad input.
 */
import assert from "node:assert/strict";
import { BYTE_TO_CHAR } from "../model/bpe_format.ts";
import { trainBpe, trainBpeFromCounts, trainedBpeJson, WordCounter, wordCounts } from "../model/bpe_train.ts";
import { Tokenizer } from "../model/tokenizer.ts";
import { uniforms } from "../model/random.ts";

/**
 * The reference: recount all pairs of all words at every step, take the most frequent (ties: smaller
 * left id, then smaller right id), merge it left to right in every word. Symbols: bytes 0..255, then
 * new strings in order of creation (a merge whose string exists reuses that symbol).
 */
function naiveTrain(
  counts: Map<string, number>,
  merges: number,
  minFrequency: number,
): Array<[string, string]> {
  const enc = new TextEncoder();
  const words = [...counts].map(([w, c]) => ({ syms: [...enc.encode(w)], c }));
  const str = BYTE_TO_CHAR.slice();
  const out: Array<[string, string]> = [];
  while (out.length < merges) {
    const pc = new Map<string, number>();
    for (const { syms, c } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = `${syms[i]},${syms[i + 1]}`;
        pc.set(k, (pc.get(k) ?? 0) + c);
      }
    }
    let best: [number, number] | undefined, bestC = 0;
    for (const [k, c] of pc) {
      const [a, b] = k.split(",").map(Number);
      if (c > bestC || (c === bestC && best && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bestC = c;
      }
    }
    if (!best || bestC < minFrequency) break;
    const [a, b] = best;
    let z = str.indexOf(str[a] + str[b]);
    if (z < 0) z = str.push(str[a] + str[b]) - 1;
    out.push([str[a], str[b]]);
    for (const w of words) {
      const next: number[] = [];
      for (let i = 0; i < w.syms.length;) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          next.push(z);
          i += 2;
        } else next.push(w.syms[i++]);
      }
      w.syms = next;
    }
  }
  return out;
}

/** Random text over a small alphabet (many ties and runs like "aaaa"), with spaces, punctuation, UTF-8. */
function randomCorpus(seed: number, n: number): string {
  const r = uniforms(seed);
  const pieces = ["a", "a", "b", "ab", "c", " ", " ", " ", "\n", "é", "'s", ".", "1", "22", "ß", "😀", "aaa"];
  let s = "";
  for (let i = 0; i < n; i++) s += pieces[Math.floor(r() * pieces.length)];
  return s;
}

Deno.test("incremental merges equal a naive trainer that recounts every pair", async () => {
  for (const [seed, vocab, minFreq] of [[1, 330, 2], [2, 420, 1], [3, 300, 5], [4, 500, 2]]) {
    const { counts } = await wordCounts([randomCorpus(seed, 3000)]);
    const bpe = trainBpeFromCounts(counts, { vocabSize: vocab, minFrequency: minFreq });
    const expected = naiveTrain(counts, 100000, minFreq);
    // Both stop at the vocabulary size or when pairs run out; merges may repeat a string, so the
    // reference is cut where the trainer's vocabulary filled up.
    assert.deepEqual(bpe.merges, expected.slice(0, bpe.merges.length), `seed ${seed}`);
    const full = bpe.tokens.length === vocab;
    if (!full) {
      assert.equal(bpe.merges.length, expected.length, `seed ${seed}: stopped early for another reason`);
    }
    console.log(
      `  seed ${seed}: ${bpe.merges.length} merges equal the reference (${counts.size} distinct words, ` +
        `vocab ${bpe.tokens.length}${full ? "" : `, stopped at min frequency ${minFreq}`})`,
    );
  }
});

Deno.test("word counts do not depend on how the text is cut into chunks", async () => {
  const text = randomCorpus(5, 4000) + "\nlast line without newline";
  const whole = await wordCounts([text]);
  const r = uniforms(9);
  const chunks: string[] = [];
  for (let i = 0; i < text.length;) {
    const n = 1 + Math.floor(r() * 40);
    chunks.push(text.slice(i, i + n)); // may split a surrogate pair: lines are joined before splitting
    i += n;
  }
  async function* stream() {
    for (const c of chunks) yield c;
  }
  const streamed = await wordCounts(stream());
  assert.deepEqual([...streamed.counts].sort(), [...whole.counts].sort());
  assert.equal(streamed.words, whole.words);
  assert.equal(streamed.pretokens, whole.pretokens);
  // Each line is pre-tokenized on its own (as the Hugging Face trainer reads files line by line).
  const perLine = new WordCounter();
  for (const line of text.split(/(?<=\n)/)) {
    perLine.add(line);
    perLine.flush();
  }
  assert.deepEqual([...perLine.finish().counts].sort(), [...whole.counts].sort());
});

Deno.test("word count is the number of whitespace-separated words", async () => {
  const texts = [
    "Hello world, it's 2024!  Two  spaces.\n\nNew paragraph\t tab",
    "  leading and trailing  \n",
    "a-b c.d (e) 'f' \"g\" h's 中文 字符 😀x",
    randomCorpus(6, 2000),
  ];
  for (const t of texts) {
    const c = await wordCounts([t]);
    assert.equal(c.words, t.split(/\s+/).filter((w) => w !== "").length, JSON.stringify(t.slice(0, 40)));
  }
});

Deno.test("trained tokenizer.json: standard layout, held-out text encodes as @huggingface/tokenizers", async () => {
  const r = uniforms(12);
  const lexicon = Array.from({ length: 300 }, () => {
    const syl = ["ba", "ke", "lo", "mi", "str", "an", "ing", "é", "the", "qu"];
    let w = "";
    for (let k = 0, n = 1 + Math.floor(r() * 3); k < n; k++) w += syl[Math.floor(r() * syl.length)];
    return w;
  });
  const line = () =>
    Array.from({ length: 4 + Math.floor(r() * 10) }, () => lexicon[Math.floor(r() * r() * lexicon.length)])
      .join(" ") + (r() < 0.5 ? ".\n" : "?\n");
  const train = Array.from({ length: 2000 }, line);
  const { bpe, counts } = await trainBpe(train, { vocabSize: 500 });
  assert.equal(bpe.tokens.length, 500);
  assert.ok(counts.words > 10000);
  const json = trainedBpeJson(bpe);
  const j = JSON.parse(json);
  assert.equal(j.version, "1.0");
  assert.deepEqual(j.added_tokens, [{
    id: 0,
    content: "<|endoftext|>",
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }]);
  assert.deepEqual(j.pre_tokenizer, {
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  });
  assert.equal(j.decoder.type, "ByteLevel");
  assert.equal(j.model.type, "BPE");
  assert.equal(j.normalizer, null);
  const vocab = j.model.vocab as Record<string, number>;
  const byId = Object.entries(vocab).sort((a, b) => a[1] - b[1]);
  assert.deepEqual(byId.map(([, id]) => id), [...Array(500).keys()], "ids are 0..vocabSize-1");
  assert.equal(vocab["<|endoftext|>"], 0);
  BYTE_TO_CHAR.forEach((c, b) => assert.equal(vocab[c], 1 + b, `byte ${b}`));
  for (const m of j.model.merges as string[]) {
    const parts = m.split(" ");
    assert.equal(parts.length, 2, `merge ${JSON.stringify(m)} is "left right"`);
    assert.ok(parts[0] + parts[1] in vocab, `merge result ${parts[0] + parts[1]}`);
  }

  const tok = Tokenizer.fromJSON(json, "trained");
  assert.deepEqual([tok.bosId, tok.eosId, tok.padId, tok.vocabSize], [0, 0, 0, 500]);
  assert.equal(tok.fastEncoder, true);
  let tokens = 0, bytes = 0;
  const heldOut = [
    ...Array.from({ length: 200 }, line),
    "Unseen wörds, 1234 numbers\n\n  and   spaces 😀 中文",
  ];
  for (const s of heldOut) {
    const ids = tok.encode(s);
    assert.deepEqual(ids, tok.encodeWithLibrary(s), JSON.stringify(s));
    assert.equal(tok.decode(ids), s);
    tokens += ids.length;
    bytes += new TextEncoder().encode(s).length;
  }
  console.log(`  held-out: ${tokens} tokens equal the library's; ${(bytes / tokens).toFixed(2)} bytes/token`);
});

Deno.test("trainer: bad options are refused", () => {
  const counts = new Map([["ab", 3]]);
  assert.throws(() => trainBpeFromCounts(counts, { vocabSize: 256 }), /vocabSize must be an integer >= 257/);
  assert.throws(
    () => trainBpeFromCounts(counts, { vocabSize: 300, specialTokens: ["<a>", "<a>"] }),
    /special tokens must be distinct/,
  );
  // Separate specials take ids 0.. and the Tokenizer finds them by name.
  const bpe = trainBpeFromCounts(counts, { vocabSize: 300, specialTokens: ["<pad>", "<bos>", "<eos>"] });
  assert.deepEqual(bpe.merges, [["a", "b"]]);
  const tok = Tokenizer.fromJSON(trainedBpeJson(bpe), "three specials");
  assert.deepEqual([tok.padId, tok.bosId, tok.eosId], [0, 1, 2]);
  assert.deepEqual(tok.encode("ab"), [tok.tokenToId("ab")]);
});

const CLI = new URL("../cli/tokenizer.ts", import.meta.url).pathname;

/** Run the command; returns exit code and output. */
async function runCli(args: string[]): Promise<{ code: number; out: string }> {
  const p = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: p.code, out: dec.decode(p.stdout) + dec.decode(p.stderr) };
}

Deno.test("deno task tokenizer: writes tokenizer.json; clear errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/in`);
    await Deno.writeTextFile(`${dir}/in/a.train`, "the cat sat on the mat\nthe dog sat\n".repeat(50));
    await Deno.writeTextFile(`${dir}/in/b.txt`, "a cat and a dog, the end");
    await Deno.writeTextFile(`${dir}/in/skip.json`, "{}");
    const ok = await runCli(["--input", `${dir}/in`, "--vocab-size", "270", "--out", `${dir}/out`]);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /counted 457 words/);
    assert.match(ok.out, /words\/s/);
    const tok = Tokenizer.fromJSON(await Deno.readTextFile(`${dir}/out/tokenizer.json`), "cli output");
    assert.equal(tok.vocabSize, 270);
    assert.equal(tok.decode(tok.encode("the cat sat")), "the cat sat");
    assert.ok(tok.encode(" the").length === 1, "a frequent word is one token");

    const before = await Deno.readTextFile(`${dir}/out/tokenizer.json`);
    await Deno.mkdir(`${dir}/empty`);
    const fails: Array<[string[], RegExp]> = [
      [["--input", `${dir}/empty`, "--out", `${dir}/out`], /no \.txt or \.train files/],
      [["--out", `${dir}/out`], /no input files/],
      [["--input", `${dir}/nope.txt`, "--out", `${dir}/out`], /--input .*nope\.txt/],
      [
        ["--input", `${dir}/in`, "--vocab-size", "100", "--out", `${dir}/out`],
        /--vocab-size must be in \[257/,
      ],
      [["--input", `${dir}/in`], /missing required option --out/],
      [["--input", `${dir}/in`, "--out", `${dir}/in/a.train/sub`], /--out .*cannot write there/],
      [["--bogus"], /Unknown option '--bogus'/],
    ];
    for (const [args, pattern] of fails) {
      const r = await runCli(args);
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.out}`);
      assert.match(r.out, pattern);
    }
    assert.equal(
      await Deno.readTextFile(`${dir}/out/tokenizer.json`),
      before,
      "failed runs leave the output alone",
    );
    const help = await runCli(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.out, /--vocab-size/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task tokenizer: symlinked inputs are read and named; a file that is not UTF-8 is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/real`);
    await Deno.mkdir(`${dir}/in`);
    await Deno.writeTextFile(`${dir}/real/a.train`, "the cat sat on the mat\n".repeat(20));
    await Deno.writeTextFile(`${dir}/real/b.train`, "a dog ran\n".repeat(10));
    await Deno.symlink(`${dir}/real/a.train`, `${dir}/in/a.train`);
    await Deno.symlink(`${dir}/real/b.train`, `${dir}/in/b.train`);
    const ok = await runCli(["--input", `${dir}/in`, "--vocab-size", "260", "--out", `${dir}/out`]);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /counted 150 words/, "both linked files are counted");
    assert.ok(
      ok.out.includes(`${dir}/in/a.train -> ${dir}/real/a.train, ${dir}/in/b.train -> ${dir}/real/b.train`),
      ok.out,
    );
    await Deno.writeFile(`${dir}/in/c.train`, new Uint8Array([0x68, 0x69, 0x20, 0xc3, 0x28, 0x0a]));
    const bad = await runCli(["--input", `${dir}/in`, "--vocab-size", "260", "--out", `${dir}/out2`]);
    assert.equal(bad.code, 1, bad.out);
    assert.match(
      bad.out,
      /in\/c\.train is not valid UTF-8: the first invalid byte sequence is at byte offset 3 /,
    );
    await assert.rejects(Deno.stat(`${dir}/out2/tokenizer.json`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Python with the `tokenizers` library, or undefined (it is optional: `pip install tokenizers`). */
async function pythonTokenizers(): Promise<string | undefined> {
  try {
    const p = await new Deno.Command("python3", { args: ["-c", "import tokenizers"], stderr: "null" })
      .output();
    return p.success ? "python3" : undefined;
  } catch {
    return undefined;
  }
}

Deno.test("the Python tokenizers library loads the trained file and encodes the same (when installed)", async () => {
  const python = await pythonTokenizers();
  if (!python) {
    console.log("  note: python3 with `tokenizers` is not installed: Python check skipped");
    return;
  }
  const lines = ["the cat sat on the mat, didn't it?\n", "  dogs   and 12 cats 😀 café\n"];
  const { bpe } = await trainBpe(lines.map((l) => l.repeat(5)), { vocabSize: 300 });
  const json = trainedBpeJson(bpe);
  const tok = Tokenizer.fromJSON(json, "trained");
  const texts = ["the cat sat", " cats and dogs\n\n x", "café 😀 <|endoftext|> 123"];
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/tokenizer.json`, json);
    const script = "import json,sys\nfrom tokenizers import Tokenizer\nt=Tokenizer.from_file(sys.argv[1])\n" +
      "print(json.dumps([t.encode(s, add_special_tokens=False).ids for s in json.loads(sys.argv[2])]))";
    const p = await new Deno.Command(python, {
      args: ["-c", script, `${dir}/tokenizer.json`, JSON.stringify(texts)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(p.success, new TextDecoder().decode(p.stderr));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(p.stdout)), texts.map((s) => tok.encode(s)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
