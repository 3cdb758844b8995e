/**
 * The demo server without a browser: the page files and nothing else of the repository, the run list,
 * the whitelisted run files with their content types, and refusal of every path that tries to leave the
 * runs folder (raw `..`, percent-encoded dots and slashes, absolute paths, symlinks pointing out).
 * Also the word diff the page draws, against a brute-force longest common subsequence.
 */
import assert, { deepEqual as assertEquals } from "node:assert/strict";
import { buildAssets, demoHandler } from "../demo/server.ts";
import { splitWords, wordDiff } from "../demo/diff.ts";
import { niceTicks, tickLabels } from "../demo/plot.ts";
import { rng } from "./util.ts";

const SECRET = "SECRET-OUTSIDE-THE-RUNS-FOLDER";

/** A runs folder with one real run, a symlink escaping it, and a secret file next to it. */
async function fixture(): Promise<{ base: string; runs: string; assets: string }> {
  const base = await Deno.makeTempDir({ prefix: "demo-server-test-" });
  const runs = `${base}/runs`, run = `${runs}/r1`, assets = `${base}/assets`;
  await Deno.mkdir(`${run}/interactions`, { recursive: true });
  await Deno.mkdir(`${run}/state`, { recursive: true });
  await Deno.mkdir(`${base}/outside`, { recursive: true });
  await Deno.mkdir(assets);
  await Deno.writeTextFile(`${base}/secret.txt`, SECRET);
  await Deno.writeTextFile(`${base}/outside/config.json`, JSON.stringify({ note: SECRET }));
  await Deno.writeTextFile(
    `${run}/config.json`,
    JSON.stringify({
      preset: "tiny",
      numRounds: 3,
      architecture: { nLayer: 1, nHead: 2, nEmbd: 32 },
      teacher: { kind: "corpus" },
    }),
  );
  const metrics = [1, 2, 3].map((step) =>
    JSON.stringify({ phase: "sft", round: 0, epoch: 0, step, lmLoss: 5 - step })
  );
  await Deno.writeTextFile(`${run}/metrics.jsonl`, metrics.join("\n") + "\n");
  await Deno.writeTextFile(
    `${run}/interactions/round_0.jsonl`,
    JSON.stringify({ round: 0, index: 0, context: "a", student: "b", teacher: "c" }) + "\n",
  );
  await Deno.writeTextFile(`${run}/state/state.json`, JSON.stringify({ round: 1, done: false }));
  // Escapes: a round file and a whole run that are symlinks to the outside.
  await Deno.symlink(`${base}/secret.txt`, `${run}/interactions/round_1.jsonl`);
  await Deno.symlink(`${base}/outside`, `${runs}/evil`);
  await Deno.copyFile(new URL("../demo/index.html", import.meta.url), `${assets}/index.html`);
  return { base, runs, assets };
}

