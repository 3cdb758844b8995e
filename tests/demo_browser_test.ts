/**
 * The demo in a real browser (Debian's Chromium, WebGPU on SwiftShader, driven by Playwright), at a
 * desktop width (1280) and a phone width (390), with no horizontal scrolling anywhere:
 *
 * - Inspect: runs written here in the loop's file formats open on their latest round; the per-round
 *   summary table matches numbers computed from the files; search across rounds marks its matches;
 *   sort, filter, pages, the datapoint across rounds, CSV export; sort and filter by the pairs' SimPO
 *   rewards and margin, and a run without them saying so; the view survives a reload and Back;
 *   eval curves from RUN/eval/; a run still being written refreshes; hostile records (a context that is
 *   an object, a step that is text, markup, right-to-left overrides) are skipped or shown inert; bad
 *   links are explained.
 * - Live: a very small student trains in the worker; Pause and Stop land within one student batch or
 *   one optimisation step (checked on the counts the page records at the click and where the run
 *   halted); every round's pairs stay available; "Download run" saves a folder Inspect opens; leaving a
 *   running page asks first; an OpenAI-compatible teacher is used when it allows CORS and explained when
 *   it does not; a page without WebGPU says so.
 *
 * Screenshots go to tests/out/ (git-ignored). Skips with a note when /usr/bin/chromium is absent
 * (`apt-get install -y chromium`).
 */
import assert, { deepEqual as assertEquals } from "node:assert/strict";
import { type Browser, chromium, type ConsoleMessage, type Page } from "playwright";
import { allowedHosts, buildAssets, demoHandler } from "../demo/server.ts";
import { wordDiff } from "../demo/diff.ts";
import { fmt } from "../demo/dom.ts";

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

const WIDTHS = [{ width: 1280, height: 800 }, { width: 390, height: 844 }];
const HOSTILE = `fine. <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script> end`;
const RLO = "abc \u202Edesrever\u202C def";

interface Pair {
  round: number;
  index: number;
  source: string;
  context: string;
  student: string;
  teacher: string;
}
type Metric = Record<string, number | string>;

const CONFIG = {
  preset: "tiny",
  seed: 3,
  numRounds: 3,
  architecture: { nLayer: 1, nHead: 2, nEmbd: 32, nPositions: 32 },
  vocabSize: 300,
  corpus: { kind: "embedded", words: 2000 },
  datapointLength: 16,
  contextLength: 8,
  maxDatapointsPerRound: 30,
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

/** The pairs of the main test run: round 2 (0-based 1) has 45, so it spans three pages. */
function makePairs(): Pair[][] {
  const words = ["cat", "dog", "ball", "duck", "red", "big", "sat", "ran", "the", "a", "mat", "park"];
  const rounds: Pair[][] = [[], [], []];
  const sizes = [3, 45, 4];
  for (let r = 0; r < 3; r++) {
    for (let i = 0; i < sizes[r]; i++) {
      const w = (k: number) => words[(r * 7 + i * 3 + k) % words.length];
      rounds[r].push({
        round: r,
        index: i,
        source: i % 2 ? "embedded_childes" : "embedded_dialogue",
        context: `*MOT: look at ${w(0)} ${i}`,
        student: `the ${w(1)} ${w(2)} on ${w(3)}${i % 3 === 0 ? " quickly" : ""}`,
        // Overlaps of every kind: none, partial, all.
        teacher: [
          `${w(5)} ${w(6)} ${w(7)}`,
          `the ${w(1)} ${w(2)} on the ${w(3)} ${w(4)}`,
          `the ${w(1)} ${w(2)} on ${w(3)}`,
        ][i % 3],
      });
    }
  }
  rounds[0][0] = {
    ...rounds[0][0],
    student: "the cat sat on mat quickly",
    teacher: "the cat sat on the mat slowly",
  };
  rounds[0][1] = { ...rounds[0][1], student: "<b>bold</b> ducks zebra", teacher: HOSTILE };
  rounds[2][1] = { ...rounds[2][1], student: "a zebra dog", teacher: "a big zebra dog" };
  return rounds;
}

/** Steps of the main run: per round 2 LM steps and 2 SimPO steps. */
function makeMetrics(): Metric[] {
  const out: Metric[] = [];
  let step = 0, words = 0;
  for (let r = 0; r < 3; r++) {
    for (const phase of ["sft", "sft", "po", "po"]) {
      step++;
      words += 40;
      const m: Metric = {
        phase,
        round: r,
        epoch: 0,
        step,
        lmLoss: 5.5 - step * 0.11,
        lr: 2e-4 * step,
        gradNorm: 1,
        wordsSeen: words,
        tokensPerSec: 90,
        time: "2026-01-01T00:00:00.000Z",
      };
      if (phase === "po") {
        Object.assign(m, {
          simpoLoss: 1.3 - step * 0.01,
          chosenReward: -10 + step * 0.1,
          rejectedReward: -11 + step * 0.05,
          margin: 1 + step * 0.05,
          winRate: step % 2 ? 0.625 : 0.75,
        });
      }
      out.push(m);
    }
  }
  return out;
}

const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r) + "\n").join("");

