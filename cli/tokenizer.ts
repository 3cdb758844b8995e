/**
 * `deno task tokenizer`: train a byte-level BPE tokenizer (GPT-2's scheme) on text files, or convert
 * GPT-2's own `vocab.json` + `merges.txt`, and write `OUT/tokenizer.json`, loadable by this project,
 * @huggingface/tokenizers and Python `tokenizers`.
 *
 *   deno task tokenizer --input data/train_100M --vocab-size 16384 --out runs/tok
 *   deno task tokenizer --gpt2-vocab gpt2/vocab.json --gpt2-merges gpt2/merges.txt --out runs/gpt2-tok
 *
 * Files are streamed (never held whole); special token: `<|endoftext|>` at id 0 (BOS, EOS, padding).
 * @module
 */
import { numberOption, parseCommand, Progress, required, runMain, UsageError } from "./common.ts";
import { writeFileAtomic } from "./files.ts";
import { describeFiles, fileText, type SourceFile, TEXT_EXTENSIONS, textFilesIn } from "./corpus_dir.ts";
import { trainBpeFromCounts, trainedBpeJson, WordCounter } from "../model/bpe_train.ts";
import { Tokenizer, TOKENIZER_FILE, tokenizerJsonFromGpt2Files } from "../model/tokenizer.ts";
import { englishEquivalentWords, parseWordMeasure, type WordMeasure } from "../interaction/words.ts";

const SPEC = {
  input: {
    type: "string",
    multiple: true,
    help: "a text file, or a directory whose .txt/.train files are read (repeatable)",
  },
  "vocab-size": {
    type: "string",
    help: "vocabulary size, <|endoftext|> and the 256 bytes included",
    default: "50257",
  },
  "min-frequency": {
    type: "string",
    help: "stop when the best pair occurs fewer times than this",
    default: "2",
  },
  "gpt2-vocab": {
    type: "string",
    help:
      "instead of training: GPT-2's vocab.json, converted with --gpt2-merges (<|endoftext|> keeps its id)",
  },
  "gpt2-merges": { type: "string", help: "GPT-2's merges.txt, for --gpt2-vocab" },
  "word-measure": {
    type: "string",
    help: "how the summary counts words, as a run's wordMeasure: whitespace (Python's str.split(), the " +
      "Strict tracks) or bytes:eng|nld|zho (English-equivalent words from UTF-8 bytes, the multilingual track)",
    default: "whitespace",
  },
  out: { type: "string", help: "output directory (tokenizer.json is written there)" },
} as const;

/**
 * Files named by `inputs`: files as given, directories expanded to their text files (symlinks followed),
 * sorted.
 */
export async function inputFiles(inputs: string[]): Promise<SourceFile[]> {
  const files: SourceFile[] = [];
  for (const input of inputs) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(input);
    } catch (e) {
      throw new UsageError(`--input ${input}: ${(e as Error).message}`);
    }
    if (!info.isDirectory) {
      files.push({ name: input, path: input });
      continue;
    }
    const found = await textFilesIn(input).catch((e) => {
      throw new UsageError(`--input ${input}: ${(e as Error).message}`);
    });
    if (found.length === 0) {
      throw new UsageError(`--input ${input}: no ${TEXT_EXTENSIONS.join(" or ")} files in it`);
    }
    files.push(...found.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)));
  }
  if (files.length === 0) throw new UsageError("no input files: give --input FILE_OR_DIR");
  return files;
}