/** Send a raw HTTP/1.1 request line (fetch would normalise `..` before sending). */
async function rawGet(port: number, target: string): Promise<{ status: number; head: string; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`),
  );
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  conn.close();
  const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  const [head, ...rest] = text.split("\r\n\r\n");
  return { status: Number(head.split(" ")[1]), head: head.toLowerCase(), body: rest.join("\r\n\r\n") };
}

async function withServer(fn: (port: number, runs: string) => Promise<void>): Promise<void> {
  const { base, runs, assets } = await fixture();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    demoHandler({ assetsDir: assets, runsDir: runs }),
  );
  try {
    await fn(server.addr.port, runs);
  } finally {
    await server.shutdown();
    await Deno.remove(base, { recursive: true });
  }
}

Deno.test("demo server: page files, run list, whitelisted run files with content types", async () => {
  await withServer(async (port) => {
    const url = (p: string) => `http://127.0.0.1:${port}${p}`;
    const page = await fetch(url("/"));
    assertEquals(page.status, 200);
    assertEquals(page.headers.get("content-type"), "text/html; charset=utf-8");
    assert(page.headers.get("content-security-policy")?.includes("script-src 'self'"));
    assert((await page.text()).includes('<script type="module" src="app.js">'));
    // Not built in this fixture: a clear 404, not a crash.
    const app = await fetch(url("/app.js"));
    assertEquals(app.status, 404);
    await app.body?.cancel();

    const list = await (await fetch(url("/api/runs"))).json() as { runs: Record<string, unknown>[] };
    console.log("  runs listed:", JSON.stringify(list.runs));
    assertEquals(
      list.runs.map((r) => r.name),
      ["r1"],
      "the symlinked run pointing outside must not be listed",
    );
    const r1 = list.runs[0];
    assertEquals(r1.preset, "tiny");
    assertEquals(r1.numRounds, 3);
    assertEquals(r1.metricsLines, 3);
    assertEquals(
      r1.interactionRounds,
      [0],
      "round_1.jsonl is a symlink out of the folder and must not count",
    );
    assertEquals(r1.roundsDone, 1, "from state/state.json");
    assertEquals(r1.model, "1 layer x 32 wide, 2 heads");

    const types: Array<[string, string]> = [
      ["/api/runs/r1/config.json", "application/json; charset=utf-8"],
      ["/api/runs/r1/metrics.jsonl", "application/x-ndjson; charset=utf-8"],
      ["/api/runs/r1/interactions/round_0.jsonl", "application/x-ndjson; charset=utf-8"],
    ];
    for (const [p, type] of types) {
      const res = await fetch(url(p));
      assertEquals(res.status, 200, p);
      assertEquals(res.headers.get("content-type"), type, p);
      assertEquals(res.headers.get("x-content-type-options"), "nosniff");
      const body = await res.text();
      assert(body.length > 0 && !body.includes(SECRET), p);
    }
    const metrics = await (await fetch(url("/api/runs/r1/metrics.jsonl"))).text();
    assertEquals(metrics.trim().split("\n").map((l) => JSON.parse(l).lmLoss), [4, 3, 2]);

    const post = await fetch(url("/api/runs"), { method: "POST", body: "x" });
    assertEquals(post.status, 405);
    await post.body?.cancel();
  });
});

Deno.test("demo server: refuses traversal, encoded dots and slashes, absolute paths, symlink escapes, listings", async () => {
  await withServer(async (port) => {
    const refused = [
      "/api/runs/../../secret.txt",
      "/api/runs/r1/../../secret.txt",
      "/api/runs/r1/../../../secret.txt",
      "/api/runs/%2e%2e/secret.txt",
      "/api/runs/%2E%2E/%2e%2e/secret.txt",
      "/api/runs/r1/%2e%2e/%2e%2e/secret.txt",
      "/api/runs/r1/..%2f..%2fsecret.txt",
      "/api/runs/r1/..%5c..%5csecret.txt",
      "/api/runs/%2e%2e%2f%2e%2e%2fsecret.txt",
      "/api/runs/%2fetc%2fpasswd",
      "/api/runs//etc/passwd",
      "/api/runs/r1//etc/passwd",
      "/api/runs/r1/%00config.json",
      "/api/runs/r1/interactions/round_1.jsonl", // symlink to ../../secret.txt
      "/api/runs/evil/config.json", // run folder symlinked outside
      "/api/runs/r1/state/state.json", // exists, but not a served file
      "/api/runs/r1/", // no listings
      "/api/runs/r1",
      "/api/runs/r1/interactions/",
      "/api/runs/.hidden/config.json",
      "/../deno.json",
      "/%2e%2e/deno.json",
      "/demo/server.ts",
      "/deno.json",
      "/etc/passwd",
    ];
    for (const target of refused) {
      const r = await rawGet(port, target);
      console.log(`  ${target.padEnd(46)} -> ${r.status}`);
      assert(r.status === 400 || r.status === 404, `${target}: expected 400 or 404, got ${r.status}`);
      assert(!r.body.includes(SECRET) && !r.body.includes("root:"), `${target}: leaked content`);
    }
  });
});

