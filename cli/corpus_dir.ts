/**
 * Reading a corpus directory from disk (Deno only): the BabyLM corpus as distributed (`train_100M/` or
 * `train_10M/` with six `.train` files: bnc_spoken, childes, gutenberg, open_subtitles, simple_wiki,
 * switchboard) or any folder of `.train`/`.txt` files, each file a source named after it. Files are
 * streamed through a TextDecoderStream so no whole 200 MB file is held as one string.
 * @module
 */
import { type Encode, type TokenizedSource, type TokenizeOptions, tokenizeSource } from "../interaction/corpus.ts";

/** The six sources of the BabyLM 2025 text corpus, in the baseline's order. */
export const BABYLM_SOURCES = [
  "bnc_spoken",
  "childes",
  "gutenberg",
  "open_subtitles",
  "simple_wiki",
  "switchboard",
];

/** A source file of a corpus directory. */
export interface SourceFile {
  name: string;
  path: string;
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/**
 * The source files of `dir`, sorted by name: its `.train` and `.txt` files, or when it has none, those of
 * its `train_100M/` (preferred) or `train_10M/` subfolder. Throws a message naming the directory when
 * it is missing or holds no source files.
 */
export async function findCorpusFiles(dir: string): Promise<SourceFile[]> {
  if (!(await isDir(dir))) {
    throw new Error(
      `corpus directory ${dir} does not exist or is not a directory (expected train_100M/ with the six ` +
        "BabyLM .train files: deno task data --out data/)",
    );
  }
  const files: SourceFile[] = [];
  for await (const e of Deno.readDir(dir)) {
    const m = /^(.+)\.(train|txt)$/.exec(e.name);
    if (e.isFile && m) files.push({ name: m[1], path: `${dir}/${e.name}` });
  }
  if (files.length === 0) {
    for (const sub of ["train_100M", "train_10M"]) {
      if (await isDir(`${dir}/${sub}`)) return findCorpusFiles(`${dir}/${sub}`);
    }
    throw new Error(
      `corpus directory ${dir} has no .train or .txt files (and no train_100M/ or train_10M/ folder)`,
    );
  }
  const names = new Set<string>();
  for (const f of files) {
    if (names.has(f.name)) {
      throw new Error(`corpus directory ${dir} has both ${f.name}.train and ${f.name}.txt`);
    }
    names.add(f.name);
  }
  return files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The text of a file as a stream of decoded pieces (UTF-8; a leading byte-order mark is dropped). */
export async function* fileText(path: string): AsyncGenerator<string> {
  const file = await Deno.open(path, { read: true });
  // TextDecoderStream closes the file when the stream ends.
  yield* file.readable.pipeThrough(new TextDecoderStream());
}

/** Options of {@link readCorpusDir}. */
export interface ReadCorpusOptions extends Omit<TokenizeOptions, "onProgress"> {
  /** Called after every piece: source name, bytes read of it, its size. */
  onProgress?: (source: string, bytesRead: number, bytesTotal: number) => void;
}

/** Tokenize every source file of a corpus directory, file by file. */
export async function readCorpusDir(
  dir: string,
  encode: Encode,
  options: ReadCorpusOptions = {},
): Promise<TokenizedSource[]> {
  const files = await findCorpusFiles(dir);
  const out: TokenizedSource[] = [];
  for (const f of files) {
    const size = (await Deno.stat(f.path)).size;
    if (size === 0) throw new Error(`corpus source ${f.path} is empty`);
    out.push(
      await tokenizeSource(f.name, fileText(f.path), encode, {
        ...options,
        // Characters approximate bytes closely enough for a progress bar.
        onProgress: (chars) => options.onProgress?.(f.name, Math.min(chars, size), size),
      }).catch((e) => {
        throw new Error(`${f.path}: ${(e as Error).message}`);
      }),
    );
  }
  return out;
}