/** Make `dir` and check a file can be written there, before any long work. */
async function checkWritable(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
    const probe = `${dir}/.write-test-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.writeTextFile(probe, "");
    await Deno.remove(probe);
  } catch (e) {
    throw new UsageError(`--out ${dir}: cannot write there: ${(e as Error).message}`);
  }
}

const SUMMARY = "Train a byte-level BPE tokenizer (GPT-2 pre-tokenization, <|endoftext|> at id 0) on text " +
  "files, or convert GPT-2's vocab.json + merges.txt.";

/** Read a file for `--option`, naming both in the error. */
async function readOption(path: string, option: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError(`--${option} ${path}: ${(e as Error).message}`);
  }
}

/** `--gpt2-vocab` + `--gpt2-merges`: GPT-2's files as one tokenizer.json, checked to load first. */
async function convertGpt2(vocabPath: string, mergesPath: string, out: string): Promise<void> {
  const vocab = await readOption(vocabPath, "gpt2-vocab");
  const merges = await readOption(mergesPath, "gpt2-merges");
  let json: string, tok: Tokenizer;
  try {
    json = tokenizerJsonFromGpt2Files(vocab, merges);
    tok = Tokenizer.fromJSON(json, "the converted tokenizer");
  } catch (e) {
    throw new UsageError(`${vocabPath} + ${mergesPath}: ${(e as Error).message}`);
  }
  await checkWritable(out);
  const path = `${out.replace(/\/+$/, "")}/${TOKENIZER_FILE}`;
  await writeFileAtomic(path, json);
  console.log(`wrote ${path}: ${tok.vocabSize} tokens from ${vocabPath} and ${mergesPath}`);
}

/** The command: parse `args`, train, write OUT/tokenizer.json. */
export async function main(args: string[] = Deno.args): Promise<void> {
  const o = parseCommand("tokenizer", SUMMARY, SPEC, args);
  if (o === undefined) return;
  const inputs = (o.input as string[] | undefined) ?? [];
  if (o["gpt2-vocab"] !== undefined || o["gpt2-merges"] !== undefined) {
    if (inputs.length > 0) {
      throw new UsageError("--input trains a tokenizer; --gpt2-vocab converts one: give one");
    }
    return convertGpt2(
      required(o["gpt2-vocab"], "gpt2-vocab"),
      required(o["gpt2-merges"], "gpt2-merges"),
      required(o.out, "out"),
    );
  }
  const vocabSize = numberOption(o["vocab-size"], "vocab-size", { min: 257, max: 2_000_000, integer: true });
  const minFrequency = numberOption(o["min-frequency"], "min-frequency", { min: 1, integer: true });
  let measure: WordMeasure;
  try {
    measure = parseWordMeasure(String(o["word-measure"]), "--word-measure");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const out = required(o.out, "out");
  const files = await inputFiles(inputs);
  await checkWritable(out);

  let totalBytes = 0;
  for (const f of files) totalBytes += (await Deno.stat(f.path)).size;
  console.error(
    `reading ${files.length} file(s), ${(totalBytes / 1e6).toFixed(1)} MB: ${describeFiles(files)}`,
  );
  const start = performance.now();
  const counter = new WordCounter();
  const bar = new Progress("counting words", Math.ceil(totalBytes / 1e6), "MB");
  let bytes = 0, shownMb = 0;
  // Whitespace words need the lines (the counter's); bytes:LANG words only the bytes read.
  const words = () =>
    measure.kind === "whitespace" ? counter.words : englishEquivalentWords(bytes, measure.language);
  for (const f of files) {
    const pieces = fileText(f.path, (n) => {
      bytes += n;
      const mb = Math.floor(bytes / 1e6);
      if (mb > shownMb) {
        bar.tick(mb - shownMb, `${words().toFixed(0)} words`);
        shownMb = mb;
      }
    });
    try {
      for await (const piece of pieces) counter.add(piece);
    } catch (e) {
      const message = (e as Error).message;
      throw new UsageError(message.includes(f.path) ? message : `cannot read ${f.path}: ${message}`);
    }
    counter.flush();
  }
  bar.end();
  const counts = counter.finish();
  const wordCount = words();
  const countSecs = (performance.now() - start) / 1000;
  console.error(
    `counted ${wordCount.toFixed(0)} words (${o["word-measure"]}; ${bytes} bytes, ${counts.pretokens} ` +
      `pre-tokens, ${counts.counts.size} distinct) in ${countSecs.toFixed(1)} s: ` +
      `${(wordCount / countSecs).toFixed(0)} words/s`,
  );

  const mergeStart = performance.now();
  const merges = new Progress("merging", vocabSize - 257, "merges");
  let shown = 0;
  const bpe = trainBpeFromCounts(counts.counts, {
    vocabSize,
    minFrequency,
    progressEvery: 500,
    onMerge: (done) => {
      merges.tick(done - shown);
      shown = done;
    },
  });
  merges.end();
  const json = trainedBpeJson(bpe);
  Tokenizer.fromJSON(json, "the trained tokenizer"); // it must load before it replaces anything
  const path = `${out.replace(/\/+$/, "")}/${TOKENIZER_FILE}`;
  await writeFileAtomic(path, json);
  const secs = (performance.now() - start) / 1000;
  if (bpe.tokens.length < vocabSize) {
    console.error(
      `note: stopped at ${bpe.tokens.length} tokens, below --vocab-size ${vocabSize}: no pair left occurring ` +
        `at least ${minFrequency} times`,
    );
  }
  console.log(
    `wrote ${path}: ${bpe.tokens.length} tokens, ${bpe.merges.length} merges; ` +
      `merging ${((performance.now() - mergeStart) / 1000).toFixed(1)} s, total ${secs.toFixed(1)} s, ` +
      `${(wordCount / secs).toFixed(0)} words/s overall`,
  );
}

if (import.meta.main) await runMain(() => main());
