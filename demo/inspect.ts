/**
 * Inspect mode: the runs the server lists, and for one run its settings, a per-round summary, the
 * training curves, the eval learning curves (`RUN/eval/learning_curve.json`, from
 * `deno task eval --run`), and the pairs of every round (see pairs_view.ts). The view follows the
 * address (run, round, search, order, filter, compared pair), so links, reload and Back work; a run
 * still training is re-read every few seconds.
 * @module
 */
/// <reference lib="dom" />
import type { MetricsRecord } from "../interaction/loop.ts";
import type { RunSummary } from "./runs.ts";
import { byId, el, fmt, replace, untrustedText } from "./dom.ts";
import { MetricsView } from "./metrics_view.ts";
import { PairBrowser } from "./pairs_view.ts";
import { LinePlot } from "./plot.ts";
import {
  checkInteraction,
  checkMetrics,
  checkPairReward,
  type PairStats,
  parseRecords,
  type RoundSummary,
  type ShownInteraction,
  summarizeRounds,
  withRewards,
} from "./records.ts";
import { metricUnit } from "../eval/curve.ts";
import { inspectHash, type PairQuery, type Route } from "./url_state.ts";

/** How often a run that is still training is re-read. */
const REFRESH_MS = 5000;

async function getText(url: string): Promise<string> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${(await res.text()).trim()}`);
  return await res.text();
}

function runUrl(name: string, file: string): string {
  return `/api/runs/${encodeURIComponent(name)}/${file}`;
}

async function listRuns(): Promise<RunSummary[]> {
  const v = JSON.parse(await getText("/api/runs")) as { runs?: unknown };
  if (!Array.isArray(v.runs)) throw new Error("/api/runs: no runs array in the answer");
  return v.runs as RunSummary[];
}

/** The eval learning curve as `deno task eval --run` writes it. */
interface LearningCurve {
  metrics: string[];
  rows: Array<Record<string, unknown>>;
}

/** Inspect mode, bound to the page's elements. */
export class InspectMode {
  #metrics = new MetricsView();
  #pairs: PairBrowser;
  #run: RunSummary | undefined;
  #runs: RunSummary[] | undefined;
  #records: MetricsRecord[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #notes = new Map<string, string>();
  #openToken = 0;

  constructor() {
    byId("run-plots").appendChild(this.#metrics.root);
    this.#pairs = new PairBrowser({
      id: "run",
      empty: "This run has no interaction files yet.",
      noRewards:
        "this run has no per-pair rewards (interactions/round_N.rewards.jsonl: training writes them " +
        "in each round's last SimPO epoch; older runs have none).",
      exportName: () => `${this.#run?.name ?? "run"}-pairs`,
      load: (round) => this.#loadRound(round),
      onQuery: (q, push) => this.#setAddress(q, push),
    });
    byId("run-pairs").appendChild(this.#pairs.root);
    byId("btn-refresh").addEventListener("click", () => void this.#refreshList());
  }

  /** Show the mode for `route` (from the address): the run list, and the run and view it names. */
  async show(route: Route): Promise<void> {
    if (!this.#runs) await this.#refreshList();
    if (!route.run) {
      this.#close();
      return;
    }
    if (route.run !== this.#run?.name) await this.open(route.run, route.query);
    else this.#pairs.setQuery(route.query);
  }

  /** Leaving the mode: stop re-reading. */
  hide(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #refreshList(): Promise<void> {
    const box = byId("runs-list");
    try {
      this.#runs = await listRuns();
    } catch (e) {
      replace(box, el("p", { class: "form-error" }, `Could not list the runs: ${(e as Error).message}`));
      return;
    }
    this.#drawList(this.#runs);
  }

  #drawList(runs: RunSummary[]): void {
    const box = byId("runs-list");
    if (runs.length === 0) {
      replace(
        box,
        el(
          "p",
          { class: "empty" },
          "No runs in the server's runs folder yet. Train one with ",
          el("code", {}, "deno task train"),
          " or start the server with ",
          el("code", {}, "--runs DIR"),
          ".",
        ),
      );
      return;
    }
    const head = el(
      "tr",
      {},
      ...["Run", "Preset", "Student", "Teacher", "Rounds", "Steps", "Updated"].map((h) => el("th", {}, h)),
    );
    const rows = runs.map((r) => {
      const a = el("a", { href: inspectHash(r.name), class: "run-link" }, r.name);
      return el(
        "tr",
        { class: "run-row", "data-run": r.name },
        el("td", { class: "run-name" }, a),
        el("td", {}, r.preset ?? "–"),
        el("td", {}, r.model ?? "–"),
        el("td", {}, el("bdi", {}, ...untrustedText(r.teacher ?? "–"))),
        el("td", {}, `${r.roundsDone}${r.numRounds !== undefined ? ` / ${r.numRounds}` : ""}`),
        el("td", {}, fmt(r.metricsLines)),
        el("td", { class: "muted" }, r.updated ? new Date(r.updated).toLocaleString() : "–"),
      );
    });
    replace(
      box,
      el(
        "div",
        { class: "table-wrap" },
        el("table", { class: "runs" }, el("thead", {}, head), el("tbody", {}, ...rows)),
      ),
    );
    this.#markSelected();
  }

  #markSelected(): void {
    for (const tr of document.querySelectorAll<HTMLElement>(".run-row")) {
      tr.classList.toggle("selected", tr.dataset.run === this.#run?.name);
    }
  }

  #close(): void {
    this.hide();
    this.#run = undefined;
    byId("run-view").hidden = true;
    byId("run-missing").hidden = true;
    this.#markSelected();
  }

  /** Open run `name` on `query` (default: its latest round). */
  async open(name: string, query: PairQuery): Promise<void> {
    const token = ++this.#openToken;
    this.hide();
    // A run made since the list was read (a download unpacked, a new training) is found by reading it again.
    if (!this.#runs?.some((r) => r.name === name)) await this.#refreshList();
    if (token !== this.#openToken) return;
    const run = this.#runs?.find((r) => r.name === name);
    const missing = byId("run-missing");
    if (!run) {
      this.#run = undefined;
      byId("run-view").hidden = true;
      missing.hidden = false;
      replace(
        missing,
        el(
          "p",
          { class: "form-error" },
          "No run named ",
          el("b", {}, ...untrustedText(name)),
          " in the runs folder. ",
        ),
        el("a", { href: "#inspect" }, "Back to the list"),
      );
      this.#markSelected();
      return;
    }
    missing.hidden = true;
    this.#run = run;
    this.#records = [];
    this.#notes.clear();
    this.#markSelected();
    byId("run-view").hidden = false;
    byId("run-title").textContent = run.name;
    this.#drawRunSummary();
    replace(byId("run-config"), el("p", { class: "muted loading" }, "Loading the settings…"));
    replace(byId("run-rounds"), el("p", { class: "muted loading" }, "Loading the summary…"));
    byId("run-plots").classList.add("loading");
    this.#pairs.reset();
    this.#pairs.setQuery(query);
    this.#pairs.setAvailable(run.interactionRounds);
    await Promise.all([this.#loadConfig(run), this.#loadMetrics(run), this.#loadEval(run)]);
    if (token !== this.#openToken) return;
    this.#drawRounds();
    // The summary's pair columns need every round's pairs: read them behind the view.
    this.#pairs.loadAll((done, total) => {
      if (token !== this.#openToken) return;
      this.#drawRounds(done < total ? `pair columns: ${done} of ${total} rounds read` : undefined);
    }).catch((e) =>
      token === this.#openToken && this.#drawRounds(`pair columns incomplete: ${(e as Error).message}`)
    );
    if (run.numRounds === undefined || run.roundsDone < run.numRounds) {
      this.#timer = setInterval(() => void this.#poll(token), REFRESH_MS);
    }
  }

  #drawRunSummary(): void {
    const run = this.#run!;
    byId("run-summary").textContent = [
      run.preset && `preset ${run.preset}`,
      run.model,
      `${run.roundsDone}${run.numRounds !== undefined ? `/${run.numRounds}` : ""} rounds done`,
      `${fmt(run.metricsLines)} steps logged`,
      this.#timer !== undefined && "still training: re-read every 5 s",
      ...this.#notes.values(),
    ].filter((s) => s).join(" · ");
  }

  /** Re-read a run that is still training: new metrics, new rounds. */
  async #poll(token: number): Promise<void> {
    if (document.hidden || token !== this.#openToken) return;
    let runs: RunSummary[];
    try {
      runs = await listRuns();
    } catch {
      return; // the server went away for a moment; the next tick tries again
    }
    const now = runs.find((r) => r.name === this.#run?.name);
    const was = this.#run!;
    if (!now || token !== this.#openToken) return;
    this.#runs = runs;
    this.#run = now;
    const newRounds = now.interactionRounds.filter((r) => !was.interactionRounds.includes(r));
    if (now.metricsLines !== was.metricsLines) await this.#loadMetrics(now);
    if (now.hasEvalCurve !== was.hasEvalCurve || now.updated !== was.updated) await this.#loadEval(now);
    if (newRounds.length) this.#pairs.setAvailable(newRounds);
    // Rounds not read yet (new, or unreadable at the last tick) are read now, and rounds whose rewards
    // were still being written are read again.
    await this.#pairs.loadAll().catch(() => {});
    if (now.metricsLines !== was.metricsLines) {
      await this.#pairs.refreshRewards(now.rewardRounds).catch(() => {});
    }
    if (now.numRounds !== undefined && now.roundsDone >= now.numRounds) this.hide();
    if (token !== this.#openToken) return;
    this.#drawList(runs);
    this.#drawRunSummary();
    this.#drawRounds();
  }

  #setAddress(q: PairQuery, push: boolean): void {
    const hash = inspectHash(this.#run?.name, q);
    if (hash === location.hash) return;
    if (push) history.pushState(null, "", hash);
    else history.replaceState(null, "", hash);
  }

  async #loadConfig(run: RunSummary): Promise<void> {
    const grid = byId("run-config");
    let c: Record<string, unknown>;
    try {
      const v = JSON.parse(await getText(runUrl(run.name, "config.json")));
      if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
      c = v;
    } catch (e) {
      replace(grid, el("p", { class: "muted" }, `No readable config.json (${(e as Error).message}).`));
      return;
    }
    const obj = (v: unknown) => (typeof v === "object" && v !== null ? v : {}) as Record<string, unknown>;
    const a = obj(c.architecture), s = obj(c.student), t = obj(c.teacher), corpus = obj(c.corpus);
    const urls = Array.isArray(t.urls) ? t.urls.map(String).join(", ") : "";
    const items: Array<[string, unknown]> = [
      ["seed", c.seed],
      ["layers x width (heads)", `${a.nLayer} x ${a.nEmbd} (${a.nHead})`],
      ["vocabulary", c.vocabSize],
      ["corpus", corpus.kind === "embedded" ? `embedded, ${corpus.words} words` : corpus.path],
      ["datapoint / context", `${c.datapointLength} / ${c.contextLength} tokens`],
      ["datapoints per round", c.maxDatapointsPerRound === 0 ? "all" : c.maxDatapointsPerRound],
      ["student sampling", `T ${s.temperature}, top-p ${s.topP}, ${s.minTokens}-${s.maxTokens} tokens`],
      ["teacher", t.kind === "openai" ? `${t.model} (${t.mode}) at ${urls}` : t.kind],
      ["epochs LM / SimPO", `${c.nSftEpochs} / ${c.nPoEpochs}`],
      ["batch (pairs)", c.batchSize],
      ["lr, schedule", `${c.lr}, ${c.schedule} (${c.warmupSteps} warm-up of ${c.totalSteps})`],
      ["SimPO beta, gamma ratio, LM weight", `${c.simpoBeta}, ${c.simpoGammaRatio}, ${c.lmWeight}`],
    ];
    replace(
      grid,
      ...items.map(([k, v]) =>
        el(
          "div",
          {},
          el("dt", {}, k),
          el(
            "dd",
            {},
            el("bdi", {}, ...untrustedText(v === undefined || typeof v === "object" ? "–" : String(v))),
          ),
        )
      ),
    );
  }

  async #loadMetrics(run: RunSummary): Promise<void> {
    const box = byId("run-plots");
    try {
      const text = run.metricsLines === 0 ? "" : await getText(runUrl(run.name, "metrics.jsonl"));
      const { rows, bad, problems } = parseRecords(text, checkMetrics, "metrics.jsonl");
      this.#records = rows;
      this.#metrics.clear();
      for (const m of rows) this.#metrics.add(m);
      if (bad > 0) this.#notes.set("metrics", `${bad} metrics lines skipped (${problems[0]})`);
      else this.#notes.delete("metrics");
    } catch (e) {
      this.#notes.set("metrics", `metrics unreadable: ${(e as Error).message}`);
    } finally {
      box.classList.remove("loading");
      this.#drawRunSummary();
    }
  }

  /** A round's pairs, with their SimPO rewards when the run has the round's rewards file. */
  async #loadRound(round: number): Promise<ShownInteraction[]> {
    const run = this.#run!;
    const file = `interactions/round_${round}.jsonl`;
    const rewardsFile = `interactions/round_${round}.rewards.jsonl`;
    const [pairsText, rewardsText] = await Promise.all([
      getText(runUrl(run.name, file)),
      run.rewardRounds.includes(round) ? getText(runUrl(run.name, rewardsFile)) : undefined,
    ]);
    const pairs = parseRecords(pairsText, checkInteraction, file);
    if (pairs.bad > 0) {
      this.#notes.set(
        file,
        `${pairs.bad} unreadable pairs skipped in round ${round + 1} (${pairs.problems[0]})`,
      );
    }
    let rows = pairs.rows;
    if (rewardsText !== undefined) {
      const rewards = parseRecords(rewardsText, checkPairReward, rewardsFile);
      if (rewards.bad > 0) {
        this.#notes.set(
          rewardsFile,
          `${rewards.bad} unreadable pair rewards skipped in round ${round + 1} (${rewards.problems[0]})`,
        );
      }
      rows = withRewards(rows, rewards.rows);
    }
    this.#drawRunSummary();
    return rows;
  }

  async #loadEval(run: RunSummary): Promise<void> {
    const box = byId("run-eval");
    if (!run.hasEvalCurve) {
      replace(
        box,
        el(
          "p",
          { class: "muted" },
          "No eval results yet. ",
          el("code", {}, `deno task eval --run runs/${run.name}`),
          " writes them.",
        ),
      );
      return;
    }
    replace(box, el("p", { class: "muted loading" }, "Loading the eval results…"));
    let curve: LearningCurve;
    try {
      const v = JSON.parse(await getText(runUrl(run.name, "eval/learning_curve.json")));
      if (!Array.isArray(v?.metrics) || !Array.isArray(v?.rows)) throw new Error("expected {metrics, rows}");
      curve = v;
    } catch (e) {
      replace(
        box,
        el("p", { class: "form-error" }, `eval/learning_curve.json is unreadable: ${(e as Error).message}`),
      );
      return;
    }
    const rows = curve.rows.filter((r) => typeof r.words === "number" && Number.isFinite(r.words))
      .sort((a, b) => (a.words as number) - (b.words as number));
    const plots = curve.metrics.filter((m) => typeof m === "string").map((m) => {
      const p = new LinePlot(m, [{ key: m, label: m, color: "var(--c1)" }], {
        yLabel: metricUnit(m),
        xLabel: "words seen",
        empty: "no value at any checkpoint",
      });
      for (const r of rows) {
        p.add(r.words as number, { [m]: typeof r[m] === "number" ? (r[m] as number) : undefined });
      }
      return p.root;
    });
    replace(
      box,
      el(
        "p",
        { class: "hint" },
        `${rows.length} checkpoints, by words seen (from eval/learning_curve.json).`,
      ),
      el("div", { class: "plots" }, ...plots),
    );
  }

  /** The per-round table: step means from metrics.jsonl, pair means from the round files read so far. */
  #drawRounds(note?: string): void {
    const stats = new Map<number, PairStats[]>();
    for (const [r, entries] of this.#pairs.loaded) if (entries) stats.set(r, entries.map((e) => e.stats));
    const rows = summarizeRounds(this.#records, stats);
    const box = byId("run-rounds");
    if (rows.length === 0) {
      replace(box, el("p", { class: "muted" }, "No steps or pairs logged yet."));
      return;
    }
    const cols: Array<[string, string, (r: RoundSummary) => string]> = [
      ["round", "", (r) => String(r.round + 1)],
      ["steps", "optimisation steps in the round", (r) => String(r.steps)],
      ["LM loss", "mean over the LM phase's steps, nats per token", (r) => fmt(r.lmLoss)],
      ["chosen reward", "teacher; mean over the SimPO phase's steps", (r) => fmt(r.chosenReward)],
      ["rejected reward", "student; mean over the SimPO phase's steps", (r) => fmt(r.rejectedReward)],
      ["margin", "chosen − rejected, mean over the SimPO steps", (r) => fmt(r.margin)],
      [
        "win rate",
        "share of pairs with chosen > rejected, mean over the SimPO steps",
        (r) => r.winRate === undefined ? "–" : `${fmt(r.winRate * 100)}%`,
      ],
      [
        "word overlap",
        "mean over the round's pairs: shared words / the longer side",
        (r) => r.overlap === undefined ? "–" : `${fmt(r.overlap * 100)}%`,
      ],
      ["student words", "mean per pair", (r) => fmt(r.studentWords)],
      ["teacher words", "mean per pair", (r) => fmt(r.teacherWords)],
      ["pairs", "", (r) => (r.pairs === undefined ? "–" : String(r.pairs))],
    ];
    const table = el(
      "table",
      { class: "summary", id: "round-summary" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ...cols.map(([h, title]) => el("th", title ? { title, scope: "col" } : { scope: "col" }, h)),
        ),
      ),
      el(
        "tbody",
        {},
        ...rows.map((r) =>
          el("tr", { "data-round": r.round }, ...cols.map(([h, , f]) => el("td", { "data-col": h }, f(r))))
        ),
      ),
    );
    replace(
      box,
      el("div", { class: "table-wrap" }, table),
      note ? el("p", { class: "muted loading" }, note) : null,
    );
  }
}
