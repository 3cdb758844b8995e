/**
 * The demo server without a browser: the page files and nothing else of the repository, the run list,
 * the whitelisted run files with their content types, and refusal of every path that tries to leave the
 * runs folder (raw `..`, percent-encoded dots and slashes, absolute paths, symlinks pointing out).
 * Also the word diff the page draws, against a brute-force longest common subsequence.
 */
import assert, { deepEqual as assertEquals } from "node:assert/strict";
import { allowedHosts, buildAssets, demoHandler, isLoopbackHost } from "../demo/server.ts";
import { splitWords, wordDiff } from "../demo/diff.ts";
import { niceTicks, tickLabels } from "../demo/plot.ts";
import { uniforms } from "../model/random.ts";

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
  await Deno.writeTextFile(
    `${run}/interactions/round_0.rewards.jsonl`,
    JSON.stringify({ round: 0, index: 0, chosen: -1, rejected: -2, margin: 1, epoch: 0, batch: 0, step: 3 }) +
      "\n",
  );
  await Deno.writeTextFile(`${run}/state/state.json`, JSON.stringify({ round: 1, done: false }));
  // Escapes: a round file and a whole run that are symlinks to the outside.
  await Deno.symlink(`${base}/secret.txt`, `${run}/interactions/round_1.jsonl`);
  await Deno.symlink(`${base}/outside`, `${runs}/evil`);
  await Deno.copyFile(new URL("../demo/index.html", import.meta.url), `${assets}/index.html`);
  return { base, runs, assets };
}

/**
 * Send a raw HTTP/1.1 request line (fetch would normalise `..` before sending, and sets its own Host);
 * `host` null sends no Host header.
 */
