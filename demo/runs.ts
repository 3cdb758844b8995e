/**
 * Read-only access to the run directories under one folder, for the demo server: a summary of every run,
 * and the few files the page may read (`config.json`, `metrics.jsonl`, `interactions/round_N.jsonl`),
 * resolved so that no request can leave the folder (no `..`, no absolute paths, no symlink escapes).
 * @module
 */

/** What the run list shows of one run. */
export interface RunSummary {
  name: string;
  preset?: string;
  /** "2 layers x 64 wide, 2 heads" from `architecture`, when the config has one. */
  model?: string;
  teacher?: string;
  numRounds?: number;
  /** Rounds finished: from `state/state.json` when present, else rounds with a complete interaction file. */
  roundsDone: number;
  /** Round indices that have `interactions/round_N.jsonl`, ascending. */
  interactionRounds: number[];
  /** Lines in metrics.jsonl (optimisation steps logged). */
  metricsLines: number;
  /** Last modification of the run's files, ISO 8601. */
  updated?: string;
  /** Why the config could not be read, if it could not. */
  error?: string;
}

/** A run folder name: letters, digits, `.`, `_`, `-`, not starting with a dot. */
const RUN_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;
/** The files the page may read, relative to a run folder. */
const RUN_FILE = /^(config\.json|metrics\.jsonl|interactions\/round_(0|[1-9][0-9]{0,5})\.jsonl)$/;

/** Thrown for a request that names no allowed file; `status` is the HTTP status to answer with. */
export class RunPathError extends Error {
  constructor(message: string, readonly status: 400 | 404) {
    super(message);
    this.name = "RunPathError";
  }
}

/**
 * Decode URL path segments and refuse anything that could walk: empty, `.`, `..`, or containing `/`,
 * `\`, NUL or `:` once decoded (catches `%2e%2e`, `%2f`, `..%5c`, drive letters). Throws 400.
 */
export function safeSegments(rawSegments: string[]): string[] {
  return rawSegments.map((raw) => {
    let s: string;
    try {
      s = decodeURIComponent(raw);
    } catch {
      throw new RunPathError(`bad percent-encoding in path segment ${JSON.stringify(raw)}`, 400);
    }
    if (s === "" || s === "." || s === ".." || /[/\\\0:]/.test(s)) {
      throw new RunPathError(`path segment ${JSON.stringify(raw)} is not allowed`, 400);
    }
    return s;
  });
}

/**
 * The real path of file `segments` (already safe) of run `name` under `root`, or a RunPathError:
 * 400 for a name or file outside the whitelist, 404 when it does not exist or its real path (after
 * symlinks) is not inside the real path of `root`.
 */
export async function resolveRunFile(root: string, name: string, segments: string[]): Promise<string> {
  if (!RUN_NAME.test(name)) throw new RunPathError(`run name ${JSON.stringify(name)} is not allowed`, 400);
  const rel = segments.join("/");
  if (!RUN_FILE.test(rel)) {
    throw new RunPathError(
      `${rel} is not served (only config.json, metrics.jsonl, interactions/round_N.jsonl)`,
      404,
    );
  }
  let realRoot: string, real: string;
  try {
    realRoot = await Deno.realPath(root);
    real = await Deno.realPath(`${realRoot}/${name}/${rel}`);
  } catch {
    throw new RunPathError(`run ${name} has no ${rel}`, 404);
  }
  if (!real.startsWith(realRoot + "/")) throw new RunPathError(`run ${name} has no ${rel}`, 404);
  const info = await Deno.stat(real);
  if (!info.isFile) throw new RunPathError(`run ${name} has no ${rel}`, 404);
  return real;
}

