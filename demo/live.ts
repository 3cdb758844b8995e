/**
 * Live mode: the settings form, the controls, and everything the training worker reports while it
 * trains: progress of every phase with rates and ETAs (pauses excluded), the curves, every round's
 * pairs, the log, and the run folder for download.
 * @module
 */
/// <reference lib="dom" />
import * as Comlink from "comlink";
import type { InteractionRecord, MetricsRecord, Phase } from "../interaction/loop.ts";
import { TINY, type TrainConfig, validateTrainConfig } from "../interaction/config.ts";
import { append, byId, el, fmt, fmtSeconds, replace } from "./dom.ts";
import { MetricsView } from "./metrics_view.ts";
import { PairBrowser, saveFile } from "./pairs_view.ts";
import type { RunPosition, RunResult, TrainerApi, WorkerCallbacks } from "./protocol.ts";
import { checkInteraction } from "./records.ts";
import { tarArchive } from "./tar.ts";

/** Form field -> how it reads from and writes into the config. */
const NUMBER_FIELDS: Record<
  string,
  { get: (c: TrainConfig) => number; set: (c: TrainConfig, v: number) => void }
> = {
  seed: { get: (c) => c.seed, set: (c, v) => (c.seed = v) },
  numRounds: { get: (c) => c.numRounds, set: (c, v) => (c.numRounds = v) },
  maxDatapointsPerRound: {
    get: (c) => c.maxDatapointsPerRound,
    set: (c, v) => (c.maxDatapointsPerRound = v),
  },
  batchSize: { get: (c) => c.batchSize, set: (c, v) => (c.batchSize = v) },
  studentBatch: { get: (c) => c.student.batchSize, set: (c, v) => (c.student.batchSize = v) },
  nSftEpochs: { get: (c) => c.nSftEpochs, set: (c, v) => (c.nSftEpochs = v) },
  nPoEpochs: { get: (c) => c.nPoEpochs, set: (c, v) => (c.nPoEpochs = v) },
  lr: { get: (c) => c.lr, set: (c, v) => (c.lr = v) },
  nLayer: { get: (c) => c.architecture.nLayer, set: (c, v) => (c.architecture.nLayer = v) },
  nEmbd: { get: (c) => c.architecture.nEmbd, set: (c, v) => (c.architecture.nEmbd = v) },
  nHead: { get: (c) => c.architecture.nHead, set: (c, v) => (c.architecture.nHead = v) },
  contextLength: { get: (c) => c.contextLength, set: (c, v) => (c.contextLength = v) },
  // Continuation tokens: the student writes this many (one fewer at least, as the baseline's 255-256).
  continuation: {
    get: (c) => c.student.maxTokens,
    set: (c, v) => {
      c.student.maxTokens = v;
      c.student.minTokens = Math.max(0, v - 1);
    },
  },
  vocabSize: { get: (c) => c.vocabSize, set: (c, v) => (c.vocabSize = v) },
  corpusWords: {
    get: (c) => (c.corpus.kind === "embedded" ? c.corpus.words : 0),
    set: (c, v) => (c.corpus = { kind: "embedded", words: v }),
  },
};

/**
 * The form's starting values: the tiny preset, except that the student writes in batches of 16 instead
 * of all 64 continuations at once, so its turn reports progress, and pause and stop land, per batch.
 */
export const LIVE_DEFAULTS: TrainConfig = { ...TINY, student: { ...TINY.student, batchSize: 16 } };

/** Fill the form with `base`'s values. */
export function fillForm(form: HTMLFormElement, base: TrainConfig = LIVE_DEFAULTS): void {
  for (const [name, f] of Object.entries(NUMBER_FIELDS)) {
    (form.elements.namedItem(name) as HTMLInputElement).value = String(f.get(base));
  }
}

/**
 * The config the form describes: the tiny preset with the form's values, lengths made consistent
 * (datapoint = context + continuation; positions enough for BOS + context + continuation), validated.
 * Throws naming the field.
 */
