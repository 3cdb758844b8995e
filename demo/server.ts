/**
 * `deno task demo`: the browser demo's server. Bundles the page script and the worker script with
 * `deno bundle` (offline: local files and node_modules only) into a temporary folder, then serves on
 * 127.0.0.1:
 *
 * - the page: `/` (index.html), `/style.css`, `/app.js`, `/worker.js`; nothing else of the repository;
 * - read-only, the runs under `--runs`: `GET /api/runs` (summaries) and
 *   `GET /api/runs/<name>/<file>` for `config.json`, `metrics.jsonl`, `interactions/round_N.jsonl`,
 *   `interactions/round_N.rewards.jsonl` and `eval/learning_curve.json`.
 *
 * Paths that try to leave the runs folder (`..`, `%2e%2e`, absolute paths, symlinks out) get 400 or 404;
 * the run list reads through the same rule, and only regular files. A request whose `Host` header names
 * anything but the bound address (see {@link allowedHosts}) gets 421, so a web page that rebinds its own
 * domain name to 127.0.0.1 cannot read the runs.
 * @module
 */
import { parseArgs } from "node:util";
import { helpText, numberOption, runMain, UsageError } from "../cli/common.ts";
import { listRuns, resolveRunFile, RunPathError, safeSegments } from "./runs.ts";

/** The demo folder (where index.html and the entry points live). */
const DEMO_DIR = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
/** The repository root: `deno bundle` runs there so deno.json and node_modules resolve. */
const REPO_DIR = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Served page files: URL path -> [file name in the assets folder, content type]. */
const PAGE_FILES: Record<string, [string, string]> = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/index.html": ["index.html", "text/html; charset=utf-8"],
  "/style.css": ["style.css", "text/css; charset=utf-8"],
  "/app.js": ["app.js", "text/javascript; charset=utf-8"],
  "/worker.js": ["worker.js", "text/javascript; charset=utf-8"],
};

const RUN_FILE_TYPES: Record<string, string> = {
  ".json": "application/json; charset=utf-8",
  ".jsonl": "application/x-ndjson; charset=utf-8",
};

/**
 * The page may talk to its own origin and, for the teacher, to any HTTP server the user names; no
 * inline script, no plugins, no framing.
 */
const CSP =
  "default-src 'self'; script-src 'self'; worker-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

const COMMON_HEADERS = {
  "x-content-type-options": "nosniff",
  "cache-control": "no-store",
  "referrer-policy": "no-referrer",
  "content-security-policy": CSP,
};

/** Where the handler finds things. */
export interface DemoServerOptions {
  /** Folder with index.html, style.css, app.js and worker.js (see {@link buildAssets}). */
  assetsDir: string;
  /** Folder whose subfolders are runs. */
  runsDir: string;
  /**
   * The `Host` header values answered (lower case, see {@link allowedHosts}); every other gets 421. May be
   * filled once the server listens, since the port of `port: 0` is known only then.
   */
  hosts: readonly string[];
}

/** Addresses that bind every interface: the server is then reachable by each interface's address. */
const WILDCARD_HOSTS = new Set(["0.0.0.0", "::", "[::]"]);

/** Whether `host` (a --host value) is a loopback address, so only this machine can connect. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * The `Host` header values a server bound to `bindHost`:`port` answers: `localhost`, `127.0.0.1` and
 * `[::1]`, the bound address itself, and for a wildcard bind (`0.0.0.0`, `::`) every address in
 * `interfaces` (this machine's, from `Deno.networkInterfaces()`), each with the port (also without it
 * on port 80, which browsers leave out).
 */
export function allowedHosts(bindHost: string, port: number, interfaces: string[] = []): string[] {
  const bracket = (h: string) => h.includes(":") && !h.startsWith("[") ? `[${h}]` : h;
  const names = new Set(["localhost", "127.0.0.1", "[::1]", bracket(bindHost.toLowerCase())]);
  if (WILDCARD_HOSTS.has(bindHost)) { for (const a of interfaces) names.add(bracket(a.toLowerCase())); }
  const out = [...names].map((n) => `${n}:${port}`);
  return port === 80 ? [...out, ...names] : out;
}

