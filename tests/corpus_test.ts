/**
 * Corpus tests: piecewise tokenization equals whole-text tokenization (toy GPT-2 pre-tokenizer and the
 * real GPT-2 tokenizer when ../shared has it), the baseline's line join, chunk ranges, reproducible and
 * disjoint per-round draws, datapoint contents, errors, directory reading and the token cache.
 */
import assert from "node:assert/strict";
import {
  Corpus,
  decodeTokenCache,
  type Encode,
  encodeTokenCache,
  type TokenizedSource,
  tokenizeSource,
  tokenizeTexts,
} from "../interaction/corpus.ts";
import {
  BABYLM_SOURCES,
  fileText,
  findCorpusFiles,
  firstInvalidUtf8,
  readCorpusDir,
} from "../cli/corpus_dir.ts";
import { download, verifyCorpus } from "../cli/data.ts";
import { deadUrl } from "./teacher_server.ts";
import { countWords, embeddedSources, generateText } from "../interaction/grammar.ts";
import { Tokenizer, tokenizerJsonFromGpt2Files } from "../model/tokenizer.ts";
import { uniforms } from "../model/random.ts";

const SHARED = new URL("../../shared/data/", import.meta.url).pathname;

/** GPT-2's pre-tokenizer regex with every distinct pre-token mapped to an id in order of appearance. */
function toyEncoder(): Encode {
  const ids = new Map<string, number>();
  const re = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  return (text) => {
    const out: number[] = [];
    for (const m of text.matchAll(re)) {
      if (!ids.has(m[0])) ids.set(m[0], ids.size);
      out.push(ids.get(m[0])!);
    }
    return out;
  };
}

/** One code unit per token: a transparent encoder for range checks. */
const charEncoder: Encode = (text) => Array.from(text, (c) => c.charCodeAt(0));

/** Yield `text` in pieces of `n` characters, to exercise piece boundaries anywhere. */
function* split(text: string, n: number): Generator<string> {
  for (let i = 0; i < text.length; i += n) yield text.slice(i, i + n);
}

const TRICKY = "A:\tOkay.\nB:\t  two spaces\n\nblank line above\n 12 numbers\n*CHI:\tmore cookie ?\n" +
  "tabs\t\tand 's contractions don't\r\nwindows line\n\n\n";

Deno.test("piecewise tokenization equals whole-text tokenization (toy GPT-2 pre-tokenizer)", async () => {
  const text = TRICKY.repeat(5) + generateText(3000, { seed: 5, style: "childes" }) + "\n" +
    generateText(2000, { seed: 6, style: "plain" });
  for (const lineJoin of ["raw", "baseline"] as const) {
    const whole = lineJoin === "raw" ? text : text.replace(/\r\n?/g, "\n").replace(/\n(?!$)/g, "\n "); // Python ' '.join(readlines())
    const enc = toyEncoder();
    const expected = Array.from(enc(whole));
    for (const [pieceChars, inputChunk] of [[40, 7], [257, 1000], [1 << 20, 33]]) {
      const src = await tokenizeSource("t", split(text, inputChunk), toyEncoder(), { lineJoin, pieceChars });
      // Ids are assigned in order of appearance, so equal id lists mean equal pre-token sequences.
      assert.deepEqual(Array.from(src.tokens), expected, `${lineJoin} pieceChars=${pieceChars}`);
      assert.equal(src.words, countWords(whole));
      if (pieceChars === 40) assert.ok(src.marks.tokens.length > 50, "small pieces were cut");
    }
  }
});

