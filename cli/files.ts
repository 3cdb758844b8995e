/**
 * The file-system edge (Deno only): durable atomic writes, Hugging Face GPT-2 directories
 * (`loadCheckpoint`, `saveCheckpoint`), tokenizer files, teacher prompt files and JSON-lines files. The
 * formats themselves are parsed and serialized by browser-safe modules (`model/checkpoint.ts`,
 * `model/tokenizer.ts`, `interaction/prompt.ts`, `model/jsonl.ts`); this module only moves their bytes
 * to and from disk.
 * @module
 */
import {
  type Checkpoint,
  CONFIG_FILE,
  hfConfigJson,
  isTemporaryName,
  parseHfConfig,
  safetensorsFromWeights,
  TOKENIZER_CONFIG_FILE,
  tokenizerConfigFiles,
  WEIGHTS_FILE,
  weightsFromSafetensors,
} from "../model/checkpoint.ts";
import { type GPT2Config, validateConfig } from "../model/config.ts";
import { type JsonLine, parseJsonLines } from "../model/jsonl.ts";
import { type SpecialTokenNames, Tokenizer, TOKENIZER_FILE } from "../model/tokenizer.ts";
import { type PromptTemplate, promptTemplateFromText } from "../interaction/prompt.ts";
import { UsageError } from "./common.ts";

/** `dir` without trailing separators (but "/" stays "/"). */
function trimDir(dir: string): string {
  const t = dir.replace(/[/\\]+$/, "");
  return t === "" ? dir : t;
}

/** The folder holding `path` ("." for a bare name). */
function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash > 0 ? path.slice(0, slash) : slash === 0 ? "/" : ".";
}

/** Flush a directory's entries (a rename inside it) to disk; Windows cannot open directories. */
async function syncDir(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  using d = await Deno.open(dir, { read: true });
  await d.sync();
}

/** Write `data` (bytes, or chunks as they come) to a new file at `path`, flushed to disk before returning. */
async function writeSynced(path: string, data: Uint8Array | AsyncIterable<Uint8Array>): Promise<void> {
  using file = await Deno.open(path, { write: true, createNew: true });
  for await (const chunk of data instanceof Uint8Array ? [data] : data) {
    for (let at = 0; at < chunk.length;) at += await file.write(chunk.subarray(at));
  }
  await file.sync();
}

/**
 * Replace the file at `path` durably: write a temporary sibling, flush it, rename it over `path`, flush
 * the folder. Readers see the old file or the new one, never half of one, and after a crash the new one
 * is either wholly there or not at all. `data` may be a stream of chunks (a download).
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array | AsyncIterable<Uint8Array>,
): Promise<void> {
  const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await writeSynced(tmp, typeof data === "string" ? new TextEncoder().encode(data) : data);
    await Deno.rename(tmp, path);
  } catch (e) {
    // Best-effort cleanup of our own temporary file; the error that matters is `e`.
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await syncDir(parentOf(path));
}

async function readOrExplain(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        `${path}: not found (expected a Hugging Face GPT-2 directory with ${CONFIG_FILE} and ${WEIGHTS_FILE})`,
      );
    }
    throw e;
  }
}

/** Load `config.json` and `model.safetensors` from a Hugging Face GPT-2 directory. */
export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const d = trimDir(dir);
  const configPath = `${d}/${CONFIG_FILE}`, weightsPath = `${d}/${WEIGHTS_FILE}`;
  const config = parseHfConfig(new TextDecoder().decode(await readOrExplain(configPath)), configPath);
  const weights = weightsFromSafetensors(await readOrExplain(weightsPath), config, weightsPath);
  return { config, weights };
}

/** Refuse extra file names that could escape the checkpoint directory or replace its main files. */
function checkExtraName(name: string): void {
  const parts = name.split(/[/\\]/);
  if (
    name === "" || name.startsWith("/") || /^[A-Za-z]:/.test(name) ||
    parts.some((p) => p === "" || p === "..")
  ) {
    throw new Error(`extra file "${name}": expected a relative path inside the checkpoint directory`);
  }
  if (name === CONFIG_FILE || name === WEIGHTS_FILE) {
    throw new Error(`extra file "${name}": ${CONFIG_FILE} and ${WEIGHTS_FILE} are written by saveCheckpoint`);
  }
}

/**
 * Save a Hugging Face GPT-2 directory (`config.json`, `model.safetensors` and `extraFiles`, e.g.
 * `tokenizer.json`; names may contain subfolders) atomically: everything is written and flushed into a
 * temporary sibling directory, which is then renamed to `dir`. An existing `dir` is first renamed aside
 * and removed only after the new one is in place, so a crash leaves either the old checkpoint, or the
 * new one, or (in the instant between the two renames) the old one under `<dir>.old-<id>`; never a
 * half-written directory at `dir`. With a `tokenizer.json` and no `tokenizer_config.json` among the extra
 * files it adds `tokenizer_config.json` and `special_tokens_map.json` with a pad token
 * (`tokenizerConfigFiles`), so transformers can pad batches of the checkpoint (the pipeline's fine-tuning).
 */
