/**
 * `deno task data --out DIR`: download the BabyLM 2025 text corpus (strict track, 100M words, or the
 * 10M strict-small one) from the BabyLM OSF project, unpack it and check that the six `.train` files
 * are there. `--zip FILE` unpacks an archive downloaded by hand (machines without network).
 * @module
 */
import { parseOptions, runMain, UsageError } from "./common.ts";
import { BABYLM_SOURCES, findCorpusFiles } from "./corpus_dir.ts";
import { writeFileAtomic } from "./files.ts";
import { extractEntry, listZip } from "../eval/zip.ts";

/** The BabyLM OSF project (https://osf.io/ryjfm/) holds the 2025 data; these are its training archives. */
export const CORPUS_URLS: Record<string, string> = {
  "100M": "https://osf.io/download/6819fdbfbecda878d4c61566/",
  "10M": "https://osf.io/download/6819fd8d91a6c4b6d4159848/",
};

/** Where users download by hand when this command cannot. */
export const OSF_PROJECT = "https://osf.io/ryjfm/";

/** Download `url` to `path` (a durable atomic write: nothing at `path` until it is whole), with progress on stderr. */
export async function download(url: string, path: string, signal?: AbortSignal): Promise<number> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: "follow", signal });
  } catch (e) {
    throw new UsageError(
      `cannot reach ${url} (${(e as Error).message}). Is this machine offline? Download the archive by ` +
        `hand from ${OSF_PROJECT} (BabyLM 2025 text data, train_100M.zip) and run ` +
        "deno task data --out DIR --zip path/to/train_100M.zip",
    );
  }
  if (!res.ok || !res.body) {
    throw new UsageError(
      `download of ${url} failed: HTTP ${res.status} ${res.statusText}; try --url or --zip`,
    );
  }
  const total = Number(res.headers.get("content-length") ?? 0);
  let done = 0, last = 0;
  const body = res.body;
  async function* counted(): AsyncGenerator<Uint8Array> {
    for await (const chunk of body) {
      done += chunk.length;
      if (performance.now() - last > 2000) {
        last = performance.now();
        const pct = total > 0 ? ` (${((100 * done) / total).toFixed(1)}%)` : "";
        console.error(`downloaded ${(done / 1e6).toFixed(1)} MB${pct}`);
      }
      yield chunk;
    }
  }
  try {
    await writeFileAtomic(path, counted());
  } catch (e) {
    throw new UsageError(`download of ${url} broke off after ${done} bytes: ${(e as Error).message}`);
  }
  return done;
}

/** Hex sha256 of a file. */
async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Unpack with `unzip` when installed, else with the project's own ZIP reader. */
async function unpack(zip: string, out: string): Promise<void> {
  try {
    const r = await new Deno.Command("unzip", { args: ["-q", "-o", zip, "-d", out] }).output();
    if (r.success) return;
    throw new UsageError(`unzip ${zip} failed: ${new TextDecoder().decode(r.stderr).trim()}`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const bytes = await Deno.readFile(zip);
  for (const entry of listZip(bytes, zip)) {
    if (entry.name.endsWith("/") || entry.name.startsWith("__MACOSX/")) continue;
    if (entry.name.split("/").includes("..")) throw new UsageError(`${zip}: unsafe entry name ${entry.name}`);
    const target = `${out}/${entry.name}`;
    await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(target, await extractEntry(bytes, entry, undefined, zip));
  }
}

/** The folder of `.train` files under `out` after unpacking, checked for the six BabyLM sources. */
export async function verifyCorpus(out: string): Promise<string> {
  const files = await findCorpusFiles(out);
  const dir = files[0].path.slice(0, files[0].path.lastIndexOf("/"));
  const names = files.map((f) => f.name);
  const missing = BABYLM_SOURCES.filter((s) => !names.includes(s));
  if (missing.length > 0) {
    throw new UsageError(
      `${dir}: missing ${missing.map((m) => m + ".train").join(", ")} (found ${names.join(", ")})`,
    );
  }
  return dir;
}

async function main(): Promise<void> {
  const opts = parseOptions("data", "Download, unpack and check the BabyLM 2025 text corpus.", {
    out: { type: "string", help: "directory to unpack into", default: "data" },
    size: { type: "string", help: "100M (strict track) or 10M (strict-small)", default: "100M" },
    url: { type: "string", help: "archive URL (default: the BabyLM OSF file for --size)" },
    zip: { type: "string", help: "unpack this local archive instead of downloading" },
    sha256: { type: "string", help: "expected sha256 of the archive (checked when given)" },
  });
  const out = opts.out as string;
  const size = opts.size as string;
  if (!(size in CORPUS_URLS)) throw new UsageError(`--size must be 100M or 10M, got ${size}`);
  await Deno.mkdir(out, { recursive: true });
  let zip = opts.zip as string | undefined;
  if (!zip) {
    const url = (opts.url as string | undefined) ?? CORPUS_URLS[size];
    zip = `${out}/train_${size}.zip`;
    console.error(`downloading ${url} -> ${zip}`);
    const n = await download(url, zip);
    console.error(`downloaded ${(n / 1e6).toFixed(1)} MB`);
  }
  const digest = await sha256(zip);
  console.error(`sha256 ${digest}  ${zip}`);
  if (opts.sha256 && opts.sha256 !== digest) {
    throw new UsageError(`${zip}: sha256 is ${digest}, expected ${opts.sha256}`);
  }
  await unpack(zip, out);
  const dir = await verifyCorpus(out);
  for (const s of BABYLM_SOURCES) {
    const st = await Deno.stat(`${dir}/${s}.train`);
    console.log(`${dir}/${s}.train  ${(st.size / 1e6).toFixed(1)} MB`);
  }
  console.log(`corpus ready: --corpus ${dir}`);
}

if (import.meta.main) await runMain(main);