Deno.test("piecewise tokenization equals whole-text tokenization (GPT-2 BPE)", async () => {
  let vocab: string, merges: string;
  try {
    vocab = await Deno.readTextFile(`${SHARED}tokenizers/gpt2/vocab.json`);
    merges = await Deno.readTextFile(`${SHARED}tokenizers/gpt2/merges.txt`);
  } catch {
    console.log("note: ../shared/data/tokenizers/gpt2 absent, GPT-2 piecewise check skipped");
    return;
  }
  const tok = Tokenizer.fromJSON(tokenizerJsonFromGpt2Files(vocab, merges), "gpt2");
  const text = TRICKY + generateText(800, { seed: 9, style: "childes" }) + "\n" + TRICKY;
  const expected = tok.encode(text);
  const src = await tokenizeSource("t", split(text, 13), (s) => tok.encode(s), { pieceChars: 64 });
  assert.deepEqual(Array.from(src.tokens), expected);
  assert.ok(src.tokens instanceof Uint16Array, "GPT-2 ids fit 16 bits");
});

/** Sources with known tokens: source k is the characters of a fixed string. */
async function toySources(lengths: number[]): Promise<TokenizedSource[]> {
  return await Promise.all(lengths.map((n, k) => {
    // Letters with a space every fifth character: a word per five tokens.
    const text = Array.from(
      { length: n },
      (_, i) => i % 5 === 4 ? " " : String.fromCharCode(97 + ((i * 7 + k) % 26)),
    )
      .join("");
    return tokenizeSource(`s${k}`, text, charEncoder);
  }));
}

Deno.test("chunks: equal ranges, the last takes the remainder, rounds draw disjoint chunks", async () => {
  const sources = await toySources([1003, 517, 260]);
  const opts = { numRounds: 5, datapointLength: 20, contextLength: 8, seed: 42 };
  const c = new Corpus(sources, opts);
  assert.deepEqual(c.chunkRange(0, 0), [0, 200]);
  assert.deepEqual(c.chunkRange(0, 4), [800, 1003]);
  assert.deepEqual(c.chunkRange(2, 3), [156, 208]);
  const seen = sources.map(() => new Set<number>());
  for (let r = 0; r < 5; r++) {
    for (const [s, ch] of c.roundChunks(r).entries()) {
      assert.ok(!seen[s].has(ch.chunk), `round ${r} reuses chunk ${ch.chunk} of ${ch.source}`);
      seen[s].add(ch.chunk);
      assert.deepEqual([ch.start, ch.end], c.chunkRange(s, ch.chunk));
      assert.equal(ch.datapoints, Math.floor((ch.end - ch.start) / 20));
    }
  }
  for (const s of seen) assert.equal(s.size, 5);
  // A pure function of (seed, round): a new corpus object gives the same draws; another seed differs.
  const again = new Corpus(sources, opts);
  const other = new Corpus(sources, { ...opts, seed: 43 });
  const order = (x: Corpus) =>
    [0, 1, 2, 3, 4].map((r) => x.roundChunks(r).map((ch) => ch.chunk).join()).join("|");
  assert.equal(order(again), order(c));
  assert.notEqual(order(other), order(c));
  // Word estimates: close to the words of each chunk's text, and summing to the total.
  for (let r = 0; r < 5; r++) {
    for (const [s, ch] of c.roundChunks(r).entries()) {
      const text = String.fromCharCode(...sources[s].tokens.subarray(ch.start, ch.end));
      assert.ok(Math.abs(ch.words - countWords(text)) <= 1, `${ch.words} vs ${countWords(text)}`);
    }
  }
  const total = [0, 1, 2, 3, 4].reduce((a, r) => a + c.roundWords(r), 0);
  assert.ok(Math.abs(total - sources.reduce((a, s) => a + s.words, 0)) <= 15);
});