/** Summaries of every run folder directly under `root` (folders with a config.json or metrics.jsonl). */
export async function listRuns(root: string): Promise<RunSummary[]> {
  let realRoot: string;
  try {
    realRoot = await Deno.realPath(root);
  } catch {
    return [];
  }
  const out: RunSummary[] = [];
  for await (const entry of Deno.readDir(realRoot)) {
    if (!RUN_NAME.test(entry.name)) continue;
    const dir = `${realRoot}/${entry.name}`;
    // A symlinked run folder is listed only if it stays inside the root.
    const realDir = await Deno.realPath(dir).catch(() => "");
    if (!realDir.startsWith(realRoot + "/") || !(await isDir(realDir))) continue;
    const summary = await summarize(entry.name, realDir);
    if (summary) out.push(summary);
  }
  out.sort((a, b) => (b.updated ?? "").localeCompare(a.updated ?? "") || a.name.localeCompare(b.name));
  return out;
}

async function isDir(path: string): Promise<boolean> {
  return (await Deno.stat(path).catch(() => undefined))?.isDirectory ?? false;
}

async function readText(path: string): Promise<string | undefined> {
  return await Deno.readTextFile(path).catch(() => undefined);
}

async function summarize(name: string, dir: string): Promise<RunSummary | undefined> {
  const configText = await readText(`${dir}/config.json`);
  const metricsStat = await Deno.stat(`${dir}/metrics.jsonl`).catch(() => undefined);
  if (configText === undefined && !metricsStat) return undefined;
  const s: RunSummary = { name, roundsDone: 0, interactionRounds: [], metricsLines: 0 };
  let mtime = 0;
  const touch = (d: Date | null | undefined) => {
    if (d && d.getTime() > mtime) mtime = d.getTime();
  };
  if (configText !== undefined) {
    touch((await Deno.stat(`${dir}/config.json`)).mtime);
    try {
      const c = JSON.parse(configText) as Record<string, unknown>;
      if (typeof c.preset === "string") s.preset = c.preset;
      if (typeof c.numRounds === "number") s.numRounds = c.numRounds;
      const a = c.architecture as Record<string, unknown> | undefined;
      if (a && typeof a.nLayer === "number" && typeof a.nEmbd === "number") {
        const plural = (n: unknown, w: string) => `${n} ${w}${n === 1 ? "" : "s"}`;
        s.model = `${plural(a.nLayer, "layer")} x ${a.nEmbd} wide, ${plural(a.nHead, "head")}`;
      }
      const t = c.teacher as Record<string, unknown> | undefined;
      if (t && typeof t.kind === "string") {
        s.teacher = t.kind === "openai" && typeof t.model === "string" ? `openai: ${t.model}` : t.kind;
      }
    } catch (e) {
      s.error = `config.json is not valid JSON: ${(e as Error).message}`;
    }
  }
  if (metricsStat) {
    touch(metricsStat.mtime);
    s.metricsLines = await countLines(`${dir}/metrics.jsonl`);
  }
  if (await isDir(`${dir}/interactions`)) {
    for await (const e of Deno.readDir(`${dir}/interactions`)) {
      const m = /^round_(0|[1-9][0-9]{0,5})\.jsonl$/.exec(e.name);
      if (m && e.isFile) s.interactionRounds.push(Number(m[1]));
    }
    s.interactionRounds.sort((a, b) => a - b);
  }
  s.roundsDone = s.interactionRounds.length;
  const state = await readText(`${dir}/state/state.json`);
  if (state !== undefined) {
    try {
      const st = JSON.parse(state) as { round?: unknown; done?: unknown };
      if (st.done === true && s.numRounds !== undefined) s.roundsDone = s.numRounds;
      else if (typeof st.round === "number") s.roundsDone = st.round;
    } catch {
      // A state file being replaced right now; the interaction count stands.
    }
  }
  if (mtime > 0) s.updated = new Date(mtime).toISOString();
  return s;
}

/** Number of non-empty lines, read in chunks (metrics files of long runs are large). */
async function countLines(path: string): Promise<number> {
  const file = await Deno.open(path, { read: true });
  let lines = 0, last = 10;
  try {
    for await (const chunk of file.readable) {
      for (let i = 0; i < chunk.length; i++) {
        if (chunk[i] === 10 && last !== 10) lines++;
        last = chunk[i];
      }
    }
  } catch {
    return lines;
  }
  return last !== 10 ? lines + 1 : lines;
}