/** A pair's SimPO rewards in the test run (rounds 1 and 2 have them, round 3 does not), ties included. */
function rewardOf(p: Pair): { chosen: number; rejected: number; margin: number } {
  const chosen = -5 - ((p.index * 7) % 11) / 4, rejected = -6 - ((p.index * 5) % 13) / 4;
  return { chosen, rejected, margin: chosen - rejected };
}

/** A finished-looking run in the loop's file formats, with eval results; pair rewards in `rewardRounds`. */
async function writeRun(
  dir: string,
  pairs: Pair[][],
  metrics: Metric[],
  rewardRounds: number[] = [],
): Promise<void> {
  await Deno.mkdir(`${dir}/interactions`, { recursive: true });
  await Deno.mkdir(`${dir}/eval`, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(CONFIG, null, 2));
  await Deno.writeTextFile(`${dir}/metrics.jsonl`, jsonl(metrics));
  for (const [r, ps] of pairs.entries()) {
    await Deno.writeTextFile(
      `${dir}/interactions/round_${r}.jsonl`,
      jsonl(
        ps.map((p) => ({
          ...p,
          contextTokens: [1],
          studentTokens: [2],
          teacherTokens: [3],
          studentFinish: "length",
        })),
      ),
    );
    if (!rewardRounds.includes(r)) continue;
    await Deno.writeTextFile(
      `${dir}/interactions/round_${r}.rewards.jsonl`,
      jsonl(
        ps.map((p, k) => ({ round: r, index: p.index, ...rewardOf(p), epoch: 0, batch: k >> 3, step: 0 })),
      ),
    );
  }
  const curve = {
    metrics: ["blimp", "wug"],
    rows: [
      { checkpoint: "checkpoint_1K", words: 1000, blimp: 51.5, wug: 0.1 },
      { checkpoint: "checkpoint_2K", words: 2000, blimp: 53.25, wug: 0.2 },
      { checkpoint: "round3_po", words: 3500, blimp: 55, wug: null },
    ],
  };
  await Deno.writeTextFile(`${dir}/eval/learning_curve.json`, JSON.stringify(curve));
}

/** A run with hostile records: a context that is an object, a step that is text, RTL overrides. */
async function writeHostileRun(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/interactions`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ ...CONFIG, numRounds: 1, teacher: { kind: "corpus" } }),
  );
  await Deno.writeTextFile(
    `${dir}/metrics.jsonl`,
    jsonl([
      { phase: "sft", round: 0, epoch: 0, step: 1, lmLoss: 5, lr: 1e-4, wordsSeen: 10 },
      { phase: "sft", round: 0, epoch: 0, step: "two", lmLoss: 4, lr: 1e-4, wordsSeen: 20 },
      { phase: "sft", round: 0, epoch: 0, step: 3, lmLoss: 3, lr: 1e-4, wordsSeen: 30 },
    ]) + "{not json\n",
  );
  await Deno.writeTextFile(
    `${dir}/interactions/round_0.jsonl`,
    jsonl([
      { round: 0, index: 0, source: "s", context: { evil: true }, student: "x", teacher: "y" },
      { round: 0, index: 1, source: "s\u202E", context: "ctx", student: RLO, teacher: `${RLO} more` },
      { round: 0, index: 2, source: "s", context: "ok", student: "a b", teacher: "a b c" },
    ]),
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

/** Poll `cond` (the page's CSP forbids Playwright's string-evaluating waitForFunction). */
async function waitUntil(cond: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The page is no wider than the viewport (no horizontal scrolling); names the widest elements if not. */
async function assertNoOverflow(page: Page, where: string): Promise<void> {
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
  if (scroll <= inner) return;
  const wide = await page.evaluate(() =>
    [...document.querySelectorAll("body *")]
      .filter((e) =>
        e.getBoundingClientRect().right > innerWidth + 1 && (e as HTMLElement).offsetParent !== null
      )
      .slice(0, 60)
      .map((e) =>
        `${e.tagName.toLowerCase()}#${e.id}.${[...e.classList].join(".")} ${
          Math.round(e.getBoundingClientRect().right)
        }`
      )
  );
  assert.fail(`${where}: the page is ${scroll} px wide in a ${inner} px viewport: ${wide.join(", ")}`);
}

/** A served demo: assets built once, runs from `runsDir`. */
async function serve(base: string): Promise<{ url: string; runs: string; close: () => Promise<void> }> {
  const runs = `${base}/runs`;
  await Deno.mkdir(runs, { recursive: true });
  await buildAssets(`${base}/assets`);
  const hosts: string[] = [];
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    demoHandler({ assetsDir: `${base}/assets`, runsDir: runs, hosts }),
  );
  hosts.push(...allowedHosts("127.0.0.1", server.addr.port));
  return { url: `http://127.0.0.1:${server.addr.port}/`, runs, close: () => server.shutdown() };
}