export async function saveCheckpoint(
  dir: string,
  config: GPT2Config,
  weights: ReadonlyMap<string, Float32Array>,
  extraFiles: Record<string, string | Uint8Array> = {},
): Promise<void> {
  // Validate and serialize everything before touching the file system.
  validateConfig(config, "saveCheckpoint config");
  for (const name of Object.keys(extraFiles)) checkExtraName(name);
  const files = new Map<string, Uint8Array>([
    [CONFIG_FILE, new TextEncoder().encode(JSON.stringify(hfConfigJson(config), null, 2) + "\n")],
    [WEIGHTS_FILE, safetensorsFromWeights(weights, config)],
  ]);
  for (const [name, content] of Object.entries(extraFiles)) {
    files.set(name, typeof content === "string" ? new TextEncoder().encode(content) : content);
  }
  // transformers pads a batch only with a pad token, which tokenizer.json alone does not name.
  const tokenizer = extraFiles[TOKENIZER_FILE];
  if (tokenizer !== undefined && !(TOKENIZER_CONFIG_FILE in extraFiles)) {
    for (const [name, content] of Object.entries(tokenizerConfigFiles(tokenizer, config))) {
      files.set(name, new TextEncoder().encode(content));
    }
  }

  const target = trimDir(dir);
  let existing: Deno.FileInfo | undefined;
  try {
    existing = await Deno.lstat(target);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (existing && !existing.isDirectory) throw new Error(`${target}: exists and is not a directory`);

  const id = crypto.randomUUID().slice(0, 8);
  const tmp = `${target}.tmp-${id}`;
  const old = `${target}.old-${id}`;
  const parent = parentOf(target);
  await Deno.mkdir(parent, { recursive: true });
  try {
    await Deno.mkdir(tmp);
    const folders = new Set<string>([tmp]);
    for (const [name, content] of files) {
      const sub = name.lastIndexOf("/");
      if (sub > 0) {
        await Deno.mkdir(`${tmp}/${name.slice(0, sub)}`, { recursive: true });
        folders.add(`${tmp}/${name.slice(0, sub)}`);
      }
      await writeSynced(`${tmp}/${name}`, content);
    }
    for (const f of folders) await syncDir(f);
    if (existing) await Deno.rename(target, old);
    try {
      await Deno.rename(tmp, target);
    } catch (e) {
      if (existing) await Deno.rename(old, target);
      throw e;
    }
  } catch (e) {
    // Best-effort cleanup of our own temporary directory; the error that matters is `e`.
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  await syncDir(parent);
  if (existing) await Deno.remove(old, { recursive: true });
}

/** Load `tokenizer.json`: `path` is the file or a directory holding it. Errors name the path. */
export async function loadTokenizer(path: string, names: SpecialTokenNames = {}): Promise<Tokenizer> {
  let file = path;
  try {
    if ((await Deno.stat(path)).isDirectory) file = `${path.replace(/\/+$/, "")}/${TOKENIZER_FILE}`;
  } catch (e) {
    throw new Error(`tokenizer: cannot read ${path}: ${(e as Error).message}`);
  }
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    const what = file === path ? path : `${file} (the directory ${path} has no ${TOKENIZER_FILE})`;
    throw new Error(`tokenizer: cannot read ${what}: ${(e as Error).message}`);
  }
  return Tokenizer.fromJSON(text, file, names);
}

/** Load a teacher prompt template file (messages + sampling); errors name the file. */
export async function loadPromptTemplate(path: string): Promise<PromptTemplate> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`cannot read teacher prompt ${path}: ${(e as Error).message}`);
  }
  return promptTemplateFromText(text, path);
}

/**
 * The records of a JSON-lines file with their line numbers; a file that cannot be read or a line that is
 * not JSON is a usage error naming `path` (and `path:line`).
 */
export async function readJsonLinesFile<T = unknown>(path: string): Promise<JsonLine<T>[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return parseJsonLines<T>(text, path);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * Clear what killed writes left in run folder `dir` (itself, `checkpoints/`, `interactions/`): every
 * temporary is removed (a `.tmp-` folder may be cut short; at 124M a state's is about 1.5 GB), except
 * that a model folder whose replacement was cut between its two renames (`NAME` gone, `NAME.old-<id>`
 * there, the last complete version) is renamed back. Returns a line per action, for the log.
 */
export async function clearKilledWrites(dir: string): Promise<string[]> {
  const done: string[] = [];
  for (const base of [dir, `${dir}/checkpoints`, `${dir}/interactions`].map(trimDir)) {
    const names = new Set<string>();
    try {
      for await (const e of Deno.readDir(base)) names.add(e.name);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue;
      throw e;
    }
    for (const name of [...names].sort()) {
      const target = /^(.*)\.old-[0-9a-f]{8}$/.exec(name)?.[1];
      if (target === undefined || names.has(target)) continue;
      await Deno.rename(`${base}/${name}`, `${base}/${target}`);
      names.delete(name);
      names.add(target);
      done.push(`restored ${base}/${target} from ${name} (a kill cut its replacement short)`);
    }
    for (const name of names) {
      if (!isTemporaryName(name)) continue;
      await Deno.remove(`${base}/${name}`, { recursive: true });
      done.push(`removed ${base}/${name} (left by a killed write)`);
    }
  }
  return done;
}
