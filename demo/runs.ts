/**
 * Read-only access to the run directories under one folder, for the demo server: a summary of every run,
 * and the few files the page may read (`config.json`, `metrics.jsonl`, `interactions/round_N.jsonl`,
 * `interactions/round_N.rewards.jsonl`, `eval/learning_curve.json` as `deno task eval --run` writes it), resolved so that no request can leave the folder (no `..`, no absolute paths, no symlink escapes).
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
  /** Round indices that have `interactions/round_N.rewards.jsonl` (per-pair SimPO rewards), ascending. */
  rewardRounds: number[];
  /** Lines in metrics.jsonl (optimisation steps logged). */
  metricsLines: number;
  /** Last modification of the run's files, ISO 8601. */
  updated?: string;
  /** Why the config could not be read, if it could not. */
  error?: string;
  /** Whether `eval/learning_curve.json` (from `deno task eval --run`) is there to read. */
  hasEvalCurve: boolean;
}

/** A run folder name: letters, digits, `.`, `_`, `-`, not starting with a dot. */
const RUN_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;
/** The files the page may read, relative to a run folder. */
const RUN_FILE =
  /^(config\.json|metrics\.jsonl|interactions\/round_(0|[1-9][0-9]{0,5})(\.rewards)?\.jsonl|eval\/learning_curve\.json)$/;

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
      `${rel} is not served (only config.json, metrics.jsonl, interactions/round_N.jsonl, ` +
        "interactions/round_N.rewards.jsonl, eval/learning_curve.json)",
      404,
    );
  }
  const realRoot = await Deno.realPath(root).catch(() => "");
  const real = realRoot && await regularFileInside(realRoot, `${realRoot}/${name}/${rel}`);
  if (!real) throw new RunPathError(`run ${name} has no ${rel}`, 404);
  return real.path;
}

/**
 * `path`'s real path and status when, after every symlink, it is inside `realRoot` and is a regular file;
 * else undefined. The one rule for what the server may open: requests and the run list alike, so neither
 * reads through a link out of the runs folder nor opens a FIFO or device (which would block).
 */
async function regularFileInside(
  realRoot: string,
  path: string,
): Promise<{ path: string; info: Deno.FileInfo } | undefined> {
  const real = await Deno.realPath(path).catch(() => "");
  if (!real.startsWith(realRoot + "/")) return undefined;
  const info = await Deno.stat(real).catch(() => undefined);
  return info?.isFile ? { path: real, info } : undefined;
}

/** `path`'s real path when, after every symlink, it is a folder inside `realRoot`; else undefined. */
async function dirInside(realRoot: string, path: string): Promise<string | undefined> {
  const real = await Deno.realPath(path).catch(() => "");
  if (!real.startsWith(realRoot + "/")) return undefined;
  return (await Deno.stat(real).catch(() => undefined))?.isDirectory ? real : undefined;
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
    // A symlinked run folder is listed only if it stays inside the root.
    const realDir = await dirInside(realRoot, `${realRoot}/${entry.name}`);
    if (!realDir) continue;
    const summary = await summarize(entry.name, realDir, realRoot);
    if (summary) out.push(summary);
  }
  out.sort((a, b) => (b.updated ?? "").localeCompare(a.updated ?? "") || a.name.localeCompare(b.name));
  return out;
}

/** Largest config.json or state/state.json the run list reads (both are a few kilobytes in a real run). */
export const MAX_SUMMARY_FILE_BYTES = 1 << 20;

/**
 * The text of a regular file found by {@link regularFileInside}, or "too large" over
 * {@link MAX_SUMMARY_FILE_BYTES}. The open handle is checked again, so a file swapped after the first
 * check is still never read past the limit.
 */
async function readSmall(path: string): Promise<string | "too large" | undefined> {
  const f = await Deno.open(path, { read: true }).catch(() => undefined);
  if (!f) return undefined;
  try {
    const info = await f.stat();
    if (!info.isFile) return undefined;
    if (info.size > MAX_SUMMARY_FILE_BYTES) return "too large";
    const buf = new Uint8Array(info.size);
    let n = 0;
    while (n < buf.length) {
      const r = await f.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
    return new TextDecoder().decode(buf.subarray(0, n));
  } catch {
    return undefined;
  } finally {
    f.close();
  }
}

async function summarize(name: string, dir: string, realRoot: string): Promise<RunSummary | undefined> {
  const config = await regularFileInside(realRoot, `${dir}/config.json`);
  const metrics = await regularFileInside(realRoot, `${dir}/metrics.jsonl`);
  if (!config && !metrics) return undefined;
  const s: RunSummary = {
    name,
    roundsDone: 0,
    interactionRounds: [],
    rewardRounds: [],
    metricsLines: 0,
    hasEvalCurve: false,
  };
  let mtime = 0;
  const touch = (d: Date | null | undefined) => {
    if (d && d.getTime() > mtime) mtime = d.getTime();
  };
  const configText = config && await readSmall(config.path);
  if (config && configText !== undefined) touch(config.info.mtime);
  if (configText === "too large") s.error = `config.json is over ${MAX_SUMMARY_FILE_BYTES} bytes; not read`;
  else if (configText !== undefined) {
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
    } catch {
      // Not the parser's message: it quotes the file's first bytes.
      s.error = "config.json is not valid JSON";
    }
  }
  if (metrics) {
    touch(metrics.info.mtime);
    s.metricsLines = await countLines(metrics.path);
  }
  const interactions = await dirInside(realRoot, `${dir}/interactions`);
  if (interactions) {
    for await (const e of Deno.readDir(interactions)) {
      const m = /^round_(0|[1-9][0-9]{0,5})(\.rewards)?\.jsonl$/.exec(e.name);
      if (m && await regularFileInside(realRoot, `${interactions}/${e.name}`)) {
        (m[2] ? s.rewardRounds : s.interactionRounds).push(Number(m[1]));
      }
    }
    s.interactionRounds.sort((a, b) => a - b);
    s.rewardRounds.sort((a, b) => a - b);
  }
  s.roundsDone = s.interactionRounds.length;
  const stateFile = await regularFileInside(realRoot, `${dir}/state/state.json`);
  const state = stateFile && await readSmall(stateFile.path);
  if (state !== undefined && state !== "too large") {
    try {
      const st = JSON.parse(state) as { round?: unknown; done?: unknown };
      if (st.done === true && s.numRounds !== undefined) s.roundsDone = s.numRounds;
      else if (typeof st.round === "number") s.roundsDone = st.round;
    } catch {
      // A state file being replaced right now; the interaction count stands.
    }
  }
  s.hasEvalCurve = (await regularFileInside(realRoot, `${dir}/eval/learning_curve.json`)) !== undefined;
  if (mtime > 0) s.updated = new Date(mtime).toISOString();
  return s;
}

/** Number of non-empty lines, read in chunks (metrics files of long runs are large). */
async function countLines(path: string): Promise<number> {
  const file = await Deno.open(path, { read: true });
  let lines = 0, last = 10;
  try {
    if (!(await file.stat()).isFile) {
      file.close();
      return 0;
    }
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