async function withBrowser(
  fn: (browser: Browser, url: string, runs: string) => Promise<void>,
): Promise<void> {
  const base = await Deno.makeTempDir({ prefix: "demo-browser-test-" });
  await Deno.mkdir(OUT, { recursive: true });
  const srv = await serve(base);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  try {
    await fn(browser, srv.url, srv.runs);
  } finally {
    await browser.close();
    await srv.close();
    await Deno.remove(base, { recursive: true });
  }
}

const cards = (page: Page) => page.locator("#run-list .interaction");
const cardIds = async (page: Page) =>
  await cards(page).evaluateAll((els) =>
    els.map((e) => `${(e as HTMLElement).dataset.round}.${(e as HTMLElement).dataset.index}`)
  );

/** What the summary table must show for round `r`, from the files. */
function expectedSummary(r: number, pairs: Pair[], metrics: Metric[]): Record<string, string> {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const ms = metrics.filter((m) => m.round === r);
  const po = ms.filter((m) => m.phase === "po");
  const words = (s: string) => s.split(/\s+/).filter((w) => w).length;
  const overlaps = pairs.map((p) =>
    wordDiff(p.student, p.teacher).common / Math.max(words(p.student), words(p.teacher))
  );
  return {
    "round": String(r + 1),
    "steps": String(ms.length),
    "LM loss": fmt(mean(ms.filter((m) => m.phase === "sft").map((m) => m.lmLoss as number))),
    "chosen reward": fmt(mean(po.map((m) => m.chosenReward as number))),
    "rejected reward": fmt(mean(po.map((m) => m.rejectedReward as number))),
    "margin": fmt(mean(po.map((m) => m.margin as number))),
    "win rate": `${fmt(mean(po.map((m) => m.winRate as number)) * 100)}%`,
    "word overlap": `${fmt(mean(overlaps) * 100)}%`,
    "student words": fmt(mean(pairs.map((p) => words(p.student)))),
    "teacher words": fmt(mean(pairs.map((p) => words(p.teacher)))),
    "pairs": String(pairs.length),
  };
}

