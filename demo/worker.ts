/**
 * The demo's training worker (a module Web Worker): the project's own round loop
 * (`interaction/loop.ts`, `interaction/prepare.ts`) on the browser's WebGPU, behind comlink. The page
 * calls `start(config, callbacks)`, `pause()`, `resume()`, `stop()`; every loop event goes back through
 * the callbacks proxy the page lent.
 * @module
 */
import * as Comlink from "comlink";
import { Gpu } from "../shaders/gpu.ts";
import { prepareRun } from "../interaction/prepare.ts";
import { type LoopEvents, runInteraction } from "../interaction/loop.ts";
import { type TrainConfig, validateTrainConfig } from "../interaction/config.ts";
import { createTeacher, probeTeachers, type TeacherHost } from "../interaction/teacher_setup.ts";
import { MemoryStorage } from "./memory_storage.ts";
import {
  FETCH_BLOCKED,
  probeWebGpu,
  type RunResult,
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
  return { name: "the browser demo", fetch: explainedFetch, log };
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

  async start(config: TrainConfig, cb: WorkerCallbacks): Promise<RunResult> {
    if (this.#abort) throw new Error("a run is already going; stop it first");
    const abort = this.#abort = new AbortController();
    this.#gate = undefined;
    const storage = this.#storage = new MemoryStorage();
    const t0 = performance.now();
    let steps = 0, wordsSeen = 0;
    // Callbacks are remote calls: fire and forget, but never lose an error silently.
    const send = <A extends unknown[]>(f: (...a: A) => unknown) => (...a: A) => {
      Promise.resolve(f(...a)).catch((e) => console.error("demo worker: page callback failed:", e));
    };
    const events: LoopEvents = {
      onRound: send((r, n) => cb.onRound(r, n)),
      onPhase: send((p, r, d, t) => cb.onPhase(p, r, d, t)),
      onInteraction: send((rec) => cb.onInteraction(rec)),
      onMetrics: send((m) => {
        steps = m.step;
        wordsSeen = m.wordsSeen;
        return cb.onMetrics(m);
      }),
      onCheckpoint: send((name, words) => cb.onCheckpoint(name, words)),
      onLog: send((line) => cb.onLog(line)),
    };
    const status = send((line: string) => cb.onStatus(line));
    try {
      validateTrainConfig(config);
      const probe = await this.probe();
      if (!probe.ok) throw new Error(probe.problem);
      if (config.teacher.kind === "openai") {
        status(`checking the teacher at ${config.teacher.urls.join(", ")}`);
        await probeTeachers(config.teacher.urls, { fetch: explainedFetch, log: events.onLog });
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
        pause: () => this.#gate?.promise ?? Promise.resolve(),
      });
      return {
        status: "done",
        steps: state.step,
        wordsSeen: state.wordsSeen,
        seconds: (performance.now() - t0) / 1000,
      };
    } catch (e) {
      if (abort.signal.aborted) {
        return { status: "stopped", steps, wordsSeen, seconds: (performance.now() - t0) / 1000 };
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

  files(): Record<string, string> {
    const all = this.#storage?.snapshot() ?? {};
    return Object.fromEntries(
      Object.entries(all).filter(([k]) =>
        /^(config\.json|metrics\.jsonl|interactions\/round_\d+\.jsonl)$/.test(k)
      ),
    );
  }
}

Comlink.expose(new TrainingWorker());