function text(status: number, body: string): Response {
  return new Response(body + "\n", {
    status,
    headers: { ...COMMON_HEADERS, "content-type": "text/plain; charset=utf-8" },
  });
}

async function file(path: string, type: string, method: string): Promise<Response> {
  const f = await Deno.open(path, { read: true });
  const size = (await f.stat()).size;
  const headers = { ...COMMON_HEADERS, "content-type": type, "content-length": String(size) };
  if (method === "HEAD") {
    f.close();
    return new Response(null, { headers });
  }
  return new Response(f.readable, { headers });
}

/** The request handler: page files, the run list and whitelisted run files; GET and HEAD only. */
export function demoHandler(opts: DemoServerOptions): (req: Request) => Promise<Response> {
  return async (req: Request): Promise<Response> => {
    const host = req.headers.get("host")?.toLowerCase();
    if (host === undefined) return text(400, "no Host header");
    if (!opts.hosts.includes(host)) {
      // Not the list of allowed names: a rebinding page reads this answer, and it would learn them.
      return text(421, `Host ${JSON.stringify(host)} is not an address of this server`);
    }
    if (req.method !== "GET" && req.method !== "HEAD") return text(405, `method ${req.method} not allowed`);
    // Work on the raw path: split before decoding so an encoded `/` or `..` cannot form new segments.
    const rawPath = new URL(req.url).pathname;
    const page = PAGE_FILES[rawPath];
    if (page) {
      try {
        return await file(`${opts.assetsDir}/${page[0]}`, page[1], req.method);
      } catch {
        return text(404, `${rawPath} is not built`);
      }
    }
    if (rawPath === "/api/runs" || rawPath === "/api/runs/") {
      const runs = await listRuns(opts.runsDir);
      return new Response(JSON.stringify({ runs }), {
        headers: { ...COMMON_HEADERS, "content-type": "application/json; charset=utf-8" },
      });
    }
    if (rawPath.startsWith("/api/runs/")) {
      try {
        const [name, ...rest] = safeSegments(rawPath.slice("/api/runs/".length).split("/"));
        if (rest.length === 0) {
          throw new RunPathError("no directory listings; ask for a file of the run", 404);
        }
        const real = await resolveRunFile(opts.runsDir, name, rest);
        const ext = real.slice(real.lastIndexOf("."));
        return await file(real, RUN_FILE_TYPES[ext] ?? "application/octet-stream", req.method);
      } catch (e) {
        if (e instanceof RunPathError) return text(e.status, e.message);
        return text(404, "not found");
      }
    }
    return text(404, `${rawPath} not found`);
  };
}

/** Files `deno bundle` turns into the page's scripts: output name -> entry point. */
const ENTRIES: Record<string, string> = { "app.js": "app.ts", "worker.js": "worker.ts" };

/**
 * Build the page into `outDir`: copy index.html and style.css, bundle app.ts and worker.ts (ES modules
 * for the browser, every import inlined). Throws with deno bundle's output when a bundle fails.
 */
export async function buildAssets(outDir: string, { minify = false } = {}): Promise<void> {
  await Deno.mkdir(outDir, { recursive: true });
  for (const f of ["index.html", "style.css"]) await Deno.copyFile(`${DEMO_DIR}/${f}`, `${outDir}/${f}`);
  // Both bundles at once: each is a separate deno process.
  await Promise.all(
    Object.entries(ENTRIES).map(async ([out, entry]) => {
      const args = ["bundle", "--platform", "browser", "--format", "esm", "-o", `${outDir}/${out}`];
      if (minify) args.push("--minify");
      args.push(`${DEMO_DIR}/${entry}`);
      const r = await new Deno.Command(Deno.execPath(), {
        args,
        cwd: REPO_DIR,
        stdout: "piped",
        stderr: "piped",
      })
        .output();
      if (!r.success) {
        const log = new TextDecoder().decode(r.stderr) + new TextDecoder().decode(r.stdout);
        throw new Error(`deno bundle of demo/${entry} failed (exit ${r.code}):\n${log}`);
      }
    }),
  );
}