Deno.test({
  name:
    "demo in Chromium, Inspect: summary, search, sort/filter, URL state, eval curves, refresh, hostile runs",
  ignore: !haveChromium,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const pairs = makePairs(), metrics = makeMetrics();
    await withBrowser(async (browser, url, runs) => {
      await writeRun(`${runs}/test-run`, pairs, metrics, [0, 1]);
      await writeHostileRun(`${runs}/hostile`);
      for (const size of WIDTHS) {
        const tag = size.width;
        const context = await browser.newContext({ viewport: size, acceptDownloads: true });
        const page = await context.newPage();
        const errors = watchErrors(page);

        await t.step(
          `${tag} px: a run opens on its latest round; the summary table matches the files`,
          async () => {
            await page.goto(`${url}#inspect/test-run`);
            await page.waitForSelector("#run-list .interaction");
            assertEquals(await page.textContent("#run-picker .round-btn.active"), "Round 3");
            assertEquals(await cardIds(page), ["2.0", "2.1", "2.2", "2.3"]);
            // The pair columns fill in once every round has been read.
            await waitUntil(
              async () =>
                (await page.locator("#round-summary td[data-col=pairs]").allTextContents()).every((s) =>
                  s !== "–"
                ),
              "pair columns",
            );
            for (let r = 0; r < 3; r++) {
              const row = page.locator(`#round-summary tr[data-round="${r}"] td`);
              const got = Object.fromEntries(
                await row.evaluateAll((tds) =>
                  tds.map((td) => [(td as HTMLElement).dataset.col!, td.textContent!])
                ),
              );
              assertEquals(got, expectedSummary(r, pairs[r], metrics), `round ${r + 1}`);
            }
            await assertNoOverflow(page, `inspect ${tag}`);
            await page.screenshot({ path: `${OUT}demo_inspect_${tag}.png`, fullPage: true });
          },
        );

        await t.step(
          `${tag} px: curves with axis titles, hover values; eval curves against words seen`,
          async () => {
            const lm = page.locator("#run-plots .plot").first();
            assertEquals(await lm.locator("path.series").count(), 1);
            const titles = await lm.locator(".axis-title").allTextContents();
            assertEquals(titles, ["optimiser step", "nats / token"]);
            // SimPO curves on their own phase's steps: 6 SimPO steps in the run.
            const simpoTicks = await page.locator("#run-plots .plot").nth(1).locator(".tick")
              .allTextContents();
            assert(simpoTicks.includes("6") && !simpoTicks.includes("12"), simpoTicks.join(" "));
            await lm.locator("svg").hover({ position: { x: 200, y: 60 } });
            const hover = await lm.locator(".hover-text").allTextContents();
            assert(
              hover.length === 2 && hover[0].startsWith("optimiser step ") &&
                hover[1].startsWith("on the teacher"),
              hover.join("|"),
            );
            const evalPlots = page.locator("#run-eval .plot");
            assertEquals(await evalPlots.count(), 2);
            assertEquals(await evalPlots.first().locator(".axis-title").first().textContent(), "words seen");
            assertEquals(await evalPlots.first().locator(".legend-item b").textContent(), "55");
            // Words seen on the x axis, for every training plot.
            await page.selectOption("#run-plots select.x-axis", "words");
            await waitUntil(
              async () => (await lm.locator(".axis-title").first().textContent()) === "words seen",
              "words axis",
            );
            await page.selectOption("#run-plots select.x-axis", "steps");
          },
        );

        await t.step(`${tag} px: search all rounds with marks; sort; filter; pages; export`, async () => {
          await page.fill("#run-search", "zebra");
          await page.press("#run-search", "Enter");
          await waitUntil(async () => (await cards(page).count()) === 1, "search in round 3");
          const more = page.locator("#run-count button.link");
          assertEquals(await more.textContent(), "1 more in other rounds");
          await more.click();
          await waitUntil(async () => (await cards(page).count()) === 2, "search in all rounds");
          assertEquals(await cardIds(page), ["0.1", "2.1"]);
          assertEquals(
            (await page.locator("#run-list mark").allTextContents()).map((s) => s.toLowerCase()),
            ["zebra", "zebra", "zebra"],
          );
          await page.fill("#run-search", "");
          await page.press("#run-search", "Enter");
          await page.click("#run-picker .round-btn[data-round='1']");
          await waitUntil(
            async () => (await page.textContent("#run-count"))!.startsWith("45 of 45"),
            "round 2",
          );
          assertEquals(await cards(page).count(), 20);
          assertEquals((await page.textContent("#run-pager .page-of"))!, "page 1 of 3");
          await page.click("#run-pager button:has-text('Next')");
          assertEquals((await cardIds(page))[0], "1.20");
          await page.selectOption("#run-sort", "overlap-asc");
          const overlaps = await cards(page).locator(".card-stat").allTextContents();
          const pct = overlaps.map((s) => Number(/\((\d+)%\)/.exec(s)![1]));
          assert(pct.every((v, i) => i === 0 || pct[i - 1] <= v), `ascending overlap: ${pct}`);
          await page.fill("#run-max", "60");
          await page.press("#run-max", "Enter");
          const expected = pairs[1].filter((p) => {
            const w = (s: string) => s.split(/\s+/).filter((x) => x).length;
            return (100 * wordDiff(p.student, p.teacher).common) / Math.max(w(p.student), w(p.teacher)) <= 60;
          }).length;
          await waitUntil(
            async () => (await page.textContent("#run-count"))!.startsWith(`${expected} of 45`),
            "filter",
          );
          const [download] = await Promise.all([
            page.waitForEvent("download"),
            page.click("#run-export-csv"),
          ]);
          const csv = await Deno.readTextFile((await download.path())!);
          assertEquals(
            csv.trimEnd().split("\r\n").length,
            expected + 1,
            "CSV: a header and the filtered pairs",
          );
          assert(csv.startsWith("round,index,source,shared_words,overlap"), csv.slice(0, 80));
          await assertNoOverflow(page, `inspect filtered ${tag}`);
        });

        await t.step(`${tag} px: the view lives in the URL: reload and Back restore it`, async () => {
          const hash = await page.evaluate(() => location.hash);
          assertEquals(hash, "#inspect/test-run?round=2&sort=overlap-asc&f=overlap%3A%3A60");
          await page.reload();
          await page.waitForSelector("#run-list .interaction").catch(async (e) => {
            throw new Error(`${e}\n${await page.textContent("#inspect")}\n${errors.join("\n")}`);
          });
          assertEquals(await page.inputValue("#run-sort"), "overlap-asc");
          assertEquals(await page.inputValue("#run-max"), "60");
          assertEquals(await page.textContent("#run-picker .round-btn.active"), "Round 2");
          await page.click(`#run-list .interaction >> nth=0 >> .compare-btn`);
          await page.waitForSelector("#run-compare:not([hidden]) .compare-col");
          assertEquals(await page.locator("#run-compare .compare-col").count(), 3);
          assert((await page.evaluate(() => location.hash)).includes("pair=2."));
          await page.screenshot({ path: `${OUT}demo_inspect_compare_${tag}.png`, fullPage: true });
          await assertNoOverflow(page, `compare ${tag}`);
          await page.goBack();
          await waitUntil(async () => await page.isHidden("#run-compare"), "Back closes the comparison");
          await page.goBack(); // before the filter
          await waitUntil(async () => (await page.inputValue("#run-max")) === "", "Back undoes the filter");
        });

        await t.step(
          `${tag} px: sort and filter by SimPO reward and margin; runs without rewards say so`,
          async () => {
            await page.goto(`${url}#inspect/test-run?round=2&sort=margin-asc`);
            await page.waitForSelector("#run-list .interaction .card-reward");
            const byMargin = [...pairs[1]].sort((a, b) =>
              rewardOf(a).margin - rewardOf(b).margin || a.index - b.index
            );
            assertEquals(
              await cardIds(page),
              byMargin.slice(0, 20).map((p) => `1.${p.index}`),
              "smallest margin first",
            );
            const first = byMargin[0], r = rewardOf(first);
            assertEquals(
              await cards(page).first().locator(".card-reward").textContent(),
              `reward chosen ${fmt(r.chosen)} · rejected ${fmt(r.rejected)} · margin ${fmt(r.margin)}`,
            );
            await page.selectOption("#run-sort", "chosen-desc");
            const byChosen = [...pairs[1]].sort((a, b) =>
              rewardOf(b).chosen - rewardOf(a).chosen || a.index - b.index
            );
            await waitUntil(
              async () => (await cardIds(page))[0] === `1.${byChosen[0].index}`,
              "chosen order",
            );
            assertEquals(await cardIds(page), byChosen.slice(0, 20).map((p) => `1.${p.index}`));
            // A range on the margin: -0.5 to 1.
            await page.selectOption("#run-filter-key", "margin");
            await page.fill("#run-min", "-0.5");
            await page.fill("#run-max", "1");
            await page.press("#run-max", "Enter");
            const inRange = pairs[1].filter((p) =>
              rewardOf(p).margin >= -0.5 && rewardOf(p).margin <= 1
            ).length;
            assert(inRange > 0 && inRange < 45, `test data: ${inRange} pairs in range`);
            await waitUntil(
              async () => (await page.textContent("#run-count"))!.startsWith(`${inRange} of 45`),
              "margin filter",
            );
            assertEquals(
              await page.evaluate(() => location.hash),
              "#inspect/test-run?round=2&sort=chosen-desc&f=margin%3A-0.5%3A1",
            );
            assert(await page.isHidden("#run-reward-note"));
            // Round 3 has no rewards file: the filter leaves nothing, and the note says why.
            await page.click("#run-picker .round-btn[data-round='2']");
            await waitUntil(
              async () => (await page.textContent("#run-count"))!.startsWith("0 of 4"),
              "round 3",
            );
            assert(
              (await page.textContent("#run-reward-note"))!.startsWith("No pair here has SimPO rewards"),
            );
            // A run without any (also asked for a reward order by its address): it opens as before, the
            // reward entries are disabled, and the note under the controls says why.
            await page.goto(`${url}#inspect/hostile?sort=margin-desc`);
            await page.waitForSelector("#run-list .interaction");
            assertEquals(await cards(page).count(), 2, "the run opens as before");
            for (const [select, value] of [["sort", "margin-asc"], ["filter-key", "chosen"]]) {
              assert(await page.locator(`#run-${select} option[value='${value}']`).isDisabled(), value);
            }
            assertEquals(await page.locator("#run-sort option[value='overlap-asc']").isDisabled(), false);
            const note = (await page.textContent("#run-reward-note"))!;
            assert(
              note.startsWith("No per-pair SimPO rewards, so the reward orders and filters are off: "),
              note,
            );
            assert(note.includes("this run has no per-pair rewards"), note);
            await assertNoOverflow(page, `inspect rewards ${tag}`);
          },
        );

        await t.step(
          `${tag} px: hostile records skipped and counted, text inert, bad links explained`,
          async () => {
            await page.goto(`${url}#inspect/hostile`);
            await page.waitForSelector("#run-list .interaction");
            assertEquals(await cards(page).count(), 2);
            const summary = (await page.textContent("#run-summary"))!;
            assert(
              summary.includes("2 metrics lines skipped") && summary.includes("1 unreadable pairs skipped"),
              summary,
            );
            const rtl = page.locator(`#run-list .interaction[data-index="1"]`);
            const text = (await rtl.locator(".student .text").textContent())!;
            assert(
              !text.includes("\u202E") && text.includes("RLO") && text.includes("desrever"),
              JSON.stringify(text),
            );
            assertEquals(await rtl.locator(".student .text").getAttribute("dir"), "auto");
            assertEquals(await page.locator("#run-plots .plot").first().locator("path.series").count(), 1);
            // Hostile markup in a run stays text.
            await page.goto(`${url}#inspect/test-run?round=1`);
            await page.waitForSelector(`#run-list .interaction[data-index="1"]`);
            const hostile = page.locator(`#run-list .interaction[data-index="1"]`);
            assertEquals(await hostile.locator(".teacher .text").textContent(), HOSTILE);
            assertEquals(await page.locator("main img, main script, .interaction b").count(), 0);
            assertEquals(
              await page.evaluate(() => (globalThis as { __pwned?: number }).__pwned ?? null),
              null,
            );
            // A malformed %-escape and an unknown run: explained, the run list stays.
            await page.goto(`${url}#inspect/%E0%A4%A?round=x`);
            await page.waitForSelector("#banner:not([hidden])");
            assert((await page.textContent("#banner"))!.includes("malformed %-escape"));
            await page.goto(`${url}#inspect/no-such-run`);
            await page.waitForSelector("#run-missing:not([hidden])");
            assertEquals(await page.locator(".run-row").count(), 2);
            assertEquals(errors, []);
          },
        );
        await context.close();
      }

      await t.step("360 px, the narrowest width: no horizontal overflow on any view", async () => {
        const page = await browser.newPage({ viewport: { width: 360, height: 740 } });
        for (const hash of ["#live", "#inspect", "#inspect/test-run?round=2&pair=2.0", "#inspect/hostile"]) {
          await page.goto(`${url}${hash}`);
          await page.waitForSelector(
            hash === "#live" || hash === "#inspect" ? "#gpu-status.ok" : "#run-list .interaction",
          );
          await assertNoOverflow(page, `360 px ${hash}`);
        }
        await page.screenshot({ path: `${OUT}demo_inspect_360.png`, fullPage: true });
        await page.close();
      });

      await t.step("a run still training refreshes: new steps and rounds appear", async () => {
        const dir = `${runs}/growing`;
        await writeRun(dir, [pairs[0]], metrics.filter((m) => m.round === 0));
        await Deno.remove(`${dir}/eval`, { recursive: true });
        const page = await browser.newPage({ viewport: WIDTHS[0] });
        await page.goto(`${url}#inspect/growing`);
        await page.waitForSelector("#run-list .interaction");
        assertEquals(await page.locator("#round-summary tbody tr").count(), 1);
        assert((await page.textContent("#run-eval"))!.includes("deno task eval --run"));
        await Deno.writeTextFile(
          `${dir}/metrics.jsonl`,
          jsonl(metrics.filter((m) => (m.round as number) <= 1)),
        );
        await Deno.writeTextFile(
          `${dir}/interactions/round_1.jsonl`,
          jsonl(pairs[1].map((p) => ({ ...p, contextTokens: [], studentTokens: [], teacherTokens: [] }))),
        );
        await waitUntil(
          async () => (await page.locator("#round-summary tbody tr").count()) === 2,
          "refresh",
          20_000,
        );
        assertEquals(await page.locator("#run-picker .round-btn").count(), 3); // All, Round 1, Round 2
        await page.close();
      });
    });
  },
});