async function rawGet(
  port: number,
  target: string,
  host: string | null = `127.0.0.1:${port}`,
): Promise<{ status: number; head: string; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const hostLine = host === null ? "" : `Host: ${host}\r\n`;
  await conn.write(
    new TextEncoder().encode(`GET ${target} HTTP/1.1\r\n${hostLine}Connection: close\r\n\r\n`),
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

async function withServer(
  fn: (port: number, runs: string, base: string) => Promise<void>,
): Promise<void> {
  const { base, runs, assets } = await fixture();
  const hosts: string[] = [];
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    demoHandler({ assetsDir: assets, runsDir: runs, hosts }),
  );
  hosts.push(...allowedHosts("127.0.0.1", server.addr.port));
  try {
    await fn(server.addr.port, runs, base);
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
    assertEquals(r1.rewardRounds, [0]);
    assertEquals(r1.roundsDone, 1, "from state/state.json");
    assertEquals(r1.model, "1 layer x 32 wide, 2 heads");

    const types: Array<[string, string]> = [
      ["/api/runs/r1/config.json", "application/json; charset=utf-8"],
      ["/api/runs/r1/metrics.jsonl", "application/x-ndjson; charset=utf-8"],
      ["/api/runs/r1/interactions/round_0.jsonl", "application/x-ndjson; charset=utf-8"],
      ["/api/runs/r1/interactions/round_0.rewards.jsonl", "application/x-ndjson; charset=utf-8"],
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

Deno.test("demo server: the run list reads through the same no-link-out rule as file requests", async () => {
  await withServer(async (port, runs, base) => {
    // Outside the runs folder: a text file like /etc/passwd, a JSON config, a state, metrics, rounds.
    const out = `${base}/outside-run`;
    await Deno.mkdir(`${out}/interactions`, { recursive: true });
    await Deno.writeTextFile(`${base}/passwd`, `root:x:0:0:${SECRET}:/root:/bin/sh\n`);
    await Deno.writeTextFile(`${out}/config.json`, JSON.stringify({ preset: SECRET, numRounds: 9 }));
    await Deno.writeTextFile(`${out}/state.json`, JSON.stringify({ round: 7, done: false }));
    await Deno.writeTextFile(`${out}/metrics.jsonl`, "{}\n".repeat(5));
    for (let r = 0; r < 5; r++) await Deno.writeTextFile(`${out}/interactions/round_${r}.jsonl`, "{}\n");
    const future = new Date("2031-01-01T00:00:00Z");
    await Deno.utime(`${out}/metrics.jsonl`, future, future);
    const run = async (name: string, config?: object) => {
      await Deno.mkdir(`${runs}/${name}`);
      if (config) await Deno.writeTextFile(`${runs}/${name}/config.json`, JSON.stringify(config));
      await Deno.writeTextFile(`${runs}/${name}/metrics.jsonl`, "{}\n");
    };
    // state/, metrics.jsonl and interactions/ linked out.
    await run("linked-parts", { preset: "mine" });
    await Deno.remove(`${runs}/linked-parts/metrics.jsonl`);
    await Deno.symlink(`${out}/metrics.jsonl`, `${runs}/linked-parts/metrics.jsonl`);
    await Deno.symlink(out, `${runs}/linked-parts/state`);
    await Deno.symlink(`${out}/interactions`, `${runs}/linked-parts/interactions`);
    // config.json linked to a text file and to a JSON file outside.
    await run("passwd");
    await Deno.symlink(`${base}/passwd`, `${runs}/passwd/config.json`);
    await run("outside-json");
    await Deno.symlink(`${out}/config.json`, `${runs}/outside-json/config.json`);
    // Links that stay inside the folder are followed, as file requests follow them.
    await run("inside-links");
    await Deno.symlink(`${runs}/r1/config.json`, `${runs}/inside-links/config.json`);
    await Deno.mkdir(`${runs}/inside-links/interactions`);
    await Deno.symlink(
      `../../r1/interactions/round_0.jsonl`,
      `${runs}/inside-links/interactions/round_0.jsonl`,
    );
    // A config.json over the size limit (sparse: no disk used) is not read.
    await run("huge");
    await Deno.writeTextFile(`${runs}/huge/config.json`, "");
    await Deno.truncate(`${runs}/huge/config.json`, 2 << 20);

    const res = await fetch(`http://127.0.0.1:${port}/api/runs`);
    const listText = await res.text();
    console.log(`  runs listed: ${listText}`);
    assert(!listText.includes(SECRET) && !listText.includes("root:"), "content of a linked file leaked");
    const byName = new Map((JSON.parse(listText).runs as Record<string, unknown>[]).map((r) => [r.name, r]));
    const parts = byName.get("linked-parts")!;
    assertEquals(parts.preset, "mine");
    assertEquals(parts.roundsDone, 0, "roundsDone from a linked state/ leaked");
    assertEquals(parts.metricsLines, 0, "line count of a linked metrics.jsonl leaked");
    assertEquals(parts.interactionRounds, [], "rounds of a linked interactions/ leaked");
    assert(!String(parts.updated).startsWith("2031"), "mtime of a linked metrics.jsonl leaked");
    for (const name of ["passwd", "outside-json"]) {
      const r = byName.get(name)!;
      assertEquals([r.preset, r.numRounds, r.error], [undefined, undefined, undefined], name);
    }
    const inside = byName.get("inside-links")!;
    assertEquals([inside.preset, inside.interactionRounds], ["tiny", [0]]);
    assertEquals(byName.get("huge")!.error, "config.json is over 1048576 bytes; not read");
    // The same answers as the file requests give.
    assertEquals((await rawGet(port, "/api/runs/linked-parts/metrics.jsonl")).status, 404);
    assertEquals((await rawGet(port, "/api/runs/passwd/config.json")).status, 404);
    assertEquals((await rawGet(port, "/api/runs/inside-links/config.json")).status, 200);
    assertEquals((await rawGet(port, "/api/runs/inside-links/interactions/round_0.jsonl")).status, 200);
  });
});

Deno.test("demo server: answers only Hosts that name the bound address (no DNS rebinding)", async () => {
  await withServer(async (port) => {
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `LocalHost:${port}`]) {
      const r = await rawGet(port, "/api/runs", host);
      assertEquals(r.status, 200, host);
      assert(r.body.includes('"r1"'), host);
    }
    const refused = [
      "evil.example.com",
      `evil.example.com:${port}`,
      `localhost.evil.example.com:${port}`,
      `127.0.0.1:${port + 1}`,
      "127.0.0.1",
      "localhost",
    ];
    for (const host of refused) {
      for (const target of ["/api/runs", "/api/runs/r1/config.json", "/"]) {
        const r = await rawGet(port, target, host);
        assertEquals(r.status, 421, `${host} ${target}`);
        assert(!r.body.includes("r1") && !r.body.includes("tiny"), `${host} ${target}: leaked`);
      }
    }
    const none = await rawGet(port, "/api/runs", null);
    assert(none.status === 400 || none.status === 421, `no Host: ${none.status}`);
  });
  assertEquals(allowedHosts("127.0.0.1", 8787), ["localhost:8787", "127.0.0.1:8787", "[::1]:8787"]);
  assertEquals(allowedHosts("::1", 80), [
    "localhost:80",
    "127.0.0.1:80",
    "[::1]:80",
    "localhost",
    "127.0.0.1",
    "[::1]",
  ]);
  assertEquals(
    allowedHosts("0.0.0.0", 8787, ["10.1.2.3", "fe80::1"]).slice(3),
    ["0.0.0.0:8787", "10.1.2.3:8787", "[fe80::1]:8787"],
    "a wildcard bind answers the machine's interface addresses",
  );
  assertEquals(allowedHosts("192.168.1.5", 8787, ["10.1.2.3"]).slice(3), ["192.168.1.5:8787"]);
  assertEquals(
    ["127.0.0.1", "127.8.0.1", "localhost", "::1", "[::1]", "0.0.0.0", "::", "192.168.1.5"].map(
      isLoopbackHost,
    ),
    [true, true, true, true, true, false, false, false],
  );
});

/** Read `reader` until `re` matches the text so far; throws if the stream ends first. */
async function readUntil(reader: ReadableStreamDefaultReader<string>, re: RegExp): Promise<RegExpExecArray> {
  let seen = "";
  for (;;) {
    const m = re.exec(seen);
    if (m) return m;
    const r = await reader.read();
    if (r.done) throw new Error(`stream ended before ${re}: ${JSON.stringify(seen)}`);
    seen += r.value;
  }
}

Deno.test("demo server process: FIFOs in a run neither hang the list nor SIGTERM; --host 0.0.0.0 warns", async () => {
  const { base, runs, assets } = await fixture();
  const mkfifo = async (path: string) => {
    const r = await new Deno.Command("mkfifo", { args: [path] }).output();
    assert(r.success, `mkfifo ${path}`);
  };
  // A run of FIFOs only, and a run whose state and round file are FIFOs: opened, each would block.
  await Deno.mkdir(`${runs}/fifos`);
  await mkfifo(`${runs}/fifos/config.json`);
  await mkfifo(`${runs}/fifos/metrics.jsonl`);
  await Deno.remove(`${runs}/r1/state/state.json`);
  await mkfifo(`${runs}/r1/state/state.json`);
  await mkfifo(`${runs}/r1/interactions/round_2.jsonl`);
  // serveDemo is what `deno task demo` runs once the page is bundled (bundling is tested apart).
  const script = `import { serveDemo } from ${
    JSON.stringify(new URL("../demo/server.ts", import.meta.url).href)
  };
    await serveDemo(${JSON.stringify({ assetsDir: assets, runsDir: runs, host: "0.0.0.0", port: 0 })});`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let stopped = false;
  try {
    const port = Number((await readUntil(stdout, /demo at http:\/\/\S+:(\d+)\//))[1]);
    // A guard against hanging (the failure this test is about), not a speed check.
    const res = await fetch(`http://127.0.0.1:${port}/api/runs`, { signal: AbortSignal.timeout(60_000) });
    const list = (await res.json()).runs as Record<string, unknown>[];
    console.log(`  runs listed: ${JSON.stringify(list)}`);
    assertEquals(list.map((r) => r.name), ["r1"], "a run of FIFOs only is not a run");
    assertEquals([list[0].roundsDone, list[0].interactionRounds], [1, [0]], "FIFOs are not read");
    assertEquals((await rawGet(port, "/api/runs/r1/interactions/round_2.jsonl")).status, 404);
    assertEquals((await rawGet(port, "/api/runs", "evil.example.com")).status, 421);
    const lan = Deno.networkInterfaces().find((i) => i.family === "IPv4" && !i.address.startsWith("127."));
    if (lan) {
      assertEquals((await rawGet(port, "/api/runs", `${lan.address}:${port}`)).status, 200, lan.address);
    }
    child.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      child.status,
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), 30_000)),
    ]);
    clearTimeout(timer);
    assert(status !== null, "SIGTERM did not stop the server");
    stopped = true;
    assertEquals(status.code, 0);
    const err = await stderr;
    assert(/warning: --host 0\.0\.0\.0 .*network.*read the runs/.test(err), `no warning in: ${err}`);
  } finally {
    if (!stopped) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited: the assertion that failed says why.
      }
      console.log(`  server stderr: ${await stderr}`);
    }
    await stdout.cancel();
    await stderr.catch(() => {});
    await Deno.remove(base, { recursive: true });
  }
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
  const r = uniforms(7);
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