const SPEC = {
  port: { type: "string", help: "port to listen on (0: any free port)", default: "8787" },
  host: {
    type: "string",
    help: "address to bind; keep 127.0.0.1 unless you mean to share it",
    default: "127.0.0.1",
  },
  runs: {
    type: "string",
    help: "folder of run directories shown in inspect mode (read-only)",
    default: "runs",
  },
  minify: { type: "boolean", help: "minify the bundled scripts" },
} as const;

/** Entry point: build, serve, print the URL; stops on SIGINT/SIGTERM and removes the build. */
export async function main(args: string[]): Promise<void> {
  const summary =
    "Serve the browser demo: train a tiny student live on WebGPU, or inspect the runs in --runs.";
  let opts: Record<string, string | boolean | undefined>;
  try {
    opts = parseArgs({
      args,
      options: {
        help: { type: "boolean", short: "h" },
        ...Object.fromEntries(Object.entries(SPEC).map(([k, v]) => [k, { type: v.type }])),
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    throw new UsageError(`demo: ${(e as Error).message}\nRun with --help for the options.`);
  }
  if (opts.help) {
    console.log(helpText("demo", summary, SPEC));
    return;
  }
  for (const [k, v] of Object.entries(SPEC)) if ("default" in v) opts[k] ??= v.default;
  const port = numberOption(opts.port, "port", { integer: true, min: 0, max: 65535 });
  const host = String(opts.host);
  const runsDir = String(opts.runs);
  if (await Deno.stat(runsDir).then((s) => !s.isDirectory, () => false)) {
    throw new UsageError(`--runs ${runsDir} is not a folder`);
  }
  const assetsDir = await Deno.makeTempDir({ prefix: "babylm-demo-" });
  const t0 = performance.now();
  console.error("bundling the page and the worker ...");
  await buildAssets(assetsDir, { minify: Boolean(opts.minify) });
  console.error(`bundled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  await serveDemo({ assetsDir, runsDir, host, port });
  await Deno.remove(assetsDir, { recursive: true }).catch(() => {});
}

/** How long a stop signal waits for responses in flight. */
const STOP_GRACE_MS = 2000;

/** What {@link serveDemo} serves, and where. */
export interface ServeOptions {
  /** Folder with the built page (see {@link buildAssets}). */
  assetsDir: string;
  /** Folder whose subfolders are runs. */
  runsDir: string;
  /** Address to bind. */
  host: string;
  /** Port to listen on; 0 for any free port. */
  port: number;
}

/**
 * Serve the page and the runs until SIGINT or SIGTERM: warns on stderr when `host` lets other machines
 * connect, prints the URL, answers only the Hosts of {@link allowedHosts}. Resolves once stopped;
 * responses still in flight then get {@link STOP_GRACE_MS}.
 */
export async function serveDemo({ assetsDir, runsDir, host, port }: ServeOptions): Promise<void> {
  if (!isLoopbackHost(host)) {
    console.error(
      `warning: --host ${host} listens beyond this machine: anyone who can reach it on the network can ` +
        `read the runs in ${runsDir} (configs, metrics, every interaction)`,
    );
  }
  const ac = new AbortController();
  const hosts: string[] = [];
  const server = Deno.serve({
    port,
    hostname: host,
    signal: ac.signal,
    onListen: ({ hostname, port }) => {
      const interfaces = WILDCARD_HOSTS.has(host) ? Deno.networkInterfaces().map((i) => i.address) : [];
      hosts.push(...allowedHosts(host, port, interfaces));
      const shown = hostname.includes(":") ? `[${hostname}]` : hostname;
      console.log(`demo at http://${shown}:${port}/  (runs from ${runsDir}; Ctrl-C stops)`);
    },
  }, demoHandler({ assetsDir, runsDir, hosts }));
  let graceOver: () => void = () => {};
  const grace = new Promise<void>((resolve) => graceOver = resolve);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stop = () => {
    ac.abort();
    // A response streaming to a stalled client would hold the graceful shutdown forever.
    timer ??= setTimeout(graceOver, STOP_GRACE_MS);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await Promise.race([server.finished, grace]);
  clearTimeout(timer);
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
}

if (import.meta.main) {
  await runMain(() => main(Deno.args));
  // Requests cut off by the grace period may leave reads pending, which would keep the process alive.
  Deno.exit(0);
}