export function configFromForm(form: HTMLFormElement): TrainConfig {
  const c = structuredClone(TINY);
  const value = (name: string) =>
    (form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement).value;
  for (const [name, f] of Object.entries(NUMBER_FIELDS)) {
    const raw = value(name).trim();
    const v = Number(raw);
    if (raw === "" || !Number.isFinite(v)) throw new Error(`${labelOf(form, name)}: enter a number`);
    f.set(c, v);
  }
  c.datapointLength = c.contextLength + c.student.maxTokens;
  c.architecture.nPositions = Math.max(
    TINY.architecture.nPositions,
    1 + c.contextLength + c.student.maxTokens,
  );
  c.outDir = "browser";
  if (value("teacherKind") === "openai") {
    c.teacher = {
      ...c.teacher,
      kind: "openai",
      urls: [value("teacherUrl").trim()],
      mode: value("teacherMode") as TrainConfig["teacher"]["mode"],
      model: value("teacherModel").trim(),
      // A person is watching: fail after a few tries instead of retrying for minutes.
      maxAttempts: 3,
      timeoutMs: 120_000,
      maxInFlightPerServer: 8,
    };
  }
  return validateTrainConfig(c);
}

function labelOf(form: HTMLFormElement, name: string): string {
  const input = form.elements.namedItem(name) as HTMLElement | null;
  return input?.closest("label")?.firstChild?.textContent?.trim() ?? name;
}

const PHASE_NAMES: Record<Phase, string> = {
  student: "Student writes",
  teacher: "Teacher corrects",
  sft: "LM training",
  po: "SimPO + LM",
};
const PHASE_ORDER: Phase[] = ["student", "teacher", "sft", "po"];

type RunState = "idle" | "running" | "pausing" | "paused" | "stopping" | "done" | "stopped" | "error";
const ACTIVE: RunState[] = ["running", "pausing", "paused", "stopping"];

/** One phase's progress in the current round; times on the active clock (pauses excluded). */
interface PhaseProgress {
  done: number;
  total: number;
  /** Active time when the phase started, and when it ended (undefined while it runs). */
  start: number;
  end?: number;
  /** Work already done when the phase started (resumed phases do not count toward the rate). */
  startDone: number;
  tokens?: number;
}

/** "ETA 12.3s" from the rate so far, or "" while there is none. */
function eta(done: number, total: number, elapsed: number): string {
  if (done <= 0 || elapsed <= 0 || done >= total) return "";
  return `ETA ${fmtSeconds(((total - done) * elapsed) / done)}`;
}

/** Live mode, bound to the page's elements. `api` is the worker. */
export class LiveMode {
  #api: Comlink.Remote<TrainerApi>;
  #form = byId<HTMLFormElement>("live-form");
  #metrics = new MetricsView();
  #pairs: PairBrowser;
  #log = byId("live-log");
  #state: RunState = "idle";
  #timer: ReturnType<typeof setInterval> | undefined;
  #round = 0;
  #numRounds = 1;
  #gpuProblem: string | undefined;
  #keepWeights = false;
  /** Active clock: start time, total paused, and when the current pause began. */
  #t0 = 0;
  #pausedMs = 0;
  #pausedAt: number | undefined;
  #phases = new Map<Phase, PhaseProgress>();
  /** Active seconds the last complete round took. */
  #lastRoundSeconds: number | undefined;
  #roundStart = 0;
  #steps = 0;
  /** Where the run stood when Pause or Stop was clicked. */
  #clickedAt: RunPosition | undefined;

