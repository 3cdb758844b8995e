/**
 * The demo in a real browser (Debian's Chromium, WebGPU on SwiftShader, driven by Playwright): the page
 * loads without console errors; inspect mode opens a run written here and shows its interactions, with
 * hostile teacher text displayed as literal text; live training of a very small student completes a
 * round in the worker with pause and resume, and stops on request; an OpenAI-compatible teacher is used
 * when it allows CORS and explained when it does not; a page without WebGPU says so. Screenshots go to
 * tests/out/.
 * Skips with a note when /usr/bin/chromium is absent (`apt-get install -y chromium`).
 */
import assert, { deepEqual as assertEquals } from "node:assert/strict";
import { chromium, type ConsoleMessage, type Page } from "playwright";
import { allowedHosts, buildAssets, demoHandler } from "../demo/server.ts";

const CHROMIUM = "/usr/bin/chromium";
const FLAGS = [
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-vulkan=swiftshader",
  "--enable-unsafe-swiftshader",
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];
const OUT = new URL("./out/", import.meta.url).pathname;
const haveChromium = await Deno.stat(CHROMIUM).then(() => true, () => false);
if (!haveChromium) {
  console.log(`note: ${CHROMIUM} is missing; the demo browser test is skipped (apt-get install -y chromium)`);
}

const HOSTILE = `fine. <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script> end`;

