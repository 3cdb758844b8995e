/**
 * The demo's training worker (a module Web Worker): the project's own round loop
 * (`interaction/loop.ts`, `interaction/prepare.ts`) on the browser's WebGPU, behind comlink. The page
 * calls `start(config, callbacks, options)`, `pause()`, `resume()`, `stop()`; every loop event goes back
 * through the callbacks proxy the page lent, plus the student's token counts and the moment a pause
 * takes effect. Pause and stop act before the next student batch or optimisation step.
 * @module
 */
import * as Comlink from "comlink";
import { Gpu } from "../shaders/gpu.ts";
import { prepareRun } from "../interaction/prepare.ts";
import { type LoopEvents, runInteraction } from "../interaction/loop.ts";
import { type TrainConfig, validateTrainConfig } from "../interaction/config.ts";
import { createTeacher, probeTeachers, type TeacherHost } from "../interaction/teacher_setup.ts";
import { parseJsonLines } from "../model/jsonl.ts";
import { MemoryStorage } from "./memory_storage.ts";
import {
  FETCH_BLOCKED,
  probeWebGpu,
  type RunPosition,
  type RunResult,
  type StartOptions,
  type TrainerApi,
  type WorkerCallbacks,
} from "./protocol.ts";

/** A fetch whose network failures (TypeError: CORS refusal, connection refused) explain themselves. */
function explainedFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  return fetch(input, init).catch((e) => {
    if (e instanceof TypeError) throw new TypeError(`${FETCH_BLOCKED} (${e.message})`);
    throw e;
  });
}

/** What the browser offers the teacher: no files, no environment, a fetch that explains refusals. */
function browserHost(log: (line: string) => void): TeacherHost {
  return { name: "the browser demo", fetch: explainedFetch, log, urlSetting: "the teacher's Server URL" };
}

/** The worker's state between calls. */
class TrainingWorker implements TrainerApi {
  #gpu: Promise<Gpu> | undefined;
  #abort: AbortController | undefined;
  #gate: { promise: Promise<void>; open: () => void } | undefined;
  #storage: MemoryStorage | undefined;

  probe() {
    return probeWebGpu(navigator.gpu);
  }

  async start(config: TrainConfig, cb: WorkerCallbacks, options: StartOptions): Promise<RunResult> {
    if (this.#abort) throw new Error("a run is already going; stop it first");
    const abort = this.#abort = new AbortController();
    this.#gate = undefined;
    const at: RunPosition = { round: 0, phase: "preparing", steps: 0, wordsSeen: 0, sequences: 0 };
    let studentTokens = 0;
    // Callbacks are remote calls: fire and forget, but never lose an error silently.
    const send = <A extends unknown[]>(f: (...a: A) => unknown) => (...a: A) => {
      Promise.resolve(f(...a)).catch((e) => console.error("demo worker: page callback failed:", e));
    };
    // The student's batches are appended to round_N.student.jsonl one line per continuation: count
    // their tokens there (the loop's events count sequences only).
    const onAppend = (path: string, text: string) => {
      if (!/^interactions\/round_\d+\.student\.jsonl$/.test(path)) return;
      const lines = parseJsonLines<{ tokens: number[] }>(text, path);
      for (const l of lines) studentTokens += l.value.tokens.length;
      send(cb.onStudentTokens)(at.round, at.sequences + lines.length, studentTokens);
    };
    const storage = this.#storage = new MemoryStorage({ keepWeights: options.keepWeights, onAppend });
    const t0 = performance.now();
    let pausedMs = 0;
    const result = (status: RunResult["status"]): RunResult => ({
      status,
      at: { ...at },
      seconds: (performance.now() - t0 - pausedMs) / 1000,
      pausedSeconds: pausedMs / 1000,
    });
    const events: LoopEvents = {
      onRound: send((r, n) => {
        at.round = r;
        at.sequences = 0;
        studentTokens = 0;
        return cb.onRound(r, n);
      }),
      onPhase: send((p, r, d, t) => {
        at.phase = p;
        if (p === "student") at.sequences = d;
        return cb.onPhase(p, r, d, t);
      }),
      onInteraction: send((rec) => cb.onInteraction(rec)),
      onMetrics: send((m) => {
        at.steps = m.step;
        at.wordsSeen = m.wordsSeen;
        return cb.onMetrics(m);
      }),
      onCheckpoint: send((name, words) => cb.onCheckpoint(name, words)),
      // The page writes its own line per checkpoint (onCheckpoint), saying what this tab keeps of it.
      onLog: send((line) => /^checkpoint \S+ at \d+ words$/.test(line) ? undefined : cb.onLog(line)),
    };
    // Between student batches and before every optimisation step: halt while paused, end when stopped.
    const pause = async () => {
      const gate = this.#gate;
      if (gate) {
        send(cb.onHalted)({ ...at });
        const p0 = performance.now();
        await gate.promise;
        pausedMs += performance.now() - p0;
      }
      if (abort.signal.aborted) throw new DOMException("training stopped", "AbortError");
    };
    const status = send((line: string) => cb.onStatus(line));
    try {
      validateTrainConfig(config);
      const probe = await this.probe();
      if (!probe.ok) throw new Error(probe.problem);
      if (config.teacher.kind === "openai") {
        status(`checking the teacher at ${config.teacher.urls.join(", ")}`);
        await probeTeachers(config.teacher.urls, browserHost(events.onLog!));
      }
      await storage.writeText("config.json", JSON.stringify(config, null, 2) + "\n");
      status(config.tokenizer === "train" ? "generating the corpus and training the tokenizer" : "preparing");
      const inputs = await prepareRun(config, (c) => createTeacher(c.teacher, browserHost(events.onLog!)), {
        onLog: events.onLog,
      });
      await storage.writeText("tokenizer.json", inputs.tokenizer.toJSON());
      status(`starting WebGPU (${probe.adapter})`);
      this.#gpu ??= Gpu.create();
      const gpu = await this.#gpu;
      status(
        `student: ${inputs.modelConfig.nLayer} layers, width ${inputs.modelConfig.nEmbd}, vocabulary ` +
          `${inputs.modelConfig.vocabSize}; adapter ${gpu.adapterName}`,
      );
      const state = await runInteraction(config, inputs, {
        gpu,
        storage,
        events,
        signal: abort.signal,
        pause,
      });
      at.steps = state.step;
      at.wordsSeen = state.wordsSeen;
      await cb.flush();
      return result("done");
    } catch (e) {
      if (abort.signal.aborted) {
        await cb.flush();
        return result("stopped");
      }
      // comlink rebuilds Error objects on the page; give it a plain Error with the whole story.
      const err = e as Error;
      throw new Error(err?.message ?? String(e));
    } finally {
      this.#abort = undefined;
      this.resume();
    }
  }

  pause(): void {
    if (!this.#abort || this.#gate) return;
    let open!: () => void;
    const promise = new Promise<void>((resolve) => (open = resolve));
    this.#gate = { promise, open };
  }

  resume(): void {
    this.#gate?.open();
    this.#gate = undefined;
  }

  stop(): void {
    this.#abort?.abort(new DOMException("training stopped", "AbortError"));
    // A paused run must wake up to see the abort.
    this.resume();
  }

  files(): Record<string, string | Uint8Array> {
    return Object.fromEntries(this.#storage?.runFiles() ?? []);
  }
}

Comlink.expose(new TrainingWorker());