Deno.test("datapoints: contexts and continuations are the source's tokens, the short tail is dropped", async () => {
  const sources = await toySources([1003, 517]);
  const c = new Corpus(sources, { numRounds: 4, datapointLength: 30, contextLength: 12, seed: 1 });
  for (let r = 0; r < 4; r++) {
    const dps = c.roundDatapoints(r);
    const chunks = c.roundChunks(r);
    assert.equal(dps.length, chunks.reduce((a, ch) => a + ch.datapoints, 0));
    for (const dp of dps) {
      const s = sources.findIndex((x) => x.name === dp.source);
      const [start] = c.chunkRange(s, dp.chunk);
      const at = start + dp.index * 30;
      assert.deepEqual(Array.from(dp.context), Array.from(sources[s].tokens.subarray(at, at + 12)));
      assert.deepEqual(Array.from(dp.continuation), Array.from(sources[s].tokens.subarray(at + 12, at + 30)));
    }
    // Source 0's chunks of 250 (the last 253) tokens -> 8 datapoints of 30, the tail dropped.
    assert.equal(chunks[0].datapoints, 8);
  }
  // A seeded subset: reproducible, in order, of the requested size.
  const a = c.roundDatapoints(2, { max: 5 }), b = c.roundDatapoints(2, { max: 5 });
  assert.equal(a.length, 5);
  assert.deepEqual(a.map((d) => `${d.source}:${d.index}`), b.map((d) => `${d.source}:${d.index}`));
  const all = c.roundDatapoints(2).map((d) => `${d.source}:${d.index}`);
  const idx = a.map((d) => all.indexOf(`${d.source}:${d.index}`));
  assert.deepEqual(idx, [...idx].sort((x, y) => x - y));
});

Deno.test("corpus errors name the problem", async () => {
  const sources = await toySources([100]);
  assert.throws(
    () => new Corpus(sources, { numRounds: 2, datapointLength: 10, contextLength: 10, seed: 0 }),
    /contextLength \(10\) must be smaller than datapointLength \(10\)/,
  );
  assert.throws(
    () => new Corpus(sources, { numRounds: 200, datapointLength: 10, contextLength: 5, seed: 0 }),
    /fewer than numRounds/,
  );
  assert.throws(
    () => new Corpus([], { numRounds: 2, datapointLength: 10, contextLength: 5, seed: 0 }),
    /no sources/,
  );
  await assert.rejects(tokenizeSource("empty", "", charEncoder), /source empty is empty/);
  const c = new Corpus(sources, { numRounds: 2, datapointLength: 10, contextLength: 5, seed: 0 });
  assert.throws(() => c.roundChunks(2), /round must be an integer in \[0, 1\]/);
  const short = new Corpus(sources, { numRounds: 20, datapointLength: 10, contextLength: 5, seed: 0 });
  assert.match(short.warnings[0], /shorter than one datapoint/);
});