/** A small finished-looking run in the loop's file formats. */
async function writeRun(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/interactions`, { recursive: true });
  const config = {
    preset: "tiny",
    seed: 3,
    numRounds: 1,
    architecture: { nLayer: 1, nHead: 2, nEmbd: 32, nPositions: 32 },
    vocabSize: 300,
    corpus: { kind: "embedded", words: 2000 },
    datapointLength: 16,
    contextLength: 8,
    maxDatapointsPerRound: 3,
    student: { temperature: 1, topP: 0.8, topK: 0, minTokens: 7, maxTokens: 8, batchSize: 64 },
    teacher: { kind: "corpus", urls: [], mode: "chat", model: "" },
    nSftEpochs: 1,
    nPoEpochs: 1,
    batchSize: 8,
    lr: 0.002,
    schedule: "cosine",
    warmupSteps: 10,
    totalSteps: 400,
    simpoBeta: 2,
    simpoGammaRatio: 0.5,
    lmWeight: 0.2,
  };
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  const t = "2026-01-01T00:00:00.000Z";
  const metrics = [
    {
      phase: "sft",
      round: 0,
      epoch: 0,
      step: 1,
      lmLoss: 5.5,
      lr: 2e-4,
      gradNorm: 1,
      wordsSeen: 40,
      tokensPerSec: 90,
      time: t,
    },
    {
      phase: "sft",
      round: 0,
      epoch: 0,
      step: 2,
      lmLoss: 5.1,
      lr: 4e-4,
      gradNorm: 1,
      wordsSeen: 80,
      tokensPerSec: 90,
      time: t,
    },
    {
      phase: "po",
      round: 0,
      epoch: 0,
      step: 3,
      lmLoss: 4.9,
      simpoLoss: 1.2,
      chosenReward: -10,
      rejectedReward: -11,
      margin: 1,
      winRate: 0.625,
      lr: 6e-4,
      gradNorm: 1,
      wordsSeen: 160,
      tokensPerSec: 90,
      time: t,
    },
  ];
  await Deno.writeTextFile(`${dir}/metrics.jsonl`, metrics.map((m) => JSON.stringify(m) + "\n").join(""));
  const rec = (index: number, context: string, student: string, teacher: string) =>
    JSON.stringify({
      round: 0,
      index,
      source: "embedded_childes",
      context,
      student,
      teacher,
      contextTokens: [1, 2],
      studentTokens: [3],
      teacherTokens: [4],
      studentFinish: "length",
    });
  await Deno.writeTextFile(
    `${dir}/interactions/round_0.jsonl`,
    [
      rec(0, "*MOT: look at the", "the cat sat on mat quickly", "the cat sat on the mat slowly"),
      rec(1, "*CHI: where are", "<b>bold</b> ducks", HOSTILE),
      rec(2, "*MOT: what is", "a dog", "a big dog"),
    ].join("\n") + "\n",
  );
}

/** Console errors and page errors seen by a page. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m: ConsoleMessage) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e: Error) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

/** A stand-in OpenAI-compatible teacher; `cors` decides whether browsers may read its answers. */
function fakeTeacher(
  cors: boolean,
  answer: string,
  requests: Array<Record<string, unknown>>,
): Deno.HttpServer<Deno.NetAddr> {
  const h: Record<string, string> = cors
    ? {
      "access-control-allow-origin": "*",
      "access-control-allow-headers": "content-type, authorization",
      "access-control-allow-methods": "GET, POST, OPTIONS",
    }
    : {};
  return Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (req.method === "OPTIONS") return new Response(null, { status: 204, headers: h });
    if (path === "/v1/models") return Response.json({ data: [{ id: "fake" }] }, { headers: h });
    if (path === "/v1/chat/completions") {
      requests.push(await req.json());
      const body = {
        choices: [{ message: { role: "assistant", content: answer }, finish_reason: "length" }],
      };
      return Response.json(body, { headers: h });
    }
    return new Response("not found", { status: 404, headers: h });
  });
}

/** Poll `cond` (the page's CSP forbids Playwright's string-evaluating waitForFunction). */
async function waitUntil(cond: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test({
  name:
    "demo in Chromium: clean load, inspect, live round with pause/resume/stop, OpenAI teacher + CORS, no WebGPU",
  ignore: !haveChromium,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const t0 = performance.now();
    const secs = () => ((performance.now() - t0) / 1000).toFixed(1);
    const base = await Deno.makeTempDir({ prefix: "demo-browser-test-" });
    await Deno.mkdir(OUT, { recursive: true });
    await writeRun(`${base}/runs/test-run`);
    await buildAssets(`${base}/assets`);
    const hosts: string[] = [];
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      demoHandler({ assetsDir: `${base}/assets`, runsDir: `${base}/runs`, hosts }),
    );
    hosts.push(...allowedHosts("127.0.0.1", server.addr.port));
    const url = `http://127.0.0.1:${server.addr.port}/`;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      const errors = watchErrors(page);

      await t.step("the page loads, finds WebGPU in the worker, no console errors", async () => {
        await page.goto(url);
        await page.waitForSelector("#gpu-status.ok, #gpu-status.bad", { timeout: 30_000 });
        const status = await page.textContent("#gpu-status");
        console.log(`  [${secs()} s] gpu status: ${status}`);
        assert(
          await page.isVisible("#gpu-status.ok"),
          `WebGPU not usable: ${await page.textContent("#banner")}`,
        );
        assertEquals(errors, []);
      });

      await t.step("inspect mode: a run's curves and interactions; hostile text stays text", async () => {
        await page.goto(`${url}#inspect/test-run`);
        await page.waitForSelector("#run-interactions .interaction", { timeout: 15_000 });
        assertEquals(await page.locator("#run-interactions .interaction").count(), 3);
        assertEquals(await page.locator(".run-row").count(), 1);
        // Curves: a line for the LM loss (3 points) and dots/lines for the preference metrics.
        assert(await page.locator("#run-plots .plot").first().locator("path.series").count() === 1);
        // The diff marks exactly the words one side lacks.
        const first = page.locator("#run-interactions .interaction").first();
        assertEquals(await first.locator(".student .del").allTextContents(), ["quickly"]);
        assertEquals((await first.locator(".teacher .ins").allTextContents()).map((s) => s.trim()), [
          "the",
          "slowly",
        ]);
        // Markup in model or teacher text is shown literally and never parsed.
        const hostile = page.locator(`#run-interactions .interaction[data-index="1"]`);
        assertEquals(await hostile.locator(".teacher .text").textContent(), HOSTILE);
        assert((await hostile.locator(".student .text").textContent())!.includes("<b>bold</b>"));
        const injected = {
          img: await page.locator("main img").count(),
          script: await page.locator("main script").count(),
          b: await page.locator(".interaction b").count(),
          pwned: await page.evaluate("globalThis.__pwned ?? null"),
        };
        assertEquals(injected, { img: 0, script: 0, b: 0, pwned: null });
        // Text filter.
        await page.fill("#inter-filter", "big dog");
        await waitUntil(
          async () => (await page.locator("#run-interactions .interaction").count()) === 1,
          "filter",
        );
        assertEquals(await page.textContent("#inter-count"), "1 of 3 interactions");
        await page.screenshot({ path: `${OUT}demo_inspect.png`, fullPage: true });
        console.log(`  [${secs()} s] inspect ok`);
      });

      await t.step(
        "live training: a tiny student completes a round; pause holds it, resume finishes",
        async () => {
          await page.goto(`${url}#live`);
          await page.waitForSelector("#gpu-status.ok");
          const set = async (name: string, value: string) =>
            await page.fill(`#live-form [name=${name}]`, value);
          await page.click("#live-form summary");
          // 1 round of 8 datapoints, batch 8: 2 LM steps then 1 SimPO step.
          for (
            const [k, v] of Object.entries({
              seed: "1",
              numRounds: "1",
              maxDatapointsPerRound: "8",
              batchSize: "8",
              nSftEpochs: "2",
              nPoEpochs: "1",
              nLayer: "1",
              nEmbd: "32",
              nHead: "2",
              contextLength: "8",
              continuation: "8",
              vocabSize: "300",
              corpusWords: "2000",
            })
          ) await set(k, v);
          await page.click("#btn-start");
          // Pause at once: the loop must stop before its first optimisation step.
          await page.click("#btn-pause");
          assertEquals(await page.textContent("#run-state"), "paused");
          // Sampling and the teacher turn still run; then nothing may train while paused.
          await page.waitForSelector("#live-interactions .interaction", { timeout: 120_000 });
          console.log(`  [${secs()} s] interactions shown while paused`);
          await page.waitForTimeout(3000);
          assertEquals(await page.textContent("#stat-steps"), "0", "a step ran while paused");
          await page.click("#btn-pause"); // now "Resume"
          await page.waitForSelector("#run-state.done, #run-state.error", { timeout: 120_000 });
          const status = await page.textContent("#status-line");
          console.log(`  [${secs()} s] ${status}`);
          assertEquals(await page.textContent("#run-state"), "done", String(status));
          assertEquals(await page.textContent("#stat-steps"), "3");
          assertEquals(await page.locator("#live-interactions .interaction").count(), 8);
          // The LM loss plot has its line; the SimPO loss has its point; legends show finite numbers.
          const lm = page.locator("#live-plots .plot").nth(0);
          assertEquals(await lm.locator("path.series").count(), 1);
          const legend = (await lm.locator(".legend-item b").textContent())!;
          assert(Number.isFinite(Number(legend)) && Number(legend) > 0, `LM loss legend ${legend}`);
          assertEquals(await page.locator("#live-plots .plot").nth(1).locator("path.series").count(), 1);
          const log = await page.textContent("#live-log");
          console.log(log!.split("\n").map((l) => `    ${l}`).join("\n"));
          await page.click(".log-panel summary");
          // Sticky header and settings would be drawn mid-page in a full-page shot taken scrolled down.
          await page.mouse.wheel(0, -100_000);
          await page.waitForTimeout(200);
          await page.screenshot({ path: `${OUT}demo_live.png`, fullPage: true });
          assertEquals(errors, []);
        },
      );

      await t.step(
        "an OpenAI-compatible teacher: CORS refusal explained; with CORS its answers are used",
        async () => {
          const requests: Array<Record<string, unknown>> = [];
          const answer = '<img src=x onerror="window.__pwned=3"> the ducks swim';
          const blocked = fakeTeacher(false, answer, requests);
          const open = fakeTeacher(true, answer, requests);
          try {
            await page.check(`#live-form [name=teacherKind][value=openai]`);
            await page.fill("#live-form [name=teacherUrl]", `http://127.0.0.1:${blocked.addr.port}`);
            await page.fill("#live-form [name=teacherModel]", "fake");
            await page.fill("#live-form [name=nPoEpochs]", "0");
            await page.fill("#live-form [name=nSftEpochs]", "1");
            await page.click("#btn-start");
            await page.waitForSelector("#run-state.error", { timeout: 30_000 });
            const refused = (await page.textContent("#status-line"))!;
            console.log(`  [${secs()} s] ${refused}`);
            assert(refused.includes("CORS"), refused);
            errors.length = 0; // the browser logs the refused request itself

            await page.fill("#live-form [name=teacherUrl]", `http://127.0.0.1:${open.addr.port}`);
            await page.click("#btn-start");
            await page.waitForSelector("#run-state.done, #run-state.error", { timeout: 120_000 });
            const status = (await page.textContent("#status-line"))!;
            console.log(`  [${secs()} s] ${status}`);
            assertEquals(await page.textContent("#run-state"), "done", status);
            assertEquals(requests.length, 8, "one request per datapoint");
            const messages = requests[0].messages as Array<{ role: string; content: string }>;
            assertEquals(requests[0].model, "fake");
            assert(
              messages.some((m) => m.role === "system") && messages.length >= 3,
              JSON.stringify(messages),
            );
            // The teacher's text, cut to the student's length in tokens, shown as literal text.
            const teacher =
              (await page.locator("#live-interactions .interaction .teacher .text").first().textContent())!;
            console.log(`  teacher text shown: ${JSON.stringify(teacher)}`);
            assert(teacher.length > 0 && answer.startsWith(teacher), teacher);
            assertEquals(await page.locator("main img").count(), 0);
            assertEquals(await page.evaluate("globalThis.__pwned ?? null"), null);
            assertEquals(errors, []);
          } finally {
            await blocked.shutdown();
            await open.shutdown();
          }
        },
      );

      await t.step("stop ends a run early", async () => {
        await page.check(`#live-form [name=teacherKind][value=corpus]`);
        // Many rounds, so that however fast the engine is, stop lands before the last one.
        await page.fill("#live-form [name=numRounds]", "40");
        await page.click("#btn-start");
        await page.waitForSelector("#live-interactions .interaction", { timeout: 60_000 });
        await page.click("#btn-stop");
        await page.waitForSelector("#run-state.stopped, #run-state.done, #run-state.error", {
          timeout: 60_000,
        });
        const status = (await page.textContent("#status-line"))!;
        console.log(`  [${secs()} s] ${status}`);
        assertEquals(await page.textContent("#run-state"), "stopped", status);
        const [round, of] = (await page.textContent("#round-text"))!.split("/").map((x) => Number(x.trim()));
        assertEquals(of, 40);
        assert(round < 40, `stopped in round ${round}, before the last of 40`);
        assertEquals(errors, []);
      });

      await t.step("a browser without WebGPU gets a clear message and no Start", async () => {
        const noGpu = await browser.newPage();
        await noGpu.addInitScript(() => {
          Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined });
        });
        await noGpu.goto(url);
        await noGpu.waitForSelector("#banner:not([hidden])");
        const text = (await noGpu.textContent("#banner"))!;
        console.log(`  banner: ${text}`);
        assert(text.includes("no WebGPU"), text);
        assert(await noGpu.isDisabled("#btn-start"));
        await noGpu.close();
      });
      console.log(`  total ${secs()} s`);
    } finally {
      await browser.close();
      await server.shutdown();
      await Deno.remove(base, { recursive: true });
    }
  },
});
