/**
 * Reading a corpus directory from disk (Deno only): the BabyLM corpus as distributed (`train_100M/` or
 * `train_10M/` with six `.train` files: bnc_spoken, childes, gutenberg, open_subtitles, simple_wiki,
 * switchboard) or any folder of `.train`/`.txt` files, each file a source named after it. Symlinked files
 * are followed (users link the BabyLM folders). Files are streamed and decoded as strict UTF-8, so no
 * whole 200 MB file is held as one string and a binary file is refused rather than trained on.
 * @module
 */
import {
  type Encode,
  type TokenizedSource,
  type TokenizeOptions,
  tokenizeSource,
} from "../interaction/corpus.ts";

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
  /** The file a symlink at `path` resolves to. */
  target?: string;
}

/** Text extensions read from a folder. */
export const TEXT_EXTENSIONS = [".txt", ".train"];

/**
 * The `.train` and `.txt` files directly in `dir` (unsorted), symlinks followed to their targets; a
 * link to a folder is skipped like a folder. Throws naming a link that leads nowhere, which its user
 * meant as a source.
 */
export async function textFilesIn(dir: string): Promise<SourceFile[]> {
  const files: SourceFile[] = [];
  for await (const e of Deno.readDir(dir)) {
    const ext = TEXT_EXTENSIONS.find((x) => e.name.endsWith(x));
    if (!ext || e.name.length === ext.length) continue;
    const path = `${dir.replace(/\/+$/, "")}/${e.name}`;
    const file: SourceFile = { name: e.name.slice(0, -ext.length), path };
    if (e.isSymlink) {
      let info: Deno.FileInfo;
      try {
        info = await Deno.stat(path);
        file.target = await Deno.realPath(path);
      } catch (err) {
        throw new Error(`${path} is a symlink to nothing readable: ${(err as Error).message}`);
      }
      if (!info.isFile) continue;
    } else if (!e.isFile) continue;
    files.push(file);
  }
  return files;
}

/** "d/childes.train, d/gutenberg.train -> /data/babylm/gutenberg.train": which files a read takes. */
export function describeFiles(files: SourceFile[]): string {
  return files.map((f) => f.path + (f.target ? ` -> ${f.target}` : "")).join(", ");
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
  const files = await textFilesIn(dir);
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

/**
 * The text of a file as a stream of decoded pieces (UTF-8; a leading byte-order mark is dropped);
 * `onBytes` hears the size of every chunk read. Throws naming the file and the byte offset of the first
 * invalid UTF-8 sequence: a binary or mis-encoded file would otherwise train on replacement characters.
 */
export async function* fileText(path: string, onBytes?: (n: number) => void): AsyncGenerator<string> {
  const file = await Deno.open(path, { read: true });
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let valid = true;
  // Leaving the loop early (an error here, or the reader stops) cancels the stream, which closes the file.
  for await (const chunk of file.readable) {
    onBytes?.(chunk.length);
    const text = decodeOrUndefined(() => utf8.decode(chunk, { stream: true }));
    if (text === undefined) {
      valid = false;
      break;
    }
    if (text) yield text;
  }
  const tail = valid ? decodeOrUndefined(() => utf8.decode()) : undefined;
  if (tail === undefined) {
    throw new Error(
      `${path} is not valid UTF-8: the first invalid byte sequence is at byte offset ` +
        `${await firstInvalidUtf8(path)} (a binary file, or text in another encoding?)`,
    );
  }
  if (tail) yield tail;
}

function decodeOrUndefined(decode: () => string): string | undefined {
  try {
    return decode();
  } catch {
    return undefined;
  }
}

/**
 * Byte offset of the first invalid UTF-8 sequence in a file (its first byte, or where a truncated one
 * starts), by the WHATWG decoder's rules (no overlongs, surrogates or code points over U+10FFFF); -1 if none.
 */
export async function firstInvalidUtf8(path: string): Promise<number> {
  const file = await Deno.open(path, { read: true });
  // Continuation bytes still needed, their allowed range, the offset of the sequence's first byte.
  let need = 0, lo = 0x80, hi = 0xbf, start = 0, pos = 0;
  for await (const chunk of file.readable) {
    for (let i = 0; i < chunk.length; i++, pos++) {
      const b = chunk[i];
      if (need > 0) {
        // Returning from the loop cancels the stream, which closes the file.
        if (b < lo || b > hi) return start;
        need--;
        lo = 0x80;
        hi = 0xbf;
        continue;
      }
      if (b < 0x80) continue;
      start = pos;
      if (b >= 0xc2 && b <= 0xdf) need = 1;
      else if (b >= 0xe0 && b <= 0xef) {
        [need, lo, hi] = [2, b === 0xe0 ? 0xa0 : 0x80, b === 0xed ? 0x9f : 0xbf];
      } else if (b >= 0xf0 && b <= 0xf4) {
        [need, lo, hi] = [3, b === 0xf0 ? 0x90 : 0x80, b === 0xf4 ? 0x8f : 0xbf];
      } else return pos;
    }
  }
  return need > 0 ? start : -1;
}

/** Options of {@link readCorpusDir}. */
export interface ReadCorpusOptions extends Omit<TokenizeOptions, "onProgress"> {
  /** Called after every piece: source name, bytes read of it, its size. */
  onProgress?: (source: string, bytesRead: number, bytesTotal: number) => void;
  /** Hears which files are read (links shown with their targets). */
  onLog?: (line: string) => void;
}

/** Tokenize every source file of a corpus directory, file by file. */
export async function readCorpusDir(
  dir: string,
  encode: Encode,
  options: ReadCorpusOptions = {},
): Promise<TokenizedSource[]> {
  const files = await findCorpusFiles(dir);
  options.onLog?.(`corpus ${dir}: ${files.length} source file(s): ${describeFiles(files)}`);
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
        const message = (e as Error).message;
        throw message.includes(f.path) ? e : new Error(`${f.path}: ${message}`);
      }),
    );
  }
  return out;
}
