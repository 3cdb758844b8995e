/**
 * Live mode: the settings form, the controls, and everything the training worker reports while it
 * trains (progress, curves, the current round's interactions, the log).
 * @module
 */
/// <reference lib="dom" />
import * as Comlink from "comlink";
import type { InteractionRecord, MetricsRecord, Phase } from "../interaction/loop.ts";
import { TINY, type TrainConfig, validateTrainConfig } from "../interaction/config.ts";
import { append, byId, el, fmt, fmtSeconds, replace } from "./dom.ts";
import { interactionCard } from "./interaction_view.ts";
import { MetricsView } from "./metrics_view.ts";
import type { RunResult, TrainerApi, WorkerCallbacks } from "./protocol.ts";

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

/** Fill the form with the tiny preset's values (the one source of defaults). */
export function fillForm(form: HTMLFormElement, base: TrainConfig = TINY): void {
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
  student: "student writes",
  teacher: "teacher corrects",
  sft: "LM training",
  po: "SimPO + LM training",
};
const PHASE_ORDER: Phase[] = ["student", "teacher", "sft", "po"];

type RunState = "idle" | "running" | "paused" | "done" | "stopped" | "error";

/** Live mode, bound to the page's elements. `api` is the worker; `gpuOk` false disables Start. */
export class LiveMode {
  #api: Comlink.Remote<TrainerApi>;
  #form = byId<HTMLFormElement>("live-form");
  #metrics = new MetricsView();
  #log = byId("live-log");
  #inter = byId("live-interactions");
  #state: RunState = "idle";
  #t0 = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #round = 0;
  #numRounds = 1;
  #gpuProblem: string | undefined;

  constructor(api: Comlink.Remote<TrainerApi>) {
    this.#api = api;
    fillForm(this.#form);
    byId("live-plots").appendChild(this.#metrics.root);
    this.#form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.start();
    });
    this.#form.addEventListener("change", () => {
      const openai = (this.#form.elements.namedItem("teacherKind") as RadioNodeList).value === "openai";
      byId("teacher-server").hidden = !openai;
    });
    byId("btn-pause").addEventListener("click", () => this.#togglePause());
    byId("btn-download").addEventListener("click", () => this.#download());
    byId("btn-stop").addEventListener("click", () => this.#stop());
  }

  /** Block training (no WebGPU, or limits too small) with the reason shown by Start. */
  disable(problem: string): void {
    this.#gpuProblem = problem;
    (byId<HTMLButtonElement>("btn-start")).disabled = true;
    byId("btn-start").title = problem;
    this.#status(`Live training is unavailable: ${problem}`);
  }

  #setState(s: RunState): void {
    this.#state = s;
    const pill = byId("run-state");
    pill.textContent = s;
    pill.className = `pill ${s}`;
    const active = s === "running" || s === "paused";
    byId<HTMLButtonElement>("btn-start").disabled = active || this.#gpuProblem !== undefined;
    byId<HTMLButtonElement>("btn-pause").disabled = !active;
    byId<HTMLButtonElement>("btn-stop").disabled = !active;
    byId("btn-pause").textContent = s === "paused" ? "Resume" : "Pause";
    for (const input of this.#form.querySelectorAll("input, select")) {
      (input as HTMLInputElement).disabled = active;
    }
  }

  #status(text: string): void {
    byId("status-line").textContent = text;
  }

  #addLog(line: string): void {
    const stamp = this.#t0 ? `[${fmtSeconds((performance.now() - this.#t0) / 1000).padStart(6)}] ` : "";
    append(this.#log, `${stamp}${line}\n`);
    this.#log.scrollTop = this.#log.scrollHeight;
  }