Deno.test("corpus directory: files as sources, train_100M/ subfolder, clear errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(findCorpusFiles(`${dir}/missing`), /does not exist/);
    await assert.rejects(findCorpusFiles(dir), /has no \.train or \.txt files/);
    await Deno.mkdir(`${dir}/train_100M`);
    await Deno.writeTextFile(`${dir}/train_100M/switchboard.train`, "A:\tOkay.\nB:\tRight.");
    await Deno.writeTextFile(`${dir}/train_100M/childes.train`, "*MOT:\tlook !\n*CHI:\tdoggie .\n");
    await Deno.writeTextFile(`${dir}/train_100M/childes.dev`, "not a training file");
    const files = await findCorpusFiles(dir);
    assert.deepEqual(files.map((f) => f.name), ["childes", "switchboard"]);
    const sources = await readCorpusDir(dir, charEncoder);
    assert.equal(sources[1].tokens.length, "A:\tOkay.\nB:\tRight.".length);
    assert.equal(sources[0].words, 6);
    await Deno.writeTextFile(`${dir}/train_100M/empty.train`, "");
    await assert.rejects(readCorpusDir(dir, charEncoder), /empty\.train is empty/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("corpus directory: symlinked source files are read, and the log names every file read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/real/folder.train`, { recursive: true });
    await Deno.writeTextFile(`${dir}/real/childes.train`, "*CHI:\tdoggie .\n");
    await Deno.writeTextFile(`${dir}/real/gutenberg.train`, "Call me Ishmael.\n");
    // Only links: the BabyLM files linked into a folder of one's own.
    await Deno.mkdir(`${dir}/links`);
    await Deno.symlink(`${dir}/real/childes.train`, `${dir}/links/childes.train`);
    await Deno.symlink(`../real/gutenberg.train`, `${dir}/links/gutenberg.train`);
    await Deno.symlink(`${dir}/real/folder.train`, `${dir}/links/folder.train`); // a folder: not a source
    const lines: string[] = [];
    const sources = await readCorpusDir(`${dir}/links`, charEncoder, { onLog: (l) => lines.push(l) });
    assert.deepEqual(sources.map((s) => [s.name, s.tokens.length]), [["childes", 15], ["gutenberg", 17]]);
    assert.equal(lines.length, 1);
    assert.equal(
      lines[0],
      `corpus ${dir}/links: 2 source file(s): ${dir}/links/childes.train -> ${dir}/real/childes.train, ` +
        `${dir}/links/gutenberg.train -> ${dir}/real/gutenberg.train`,
    );
    // A real file and a link: the linked source is not dropped.
    await Deno.mkdir(`${dir}/mixed`);
    await Deno.writeTextFile(`${dir}/mixed/switchboard.train`, "A:\tOkay.\n");
    await Deno.symlink(`${dir}/real/childes.train`, `${dir}/mixed/childes.train`);
    assert.deepEqual((await findCorpusFiles(`${dir}/mixed`)).map((f) => f.name), ["childes", "switchboard"]);
    // A link to nothing was meant as a source: named, not skipped.
    await Deno.symlink(`${dir}/real/missing.train`, `${dir}/mixed/bnc_spoken.train`);
    await assert.rejects(findCorpusFiles(`${dir}/mixed`), /mixed\/bnc_spoken\.train is a symlink to nothing/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The reference offset: the longest prefix that decodes as strict UTF-8 ends where the first bad sequence starts. */
function bruteInvalidOffset(bytes: Uint8Array): number {
  for (let k = bytes.length; k >= 0; k--) {
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, k));
      return k === bytes.length ? -1 : k;
    } catch {
      // a longer prefix holds a bad or cut sequence
    }
  }
  return 0;
}

Deno.test("corpus source: a file that is not UTF-8 is refused, naming it and the first bad byte's offset", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/bytes.train`;
    // Short random byte strings, mostly valid UTF-8 pieces with some broken ones, against the reference.
    const r = uniforms(16);
    const pieces = [
      [0x41],
      [0xc3, 0xa9],
      [0xe2, 0x82, 0xac],
      [0xf0, 0x9f, 0x98, 0x80],
      [0x80],
      [0xc0, 0x80],
      [0xed, 0xa0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
      [0xe2, 0x82],
      [0xff],
      [0xf0, 0x9f],
    ];
    for (let trial = 0; trial < 300; trial++) {
      const bytes = new Uint8Array(
        Array.from({ length: Math.floor(r() * 8) }, () => pieces[Math.floor(r() * pieces.length)]).flat(),
      );
      await Deno.writeFile(path, bytes);
      assert.equal(await firstInvalidUtf8(path), bruteInvalidOffset(bytes), `bytes ${bytes.join(",")}`);
    }
    // A large file (many read chunks) whose first bad sequence is a 3-byte character cut short far in.
    const good = new TextEncoder().encode("the cat sat on the mat, é€😀\n".repeat(20000));
    const bad = new Uint8Array([...good, 0xe2, 0x82, 0x41, 0xff, ...good.subarray(0, 1000)]);
    await Deno.writeFile(`${dir}/binary.train`, bad);
    assert.equal(await firstInvalidUtf8(`${dir}/binary.train`), good.length);
    await assert.rejects(
      readCorpusDir(dir, charEncoder),
      new RegExp(
        `binary\\.train is not valid UTF-8: the first invalid byte sequence is at byte offset ${good.length} `,
      ),
    );
    // The same text without the bad bytes reads whole, the byte-order mark dropped.
    await Deno.remove(path);
    await Deno.writeFile(`${dir}/binary.train`, new Uint8Array([0xef, 0xbb, 0xbf, ...good]));
    let text = "";
    for await (const piece of fileText(`${dir}/binary.train`)) text += piece;
    assert.equal(text, new TextDecoder().decode(good));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the BabyLM sample from ../shared reads as a source", async () => {
  const dir = `${SHARED}babylm_sample/train_100M`;
  try {
    await Deno.stat(dir);
  } catch {
    console.log("note: ../shared/data/babylm_sample absent, skipped");
    return;
  }
  const sources = await readCorpusDir(dir, charEncoder);
  assert.deepEqual(sources.map((s) => s.name), ["switchboard"]);
  assert.equal(sources[0].tokens.length, 158);
  const c = new Corpus(sources, { numRounds: 2, datapointLength: 16, contextLength: 8, seed: 3 });
  const text = await Deno.readTextFile(`${dir}/switchboard.train`);
  for (const dp of [...c.roundDatapoints(0), ...c.roundDatapoints(1)]) {
    const ctx = String.fromCharCode(...dp.context) + String.fromCharCode(...dp.continuation);
    const [start] = c.chunkRange(0, dp.chunk);
    assert.equal(ctx, text.slice(start + dp.index * 16, start + dp.index * 16 + 16));
  }
  assert.equal(c.roundDatapoints(0).length + c.roundDatapoints(1).length, 2 * Math.floor(79 / 16));
});

Deno.test("token cache round trip", async () => {
  const sources = [
    ...(await toySources([33])),
    {
      name: "wide",
      tokens: Uint32Array.from([70000, 1, 2]),
      words: 3,
      marks: { tokens: [0, 3], words: [0, 3] },
    },
  ];
  const bytes = encodeTokenCache(sources, { tokenizer: "x" });
  const back = decodeTokenCache(bytes);
  assert.deepEqual(back.meta, { tokenizer: "x" });
  assert.equal(back.sources.length, 2);
  for (let i = 0; i < 2; i++) {
    assert.equal(back.sources[i].tokens.constructor, sources[i].tokens.constructor);
    assert.deepEqual(Array.from(back.sources[i].tokens), Array.from(sources[i].tokens));
    assert.deepEqual(back.sources[i].marks, sources[i].marks);
  }
  assert.throws(() => decodeTokenCache(new Uint8Array(16), "f.bin"), /f\.bin: not a token cache/);
});

Deno.test("deno task data: an unreachable server gives a clear message; a corpus missing a file is named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      download(deadUrl(), `${dir}/c.zip`),
      /cannot reach http:\/\/127\.0\.0\.1:\d+ .*offline.*--zip/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing written");
    await Deno.mkdir(`${dir}/train_100M`);
    for (const s of BABYLM_SOURCES.slice(0, 5)) await Deno.writeTextFile(`${dir}/train_100M/${s}.train`, "x");
    await assert.rejects(verifyCorpus(dir), /train_100M: missing switchboard\.train/);
    await Deno.writeTextFile(`${dir}/train_100M/switchboard.train`, "A:\tOkay.");
    assert.equal(await verifyCorpus(dir), `${dir}/train_100M`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the embedded corpus as sources of a corpus", async () => {
  const sources = await tokenizeTexts(embeddedSources(1, 6000), toyEncoder());
  assert.deepEqual(sources.map((s) => s.name), ["embedded_childes", "embedded_dialogue"]);
  const c = new Corpus(sources, { numRounds: 3, datapointLength: 64, contextLength: 32, seed: 0 });
  const words = [0, 1, 2].map((r) => c.roundWords(r));
  // About a third of the 6000 words per round, the chunks' estimates summing to the total.
  assert.ok(
    Math.abs(words.reduce((a, b) => a + b) - sources[0].words - sources[1].words) <= 6,
    String(words),
  );
  assert.ok(words.every((w) => w > 1700 && w < 2300), String(words));
  assert.ok(c.roundDatapoints(0).every((d) => d.context.length === 32 && d.continuation.length === 32));
});