Deno.test({
  name:
    "demo in Chromium, Live: pause/stop within a batch or step, round history, download opens in Inspect, CORS",
  ignore: !haveChromium,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const t0 = performance.now();
    const secs = () => ((performance.now() - t0) / 1000).toFixed(1);
    await withBrowser(async (browser, url, runs) => {
      const context = await browser.newContext({ viewport: WIDTHS[0], acceptDownloads: true });
      const page = await context.newPage();
      const errors = watchErrors(page);
      const dataset = async () =>
        await page.locator("#live-progress").evaluate((e) => ({ ...(e as HTMLElement).dataset }));
      const num = async (sel: string) => Number((await page.textContent(sel))!.replaceAll(",", ""));
      const leaveAsks = () =>
        page.evaluate(() => {
          const e = new Event("beforeunload", { cancelable: true });
          dispatchEvent(e);
          return e.defaultPrevented;
        });

      await t.step("the page loads, finds WebGPU in the worker, no console errors, no overflow", async () => {
        await page.goto(url);
        await page.waitForSelector("#gpu-status.ok, #gpu-status.bad", { timeout: 30_000 });
        assert(
          await page.isVisible("#gpu-status.ok"),
          `WebGPU not usable: ${await page.textContent("#banner")}`,
        );
        await assertNoOverflow(page, "live 1280");
        assertEquals(errors, []);
      });

      const set = async (values: Record<string, string>) => {
        if (!(await page.isVisible("#live-form [name=seed]"))) {
          await page.click("#settings-details > summary");
        }
        if (!(await page.isVisible("#live-form [name=contextLength]"))) {
          await page.click("#live-form .advanced > summary");
        }
        for (const [k, v] of Object.entries(values)) await page.fill(`#live-form [name=${k}]`, v);
      };
      // 2 rounds of 8 datapoints; the student writes in batches of 4; 4 LM steps and 4 SimPO steps a round.
      const STUDENT_BATCH = 4;
      const tiny = {
        seed: "1",
        numRounds: "2",
        maxDatapointsPerRound: "8",
        batchSize: "2",
        studentBatch: String(STUDENT_BATCH),
        nSftEpochs: "1",
        nPoEpochs: "1",
        nLayer: "1",
        nEmbd: "32",
        nHead: "2",
        contextLength: "8",
        continuation: "8",
        vocabSize: "300",
        corpusWords: "2000",
      };

      await t.step(
        "pause lands within one student batch and one step; resume; every round's pairs stay",
        async () => {
          await set(tiny);
          await page.check("#live-form [name=keepWeights]");
          assertEquals(await leaveAsks(), false);
          await page.click("#btn-start");
          // Pause at once: it lands before the next student batch.
          await page.click("#btn-pause");
          await page.waitForSelector("#run-state[data-state=paused]", { timeout: 120_000 });
          let d = await dataset();
          console.log(
            `  [${secs()} s] pause clicked at ${d.pauseSequences} continuations, halted at ${d.haltSequences}`,
          );
          assert(Number(d.haltSequences) - Number(d.pauseSequences) <= STUDENT_BATCH, JSON.stringify(d));
          assertEquals(await leaveAsks(), true, "a paused run asks before the page is left");
          // What the student has written: continuations and tokens (the rest of the line is rates).
          const written = async () => {
            const text = (await page.textContent("#phase-list [data-phase=student] .phase-detail"))!;
            return { text, counts: text.match(/\d+\/\d+ continuations|[\d,]+ tokens(?!\/)/g) };
          };
          const held = await written();
          await page.waitForTimeout(2000);
          const later = await written();
          assertEquals(later.counts, held.counts, `wrote while paused: ${held.text} -> ${later.text}`);
          assertEquals(Number(d.haltSequences), Number(/^(\d+)\//.exec(held.text)![1]));
          assertEquals(await num("#stat-steps"), 0, "a step ran while paused");
          await page.click("#btn-pause"); // Resume
          // Pause again once training has begun: it lands within one optimisation step.
          await waitUntil(async () => (await num("#stat-steps")) >= 1, "the first step", 120_000);
          await page.click("#btn-pause");
          await page.waitForSelector("#run-state[data-state=paused]", { timeout: 120_000 });
          d = await dataset();
          console.log(`  [${secs()} s] pause clicked at step ${d.pauseSteps}, halted at step ${d.haltSteps}`);
          assert(Number(d.haltSteps) - Number(d.pauseSteps) <= 1, JSON.stringify(d));
          const steps = await num("#stat-steps");
          await page.waitForTimeout(2000);
          assertEquals(await num("#stat-steps"), steps, "a step ran while paused");
          assertEquals(Number(d.haltSteps), steps);
          await page.click("#btn-pause");
          await page.waitForSelector("#run-state.done, #run-state.error", { timeout: 240_000 });
          const status = (await page.textContent("#status-line"))!;
          console.log(`  [${secs()} s] ${status}`);
          assertEquals(await page.textContent("#run-state"), "done", status);
          assert(/paused\)/.test(status), `the paused time is reported apart: ${status}`);
          assertEquals(await num("#stat-steps"), 16);
          assertEquals(await leaveAsks(), false);
          // Every phase reported progress.
          for (const phase of ["student", "teacher", "sft", "po"]) {
            const text = (await page.textContent(`#phase-list [data-phase=${phase}] .phase-detail`))!;
            assert(/^\d+\/\d+ /.test(text) && text.includes("took"), `${phase}: ${text}`);
          }
          assert(
            (await page.textContent("#phase-list [data-phase=student] .phase-detail"))!.includes("tokens/s"),
          );
          // Both rounds' pairs, round 2 shown first, round 1 one click away.
          assertEquals(await page.textContent("#live-picker .round-btn.active"), "Round 2");
          assertEquals(await page.locator("#live-list .interaction").count(), 8);
          await page.click("#live-picker .round-btn[data-round='0']");
          assertEquals(
            await page.locator("#live-list .interaction").evaluateAll((els) =>
              els.map((e) => (e as HTMLElement).dataset.round)
            ),
            Array(8).fill("0"),
          );
          const log = (await page.textContent("#live-log"))!;
          console.log(log.split("\n").map((l) => `    ${l}`).join("\n"));
          assert(log.includes("checkpoint round1_sft at") && log.includes("weights kept in this tab"), log);
          await page.click(".log-panel summary");
          // The sticky header and settings would be drawn mid-page in a full-page shot taken scrolled down.
          await page.mouse.wheel(0, -100_000);
          await page.waitForTimeout(200);
          await page.screenshot({ path: `${OUT}demo_live_1280.png`, fullPage: true });
          await page.setViewportSize(WIDTHS[1]);
          await assertNoOverflow(page, "live 390 after a run");
          await page.screenshot({ path: `${OUT}demo_live_390.png`, fullPage: true });
          await page.setViewportSize(WIDTHS[0]);
          assertEquals(errors, []);
        },
      );

      await t.step(
        "Download run: a tar that unpacks into a run Inspect opens, weights included",
        async () => {
          const [download] = await Promise.all([page.waitForEvent("download"), page.click("#btn-download")]);
          const name = download.suggestedFilename();
          assert(/^browser-run-\d{8}-\d{6}\.tar$/.test(name), name);
          const tar = `${runs}/${name}`;
          await download.saveAs(tar);
          const untar = await new Deno.Command("tar", { args: ["xf", tar, "-C", runs] }).output();
          assert(untar.success, new TextDecoder().decode(untar.stderr));
          await Deno.remove(tar);
          const dir = `${runs}/${name.replace(/\.tar$/, "")}`;
          for (
            const f of [
              "config.json",
              "tokenizer.json",
              "metrics.jsonl",
              "interactions/round_1.jsonl",
              "checkpoints/round2_po/model.safetensors",
              "state/state.json",
            ]
          ) {
            assert((await Deno.stat(`${dir}/${f}`)).isFile, f);
          }
          assertEquals((await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").length, 16);
          await page.goto(`${url}#inspect/${name.replace(/\.tar$/, "")}`);
          await page.waitForSelector("#run-list .interaction");
          assertEquals(await page.locator("#round-summary tbody tr").count(), 2);
          assertEquals(await page.locator("#run-list .interaction").count(), 8);
          await page.goto(`${url}#live`);
          await page.waitForSelector("#gpu-status.ok");
        },
      );

      await t.step("stop lands within one student batch or one step", async () => {
        await set({ ...tiny, numRounds: "40" });
        await page.uncheck("#live-form [name=keepWeights]");
        await page.click("#btn-start");
        await waitUntil(async () => (await num("#stat-steps")) >= 1, "the first step", 120_000);
        await page.click("#btn-stop");
        await page.waitForSelector("#run-state.stopped, #run-state.done, #run-state.error", {
          timeout: 120_000,
        });
        const status = (await page.textContent("#status-line"))!;
        console.log(`  [${secs()} s] ${status}`);
        assertEquals(await page.textContent("#run-state"), "stopped", status);
        const d = await dataset();
        assert(Number(d.endSteps) - Number(d.stopSteps) <= 1, JSON.stringify(d));
        assert(
          Number(d.endSequences) - Number(d.stopSequences) <= STUDENT_BATCH,
          JSON.stringify(d),
        );
        const log = (await page.textContent("#live-log"))!;
        assert(!/checkpoint \S+ at \d+ words\n/.test(log) && log.includes("no weights"), log);
        assertEquals(errors, []);
      });

      await t.step(
        "an OpenAI-compatible teacher: CORS refusal explained; with CORS its answers are used",
        async () => {
          const requests: Array<Record<string, unknown>> = [];
          const answer = '<img src=x onerror="window.__pwned=3"> the ducks swim';
          const blocked = fakeTeacher(false, answer, requests);
          const open = fakeTeacher(true, answer, requests);
          try {
            await set({ ...tiny, numRounds: "1", nPoEpochs: "0" });
            await page.check(`#live-form [name=teacherKind][value=openai]`);
            await page.fill("#live-form [name=teacherUrl]", `http://127.0.0.1:${blocked.addr.port}`);
            await page.fill("#live-form [name=teacherModel]", "fake");
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
            assertEquals(await page.textContent("#run-state"), "done", status);
            assertEquals(requests.length, 8, "one request per datapoint");
            const messages = requests[0].messages as Array<{ role: string; content: string }>;
            assertEquals(requests[0].model, "fake");
            assert(
              messages.some((m) => m.role === "system") && messages.length >= 3,
              JSON.stringify(messages),
            );
            const teacher =
              (await page.locator("#live-list .interaction .teacher .text").first().textContent())!;
            assert(teacher.length > 0 && answer.startsWith(teacher), teacher);
            assertEquals(await page.locator("main img").count(), 0);
            assertEquals(
              await page.evaluate(() => (globalThis as { __pwned?: number }).__pwned ?? null),
              null,
            );
            assertEquals(errors, []);
          } finally {
            await blocked.shutdown();
            await open.shutdown();
          }
        },
      );

      await t.step(
        "a phone-width page: settings folded, no overflow; no WebGPU: a clear message",
        async () => {
          const phone = await browser.newPage({ viewport: WIDTHS[1] });
          await phone.goto(url);
          await phone.waitForSelector("#gpu-status.ok, #gpu-status.bad", { timeout: 30_000 });
          assertEquals(
            await phone.locator("#settings-details").evaluate((d) => (d as HTMLDetailsElement).open),
            false,
          );
          assert(await phone.isVisible("#btn-start"));
          await assertNoOverflow(phone, "live 390");
          await phone.screenshot({ path: `${OUT}demo_live_390_idle.png`, fullPage: true });
          await phone.close();
          const noGpu = await browser.newPage();
          await noGpu.addInitScript(() => {
            Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined });
          });
          await noGpu.goto(url);
          await noGpu.waitForSelector("#banner:not([hidden])");
          const text = (await noGpu.textContent("#banner"))!;
          assert(text.includes("no WebGPU"), text);
          assert(await noGpu.isDisabled("#btn-start"));
          await noGpu.close();
        },
      );
      console.log(`  total ${secs()} s`);
      await context.close();
    });
  },
});

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
