/**
 * Inspect mode: the runs the server lists, and for one run its settings, the training curves over the
 * whole run and every interaction of every round, filtered by text, with the student/teacher diff.
 * @module
 */
/// <reference lib="dom" />
import type { MetricsRecord } from "../interaction/loop.ts";
import type { RunSummary } from "./runs.ts";
import { byId, el, fmt, replace } from "./dom.ts";
import { interactionCard, matches, type ShownInteraction } from "./interaction_view.ts";
import { MetricsView } from "./metrics_view.ts";

/** Interactions added to the list per "Show more". */
const PAGE = 40;

/** Parse JSON lines, skipping blank lines; bad lines are counted, not fatal (a run may be writing). */
export function parseJsonl<T>(text: string): { rows: T[]; bad: number } {
  const rows: T[] = [];
  let bad = 0;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      rows.push(JSON.parse(line) as T);
    } catch {
      bad++;
    }
  }
  return { rows, bad };
}

async function getText(url: string): Promise<string> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${(await res.text()).trim()}`);
  return await res.text();
}

function runUrl(name: string, file: string): string {
  return `/api/runs/${encodeURIComponent(name)}/${file}`;
}

/** Inspect mode, bound to the page's elements. */
export class InspectMode {
  #metrics = new MetricsView();
  #run: RunSummary | undefined;
  #rows: ShownInteraction[] = [];
  #filtered: ShownInteraction[] = [];
  #shown = 0;
  #loaded = false;
  #roundToken = 0;

  constructor() {
    byId("run-plots").appendChild(this.#metrics.root);
    byId("btn-refresh").addEventListener("click", () => void this.loadRuns());
    let debounce: ReturnType<typeof setTimeout> | undefined;
    byId("inter-filter").addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => this.#applyFilter(), 120);
    });
    byId("btn-more").addEventListener("click", () => this.#showMore());
  }

  /** Load the run list the first time the mode is shown. */
  async show(openName?: string): Promise<void> {
    if (!this.#loaded) await this.loadRuns();
    if (openName && openName !== this.#run?.name) await this.open(openName);
  }

  /** Fetch and draw the run list. */
  async loadRuns(): Promise<void> {
    this.#loaded = true;
    const box = byId("runs-list");
    let runs: RunSummary[];
    try {
      runs = (JSON.parse(await getText("/api/runs")) as { runs: RunSummary[] }).runs;
    } catch (e) {
      replace(box, el("p", { class: "form-error" }, `Could not list the runs: ${(e as Error).message}`));
      return;
    }
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
      const tr = el(
        "tr",
        { class: "run-row", tabindex: 0, "data-run": r.name },
        el("td", { class: "run-name" }, r.name),
        el("td", {}, r.preset ?? "–"),
        el("td", {}, r.model ?? "–"),
        el("td", {}, r.teacher ?? "–"),
        el("td", {}, `${r.roundsDone}${r.numRounds !== undefined ? ` / ${r.numRounds}` : ""}`),
        el("td", {}, fmt(r.metricsLines)),
        el("td", { class: "muted" }, r.updated ? new Date(r.updated).toLocaleString() : "–"),
      );
      const open = () => {
        location.hash = `inspect/${encodeURIComponent(r.name)}`;
      };
      tr.addEventListener("click", open);
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter") open();
      });
      return tr;
    });
    replace(box, el("table", { class: "runs" }, el("thead", {}, head), el("tbody", {}, ...rows)));
    if (this.#run) this.#markSelected(this.#run.name);
  }

  #markSelected(name: string): void {
    for (const tr of document.querySelectorAll<HTMLElement>(".run-row")) {
      tr.classList.toggle("selected", tr.dataset.run === name);
    }
  }

  /** Open run `name`: settings, curves, and its last round's interactions. */
  async open(name: string): Promise<void> {
    const list = (JSON.parse(await getText("/api/runs")) as { runs: RunSummary[] }).runs;
    const run = list.find((r) => r.name === name);
    const view = byId("run-view");
    if (!run) {
      view.hidden = true;
      replace(
        byId("runs-list"),
        el("p", { class: "form-error" }, `No run named ${name} in the runs folder.`),
      );
      return;
    }
    this.#run = run;
    this.#markSelected(name);
    view.hidden = false;
    byId("run-title").textContent = run.name;
    byId("run-summary").textContent = [
      run.preset && `preset ${run.preset}`,
      run.model,
      `${run.roundsDone}${run.numRounds !== undefined ? `/${run.numRounds}` : ""} rounds done`,
      `${fmt(run.metricsLines)} steps logged`,
    ].filter((s) => s).join(" · ");
    await Promise.all([this.#loadConfig(run), this.#loadMetrics(run)]);
    const picker = byId("round-picker");
    replace(
      picker,
      ...run.interactionRounds.map((r) => {
        const b = el(
          "button",
          { type: "button", class: "round-btn", role: "tab", "data-round": r },
          `Round ${r + 1}`,
        );
        b.addEventListener("click", () => void this.#loadRound(r));
        return b;
      }),
    );
    if (run.interactionRounds.length === 0) {
      replace(
        byId("run-interactions"),
        el("p", { class: "empty" }, "This run has no interaction files yet."),
      );
      byId("inter-count").textContent = "";
      byId("btn-more").hidden = true;
    } else {
      await this.#loadRound(run.interactionRounds[0]);
    }
  }

  async #loadConfig(run: RunSummary): Promise<void> {
    const grid = byId("run-config");
    replace(grid);
    let c: Record<string, unknown>;
    try {
      c = JSON.parse(await getText(runUrl(run.name, "config.json")));
    } catch (e) {
      replace(grid, el("p", { class: "muted" }, `No readable config.json (${(e as Error).message}).`));
      return;
    }
    const a = (c.architecture ?? {}) as Record<string, unknown>;
    const s = (c.student ?? {}) as Record<string, unknown>;
    const t = (c.teacher ?? {}) as Record<string, unknown>;
    const corpus = (c.corpus ?? {}) as Record<string, unknown>;
    const items: Array<[string, unknown]> = [
      ["seed", c.seed],
      ["layers x width (heads)", `${a.nLayer} x ${a.nEmbd} (${a.nHead})`],
      ["vocabulary", c.vocabSize],
      ["corpus", corpus.kind === "embedded" ? `embedded, ${corpus.words} words` : corpus.path],
      ["datapoint / context", `${c.datapointLength} / ${c.contextLength} tokens`],
      ["datapoints per round", c.maxDatapointsPerRound === 0 ? "all" : c.maxDatapointsPerRound],
      ["student sampling", `T ${s.temperature}, top-p ${s.topP}, ${s.minTokens}-${s.maxTokens} tokens`],
      [
        "teacher",
        t.kind === "openai"
          ? `${t.model} (${t.mode}) at ${(t.urls as string[] | undefined)?.join(", ")}`
          : t.kind,
      ],
      ["epochs LM / SimPO", `${c.nSftEpochs} / ${c.nPoEpochs}`],
      ["batch (pairs)", c.batchSize],
      ["lr, schedule", `${c.lr}, ${c.schedule} (${c.warmupSteps} warm-up of ${c.totalSteps})`],
      ["SimPO beta, gamma ratio, LM weight", `${c.simpoBeta}, ${c.simpoGammaRatio}, ${c.lmWeight}`],
    ];
    for (const [k, v] of items) {
      grid.appendChild(el("div", {}, el("dt", {}, k), el("dd", {}, v === undefined ? "–" : String(v))));
    }
  }

  async #loadMetrics(run: RunSummary): Promise<void> {
    this.#metrics.clear();
    if (run.metricsLines === 0) return;
    try {
      const { rows } = parseJsonl<MetricsRecord>(await getText(runUrl(run.name, "metrics.jsonl")));
      for (const m of rows) this.#metrics.add(m);
    } catch (e) {
      byId("run-summary").textContent += ` · metrics unreadable: ${(e as Error).message}`;
    }
  }

  async #loadRound(round: number): Promise<void> {
    const run = this.#run!;
    const token = ++this.#roundToken;
    for (const b of document.querySelectorAll<HTMLElement>(".round-btn")) {
      const on = Number(b.dataset.round) === round;
      b.classList.toggle("active", on);
      b.setAttribute("aria-selected", String(on));
    }
    const box = byId("run-interactions");
    replace(box, el("p", { class: "empty" }, `Loading round ${round + 1}…`));
    let rows: ShownInteraction[], bad: number;
    try {
      ({ rows, bad } = parseJsonl<ShownInteraction>(
        await getText(runUrl(run.name, `interactions/round_${round}.jsonl`)),
      ));
    } catch (e) {
      replace(box, el("p", { class: "form-error" }, (e as Error).message));
      return;
    }
    // A later click won the race: drop this answer.
    if (token !== this.#roundToken) return;
    // Keep what the page shows; the token arrays of long runs would only take memory.
    this.#rows = rows.map((r) => ({
      round: r.round,
      index: r.index,
      source: r.source,
      context: String(r.context ?? ""),
      student: String(r.student ?? ""),
      teacher: String(r.teacher ?? ""),
    }));
    if (bad > 0) byId("run-summary").textContent += ` · ${bad} unreadable lines in round ${round + 1}`;
    this.#applyFilter();
  }

  #applyFilter(): void {
    const q = byId<HTMLInputElement>("inter-filter").value;
    this.#filtered = this.#rows.filter((r) => matches(r, q));
    this.#shown = 0;
    replace(byId("run-interactions"));
    if (this.#filtered.length === 0) {
      byId("run-interactions").appendChild(
        el(
          "p",
          { class: "empty" },
          this.#rows.length === 0 ? "This round has no interactions." : "Nothing matches the filter.",
        ),
      );
    }
    this.#showMore();
  }

  #showMore(): void {
    const box = byId("run-interactions");
    const next = this.#filtered.slice(this.#shown, this.#shown + PAGE);
    for (const r of next) box.appendChild(interactionCard(r));
    this.#shown += next.length;
    const more = byId<HTMLButtonElement>("btn-more");
    more.hidden = this.#shown >= this.#filtered.length;
    more.textContent = `Show more (${this.#filtered.length - this.#shown} left)`;
    byId("inter-count").textContent = `${this.#filtered.length} of ${this.#rows.length} interactions` +
      (this.#shown < this.#filtered.length ? `, ${this.#shown} shown` : "");
  }
}