  constructor(api: Comlink.Remote<TrainerApi>) {
    this.#api = api;
    fillForm(this.#form);
    byId("live-plots").appendChild(this.#metrics.root);
    this.#pairs = new PairBrowser({
      id: "live",
      empty: "The student's continuations and the teacher's corrections appear here, round by round.",
      exportName: () => "browser-run-pairs",
      noRewards: "the page does not show live rewards; Download run and open it in Inspect to sort by them.",
    });
    byId("live-pairs").appendChild(this.#pairs.root);
    replace(
      byId("phase-list"),
      ...PHASE_ORDER.map((p) =>
        el(
          "li",
          { class: "phase-row", "data-phase": p },
          el("span", { class: "phase-name" }, PHASE_NAMES[p]),
          el("div", { class: "bar" }, el("div", { class: "bar-fill" })),
          el("span", { class: "phase-detail" }, "–"),
        )
      ),
    );
    this.#form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.start();
    });
    this.#form.addEventListener("change", () => {
      const openai = (this.#form.elements.namedItem("teacherKind") as RadioNodeList).value === "openai";
      byId("teacher-server").hidden = !openai;
    });
    byId("btn-pause").addEventListener("click", () => this.#togglePause());
    byId("btn-download").addEventListener("click", () => void this.#download());
    byId("btn-stop").addEventListener("click", () => this.#stop());
    // Small screens: the settings start folded so the progress is in view.
    if (matchMedia("(max-width: 900px)").matches) byId<HTMLDetailsElement>("settings-details").open = false;
    addEventListener("beforeunload", (e) => {
      if (!ACTIVE.includes(this.#state)) return;
      // Leaving would throw the run away: ask first.
      e.preventDefault();
    });
  }

  /** Block training (no WebGPU, or limits too small) with the reason shown by Start. */
  disable(problem: string): void {
    this.#gpuProblem = problem;
    (byId<HTMLButtonElement>("btn-start")).disabled = true;
    byId("btn-start").title = problem;
    this.#status(`Live training is unavailable: ${problem}`);
  }

  /** Seconds of training so far, pauses excluded. */
  #active(): number {
    if (!this.#t0) return 0;
    const now = this.#pausedAt ?? performance.now();
    return (now - this.#t0 - this.#pausedMs) / 1000;
  }

  #setState(s: RunState): void {
    this.#state = s;
    const pill = byId("run-state");
    pill.textContent = s === "pausing" || s === "stopping" ? `${s}…` : s;
    pill.className = `pill ${s}`;
    pill.dataset.state = s;
    const active = ACTIVE.includes(s);
    byId<HTMLButtonElement>("btn-start").disabled = active || this.#gpuProblem !== undefined;
    byId<HTMLButtonElement>("btn-pause").disabled = !active || s === "stopping";
    byId<HTMLButtonElement>("btn-stop").disabled = !active || s === "stopping";
    byId("btn-pause").textContent = s === "paused" || s === "pausing" ? "Resume" : "Pause";
    for (const input of this.#form.querySelectorAll("input, select")) {
      (input as HTMLInputElement).disabled = active;
    }
  }

  #status(text: string): void {
    byId("status-line").textContent = text;
  }

  #addLog(line: string): void {
    const stamp = this.#t0 ? `[${fmtSeconds(this.#active()).padStart(6)}] ` : "";
    append(this.#log, `${stamp}${line}\n`);
    this.#log.scrollTop = this.#log.scrollHeight;
  }

  #bar(fill: HTMLElement, fraction: number): void {
    fill.style.width = `${(Math.max(0, Math.min(1, fraction)) * 100).toFixed(1)}%`;
  }

  /** Read the form and start a run in the worker. */
  async start(): Promise<void> {
    const errorBox = byId("form-error");
    let config: TrainConfig;
    try {
      config = configFromForm(this.#form);
      errorBox.hidden = true;
    } catch (e) {
      errorBox.textContent = (e as Error).message;
      errorBox.hidden = false;
      return;
    }
    this.#keepWeights = (this.#form.elements.namedItem("keepWeights") as HTMLInputElement).checked;
    this.#metrics.clear();
    this.#pairs.reset();
    replace(this.#log);
    this.#round = 0;
    this.#numRounds = config.numRounds;
    this.#t0 = performance.now();
    this.#pausedMs = 0;
    this.#pausedAt = undefined;
    this.#phases.clear();
    this.#lastRoundSeconds = undefined;
    this.#steps = 0;
    this.#clickedAt = undefined;
    this.#bar(byId("round-bar"), 0);
    byId("round-text").textContent = `0 / ${config.numRounds}`;
    this.#drawPhases();
    for (const id of ["stat-words", "stat-steps"]) byId(id).textContent = "0";
    for (const id of ["stat-tps", "stat-eta"]) byId(id).textContent = "–";
    byId<HTMLButtonElement>("btn-download").disabled = true;
    this.#setState("running");
    this.#status("Starting…");
    if (matchMedia("(max-width: 900px)").matches) byId<HTMLDetailsElement>("settings-details").open = false;
    this.#timer = setInterval(() => this.#tick(), 500);
    try {
      const result = await this.#api.start(
        config,
        Comlink.proxy(this.#callbacks()),
        { keepWeights: this.#keepWeights },
      );
      this.#finish(result);
    } catch (e) {
      this.#setState("error");
      const msg = (e as Error)?.message ?? String(e);
      this.#status(`Stopped by an error: ${msg}`);
      this.#addLog(`error: ${msg}`);
    } finally {
      clearInterval(this.#timer);
      this.#tick();
    }
  }

  /** Once a half second: the clock, the running phase's rate and ETA, the run's ETA. */
  #tick(): void {
    byId("stat-time").textContent = fmtSeconds(this.#active());
    this.#drawPhases();
  }

  /** Where a run stood, in words: the turn and count, or the step and phase. */
  #where(at: Pick<RunPosition, "round" | "phase" | "steps" | "sequences">): string {
    const round = `round ${at.round + 1}`;
    if (at.phase === "preparing") return "preparation";
    if (at.phase === "student") {
      const total = this.#phases.get("student")?.total;
      return `${round}, the student's turn at ${at.sequences}${total ? `/${total}` : ""} continuations`;
    }
    if (at.phase === "teacher") return `${round}, the teacher's turn`;
    return `${round}, step ${at.steps} (${PHASE_NAMES[at.phase]})`;
  }

  #currentPhase(): Phase | undefined {
    let cur: Phase | undefined;
    for (const p of PHASE_ORDER) if (this.#phases.has(p)) cur = p;
    return cur;
  }

  #position(): RunPosition {
    return {
      round: this.#round,
      phase: this.#currentPhase() ?? "preparing",
      steps: this.#steps,
      wordsSeen: 0,
      sequences: this.#phases.get("student")?.done ?? 0,
    };
  }

  #finish(r: RunResult): void {
    if (this.#pausedAt !== undefined) this.#pausedMs += performance.now() - this.#pausedAt;
    this.#pausedAt = undefined;
    this.#setState(r.status);
    const progress = byId("live-progress");
    progress.dataset.endSteps = String(r.at.steps);
    progress.dataset.endSequences = String(r.at.sequences);
    const summary =
      `${fmt(r.at.steps)} steps, ${fmt(r.at.wordsSeen)} words seen in ${fmtSeconds(r.seconds)}` +
      (r.pausedSeconds > 0 ? ` (plus ${fmtSeconds(r.pausedSeconds)} paused)` : "");
    if (r.status === "done") {
      this.#status(`Training finished: ${summary}.`);
      this.#bar(byId("round-bar"), 1);
      byId("round-text").textContent = `${this.#numRounds} / ${this.#numRounds}`;
      this.#addLog(`training finished (${r.at.steps} steps, ${r.at.wordsSeen} words)`);
    } else {
      const c = this.#clickedAt;
      const clicked = c ? ` Stop was clicked at ${this.#where(c)}.` : "";
      this.#status(`Training stopped at ${this.#where(r.at)}: ${summary}.${clicked}`);
      this.#addLog(`stopped at ${this.#where(r.at)}`);
    }
    this.#addLog(this.#keptLine());
  }

  /** What the tab holds of the run, for the log. */
  #keptLine(): string {
    return this.#keepWeights
      ? "this tab keeps the run's files and every checkpoint's weights: Download run saves them"
      : "this tab keeps the run's text files (config, tokenizer, metrics, interactions), no weights: " +
        "Download run saves those";
  }

  #callbacks(): WorkerCallbacks {
    return {
      onStatus: (line) => {
        this.#status(`${line}…`);
        this.#addLog(line);
      },
      onRound: (r, n) => {
        if (r > this.#round && this.#phases.size > 0) {
          this.#lastRoundSeconds = this.#active() - this.#roundStart;
        }
        this.#round = r;
        this.#numRounds = n;
        this.#roundStart = this.#active();
        this.#phases.clear();
        byId("round-text").textContent = `${r + 1} / ${n}`;
        this.#bar(byId("round-bar"), r / n);
        this.#pairs.setAvailable([r]);
        if (this.#state === "running") this.#status(`Round ${r + 1} of ${n}`);
        this.#drawPhases();
      },
      onPhase: (phase, r, done, total) => {
        const now = this.#active();
        for (const p of PHASE_ORDER.slice(0, PHASE_ORDER.indexOf(phase))) {
          const prev = this.#phases.get(p);
          if (prev && prev.end === undefined) prev.end = now;
        }
        const cur = this.#phases.get(phase);
        if (cur) {
          cur.done = done;
          cur.total = total;
          if (done >= total && cur.end === undefined) cur.end = now;
        } else {
          this.#phases.set(phase, {
            done,
            total,
            start: now,
            startDone: done,
            end: done >= total ? now : undefined,
          });
        }
        const f = total > 0 ? done / total : 0;
        this.#bar(
          byId("round-bar"),
          (r + (PHASE_ORDER.indexOf(phase) + f) / PHASE_ORDER.length) / this.#numRounds,
        );
        if (this.#state === "running") {
          this.#status(`Round ${r + 1} of ${this.#numRounds}: ${PHASE_NAMES[phase]}`);
        }
        this.#drawPhases();
      },
      onStudentTokens: (round, _sequences, tokens) => {
        const p = this.#phases.get("student");
        if (p && round === this.#round) p.tokens = tokens;
        this.#drawPhases();
      },
      onInteraction: (rec: InteractionRecord) => {
        const shown = checkInteraction(rec);
        if (typeof shown !== "string") this.#pairs.addPair(shown);
      },
      onMetrics: (m: MetricsRecord) => {
        this.#steps = m.step;
        this.#metrics.add(m);
        byId("stat-words").textContent = fmt(m.wordsSeen);
        byId("stat-steps").textContent = fmt(m.step);
        byId("stat-tps").textContent = fmt(m.tokensPerSec);
        byId<HTMLButtonElement>("btn-download").disabled = false;
      },
      onCheckpoint: (name, words) => {
        this.#addLog(
          this.#keepWeights
            ? `checkpoint ${name} at ${words} words: weights kept in this tab`
            : `checkpoint ${name} at ${words} words: weights not kept (tick "Keep checkpoint weights" to keep them)`,
        );
      },
      onLog: (line) => this.#addLog(line),
      flush: () => {},
      onHalted: (at) => {
        if (this.#state !== "pausing") return;
        this.#pausedAt = performance.now();
        this.#setState("paused");
        const progress = byId("live-progress");
        progress.dataset.haltSteps = String(at.steps);
        progress.dataset.haltSequences = String(at.sequences);
        const c = this.#clickedAt;
        this.#status(
          `Paused at ${this.#where(at)}` +
            (c ? ` (clicked at ${this.#where(c)})` : "") + ". Resume to go on.",
        );
        this.#addLog(`paused at ${this.#where(at)}`);
      },
    };
  }

  /** The phase rows: bar, counts, rate, ETA or duration; and the run's ETA. */
  #drawPhases(): void {
    const now = this.#active();
    for (const row of byId("phase-list").querySelectorAll<HTMLElement>(".phase-row")) {
      const phase = row.dataset.phase as Phase;
      const p = this.#phases.get(phase);
      const fill = row.querySelector<HTMLElement>(".bar-fill")!;
      const detail = row.querySelector<HTMLElement>(".phase-detail")!;
      row.classList.toggle("current", p !== undefined && p.end === undefined);
      row.classList.toggle("finished", p?.end !== undefined);
      if (!p) {
        this.#bar(fill, 0);
        detail.textContent = "–";
        continue;
      }
      this.#bar(fill, p.total > 0 ? p.done / p.total : 1);
      const secs = (p.end ?? now) - p.start;
      const unit = phase === "student" ? "continuations" : phase === "teacher" ? "answers" : "steps";
      const parts = [`${p.done}/${p.total} ${unit}`];
      if (phase === "student" && p.tokens !== undefined) {
        parts.push(`${fmt(p.tokens)} tokens`);
        if (secs > 0) parts.push(`${fmt(p.tokens / secs)} tokens/s`);
      }
      if (p.end !== undefined) parts.push(`took ${fmtSeconds(secs)}`);
      else {
        const e = eta(p.done - p.startDone, p.total - p.startDone, secs);
        if (e) parts.push(e);
        else if (this.#state === "running") parts.push("…");
      }
      detail.textContent = parts.join(" · ");
    }
    byId("stat-eta").textContent = this.#runEta(now);
  }

  /**
   * The run's remaining time: the rest of this round (phases not started yet by the last round's
   * share), then the remaining rounds at the last round's duration. Unknown until a round has ended.
   */
  #runEta(now: number): string {
    if (!ACTIVE.includes(this.#state)) return "–";
    if (this.#lastRoundSeconds === undefined) {
      return this.#numRounds === 1 ? this.#roundEtaOnly(now) : "after round 1";
    }
    const inRound = now - this.#roundStart;
    const rest = Math.max(0, this.#lastRoundSeconds - inRound);
    return fmtSeconds(rest + (this.#numRounds - this.#round - 1) * this.#lastRoundSeconds);
  }

  /** With one round there is no earlier round to go by: the current phase's ETA, said as such. */
  #roundEtaOnly(now: number): string {
    const cur = this.#currentPhase();
    const p = cur && this.#phases.get(cur);
    if (!p || p.end !== undefined) return "–";
    const e = eta(p.done - p.startDone, p.total - p.startDone, now - p.start);
    return e ? `${e.slice(4)} (this phase)` : "–";
  }

  #togglePause(): void {
    if (this.#state === "running") {
      this.#clickedAt = this.#position();
      const progress = byId("live-progress");
      progress.dataset.pauseSteps = String(this.#clickedAt.steps);
      progress.dataset.pauseSequences = String(this.#clickedAt.sequences);
      void this.#api.pause();
      this.#setState("pausing");
      this.#status("Pausing: the run halts before its next student batch or optimisation step…");
      this.#addLog(`pause requested at ${this.#where(this.#clickedAt)}`);
    } else if (this.#state === "pausing" || this.#state === "paused") {
      void this.#api.resume();
      if (this.#pausedAt !== undefined) this.#pausedMs += performance.now() - this.#pausedAt;
      this.#pausedAt = undefined;
      this.#setState("running");
      this.#status("Resumed.");
      this.#addLog("resumed");
    }
  }

  /** Save the run folder as a tar archive that unpacks into what `deno task train` writes. */
  async #download(): Promise<void> {
    const files = await this.#api.files();
    const d = new Date();
    const pad = (n: number) => String(n).padStart(2, "0");
    const name = `browser-run-${d.getFullYear()}${pad(d.getMonth() + 1)}${pad(d.getDate())}-` +
      `${pad(d.getHours())}${pad(d.getMinutes())}${pad(d.getSeconds())}`;
    const tar = tarArchive(new Map(Object.entries(files).map(([k, v]) => [`${name}/${k}`, v])), d.getTime());
    saveFile(`${name}.tar`, new Blob([tar], { type: "application/x-tar" }));
    const mb = (tar.length / 1e6).toFixed(2);
    this.#addLog(
      `saved ${name}.tar (${Object.keys(files).length} files, ${mb} MB): tar xf ${name}.tar -C runs/ ` +
        `puts it in Inspect's list`,
    );
  }

  #stop(): void {
    this.#clickedAt = this.#position();
    const progress = byId("live-progress");
    progress.dataset.stopSteps = String(this.#clickedAt.steps);
    progress.dataset.stopSequences = String(this.#clickedAt.sequences);
    void this.#api.stop();
    if (this.#pausedAt !== undefined) this.#pausedMs += performance.now() - this.#pausedAt;
    this.#pausedAt = undefined;
    this.#setState("stopping");
    this.#status("Stopping: the run ends before its next student batch or optimisation step…");
    this.#addLog(`stop requested at ${this.#where(this.#clickedAt)}`);
  }
}