  #bar(id: string, fraction: number): void {
    byId(id).style.width = `${(Math.max(0, Math.min(1, fraction)) * 100).toFixed(1)}%`;
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
    this.#metrics.clear();
    replace(this.#log);
    replace(this.#inter, el("p", { class: "empty" }, "Waiting for the first round's interactions…"));
    this.#round = 0;
    this.#numRounds = config.numRounds;
    this.#t0 = performance.now();
    this.#bar("round-bar", 0);
    this.#bar("phase-bar", 0);
    byId("round-text").textContent = `0 / ${config.numRounds}`;
    byId("phase-text").textContent = "preparing";
    for (const id of ["stat-words", "stat-steps"]) byId(id).textContent = "0";
    byId("stat-tps").textContent = "–";
    byId<HTMLButtonElement>("btn-download").disabled = true;
    this.#setState("running");
    this.#status("Starting…");
    this.#timer = setInterval(() => {
      byId("stat-time").textContent = fmtSeconds((performance.now() - this.#t0) / 1000);
    }, 500);
    try {
      const result = await this.#api.start(config, Comlink.proxy(this.#callbacks()));
      this.#finish(result);
    } catch (e) {
      this.#setState("error");
      const msg = (e as Error)?.message ?? String(e);
      this.#status(`Stopped by an error: ${msg}`);
      this.#addLog(`error: ${msg}`);
    } finally {
      clearInterval(this.#timer);
      byId("stat-time").textContent = fmtSeconds((performance.now() - this.#t0) / 1000);
    }
  }

  #finish(r: RunResult): void {
    this.#setState(r.status);
    const what = r.status === "done" ? "Training finished" : "Training stopped";
    this.#status(
      `${what}: ${fmt(r.steps)} steps, ${fmt(r.wordsSeen)} words seen in ${fmtSeconds(r.seconds)}.`,
    );
    if (r.status === "done") {
      this.#bar("round-bar", 1);
      byId("round-text").textContent = `${this.#numRounds} / ${this.#numRounds}`;
    }
    this.#addLog(`${what.toLowerCase()} (${r.steps} steps, ${r.wordsSeen} words)`);
  }

  #callbacks(): WorkerCallbacks {
    return {
      onStatus: (line) => {
        this.#status(`${line}…`);
        this.#addLog(line);
      },
      onRound: (r, n) => {
        this.#round = r;
        this.#numRounds = n;
        byId("round-text").textContent = `${r + 1} / ${n}`;
        this.#bar("round-bar", r / n);
        // The student reports progress per sampling batch; until the first one, say what is going on.
        this.#bar("phase-bar", 0);
        byId("phase-text").textContent = PHASE_NAMES.student;
        byId("live-inter-title").textContent = `Interactions · round ${r + 1}`;
        replace(this.#inter, el("p", { class: "empty" }, "The student is writing its continuations…"));
        this.#status(`Round ${r + 1} of ${n}`);
      },
      onPhase: (phase, r, done, total) => {
        const f = total > 0 ? done / total : 0;
        this.#bar("phase-bar", f);
        byId("phase-text").textContent = `${PHASE_NAMES[phase]} ${done}/${total}`;
        this.#bar("round-bar", (r + (PHASE_ORDER.indexOf(phase) + f) / PHASE_ORDER.length) / this.#numRounds);
        if (this.#state === "running") {
          this.#status(`Round ${r + 1} of ${this.#numRounds}: ${PHASE_NAMES[phase]}`);
        }
      },
      onInteraction: (rec: InteractionRecord) => {
        if (rec.round !== this.#round) return;
        this.#inter.querySelector(".empty")?.remove();
        this.#inter.appendChild(interactionCard(rec));
      },
      onMetrics: (m: MetricsRecord) => {
        this.#metrics.add(m);
        byId("stat-words").textContent = fmt(m.wordsSeen);
        byId("stat-steps").textContent = fmt(m.step);
        byId("stat-tps").textContent = fmt(m.tokensPerSec);
        byId<HTMLButtonElement>("btn-download").disabled = false;
      },
      // The loop's own log line reports checkpoints; the browser keeps no weights (see memory_storage.ts).
      onCheckpoint: () => {},
      onLog: (line) => this.#addLog(line),
    };
  }

  #togglePause(): void {
    if (this.#state === "running") {
      void this.#api.pause();
      this.#setState("paused");
      this.#status("Paused: the run halts before its next optimisation step. Resume to go on.");
      this.#addLog("paused");
    } else if (this.#state === "paused") {
      void this.#api.resume();
      this.#setState("running");
      this.#status("Resumed.");
      this.#addLog("resumed");
    }
  }

  /** Save the run's text files (config, metrics, interactions) as one JSON file. */
  async #download(): Promise<void> {
    const files = await this.#api.files();
    const blob = new Blob([JSON.stringify(files, null, 1)], { type: "application/json" });
    const a = el("a", { href: URL.createObjectURL(blob), download: "browser-run.json" });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  }

  #stop(): void {
    void this.#api.stop();
    this.#status("Stopping…");
  }
}