/** LCS length by trying every subsequence of the shorter list (tiny inputs only). */
function bruteLcs(a: string[], b: string[]): number {
  const [s, l] = a.length <= b.length ? [a, b] : [b, a];
  let best = 0;
  for (let mask = 0; mask < 1 << s.length; mask++) {
    const sub = s.filter((_, i) => mask & (1 << i));
    let j = 0;
    for (const w of l) if (j < sub.length && w === sub[j]) j++;
    if (j === sub.length) best = Math.max(best, sub.length);
  }
  return best;
}

Deno.test("demo diff: word LCS equals brute force; pieces rebuild the texts; marked words are common", () => {
  const r = rng(7);
  const vocab = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"];
  for (let trial = 0; trial < 300; trial++) {
    const words = (n: number) => Array.from({ length: n }, () => vocab[Math.floor(r() * vocab.length)]);
    const a = words(Math.floor(r() * 9)), b = words(Math.floor(r() * 9));
    const sa = a.join(r() < 0.5 ? " " : "  "), sb = (r() < 0.3 ? " " : "") + b.join(" \n");
    const d = wordDiff(sa, sb);
    assertEquals(d.common, bruteLcs(a, b), `LCS of ${JSON.stringify(sa)} / ${JSON.stringify(sb)}`);
    assertEquals(d.a.map((p) => p.text).join(""), sa);
    assertEquals(d.b.map((p) => p.text).join(""), sb);
    const kept = (ps: typeof d.a) =>
      ps.filter((p) => p.same).flatMap((p) => p.text.split(/\s+/).filter((w) => w));
    assertEquals(kept(d.a), kept(d.b), "the unmarked words of both sides are the same sequence");
    assertEquals(kept(d.a).length, d.common);
  }
  // A hand-checked case: the teacher inserts one word and replaces one.
  const d = wordDiff("the cat sat on mat quickly", "the cat sat on the mat slowly");
  assertEquals(d.a.filter((p) => !p.same).map((p) => p.text), ["quickly"]);
  assertEquals(d.b.filter((p) => !p.same).map((p) => p.text.trim()), ["the", "slowly"]);
  assertEquals(splitWords("  a b\n"), ["  ", "a ", "b\n"]);
});

Deno.test("demo plots: nice ticks are round, inside the range, and labelled distinctly", () => {
  const cases: Array<[number, number]> = [[5.7252, 5.7368], [0, 1], [-11.43, -11.27], [1e-5, 2e-4], [
    3,
    40001,
  ]];
  for (const [lo, hi] of cases) {
    const t = niceTicks(lo, hi, 4);
    const labels = tickLabels(t);
    console.log(`  [${lo}, ${hi}] -> ${labels.join(" ")}`);
    assert(t.length >= 2 && t.length <= 9, `${t.length} ticks`);
    assert(t.every((v) => v >= lo - 1e-12 && v <= hi + 1e-12), "ticks inside the range");
    assertEquals(new Set(labels).size, labels.length, "labels distinct");
  }
});

Deno.test("demo bundles: deno bundle builds the page and the worker; no HTML-parsing sinks in them", async () => {
  const out = await Deno.makeTempDir({ prefix: "demo-bundle-test-" });
  try {
    const t0 = performance.now();
    await buildAssets(out);
    console.log(`  bundled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    for (const f of ["app.js", "worker.js"]) {
      const js = await Deno.readTextFile(`${out}/${f}`);
      assert(js.length > 1000, `${f} is ${js.length} bytes`);
      for (const sink of ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"]) {
        assert(!js.includes(sink), `${f} contains ${sink}`);
      }
    }
    assert(
      (await Deno.readTextFile(`${out}/worker.js`)).includes("runInteraction"),
      "the worker bundles the loop",
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
