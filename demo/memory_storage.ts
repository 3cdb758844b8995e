/**
 * The browser's run directory: files in memory. Text files are always kept. Model directories
 * (checkpoints and the resumable state) keep their weights only when asked to (`keepWeights`): a long
 * live run writes many checkpoints and would otherwise only fill the tab's memory; without weights a
 * model directory is left out of {@link MemoryStorage.runFiles}, so a downloaded run never holds a
 * checkpoint folder that cannot be loaded.
 * @module
 */
import type { RunStorage } from "../interaction/loop.ts";
import type { GPT2Config } from "../model/config.ts";
import { CONFIG_FILE, hfConfigJson, safetensorsFromWeights, WEIGHTS_FILE } from "../model/checkpoint.ts";

/** Options of {@link MemoryStorage}. */
export interface MemoryStorageOptions {
  /** Keep the weights (and optimizer state) of every model directory. */
  keepWeights?: boolean;
  /** Called after every append with the path and the text appended (the worker counts tokens). */
  onAppend?: (path: string, text: string) => void;
}

/** A {@link RunStorage} in memory. */
export class MemoryStorage implements RunStorage {
  readonly #files = new Map<string, string | Uint8Array>();
  readonly #opts: MemoryStorageOptions;
  /** Model directories saved so far, with the bytes of the weights kept for them (0 when not kept). */
  readonly models = new Map<string, number>();

  constructor(opts: MemoryStorageOptions = {}) {
    this.#opts = opts;
  }

  /** The text of `path`, or undefined. */
  readText(path: string): Promise<string | undefined> {
    const v = this.#files.get(path);
    return Promise.resolve(typeof v === "string" ? v : undefined);
  }

  /** Replace `path`. */
  writeText(path: string, text: string): Promise<void> {
    this.#files.set(path, text);
    return Promise.resolve();
  }

  /** Append to `path` (created when missing). */
  appendText(path: string, text: string): Promise<void> {
    const old = this.#files.get(path);
    this.#files.set(path, (typeof old === "string" ? old : "") + text);
    this.#opts.onAppend?.(path, text);
    return Promise.resolve();
  }

  /** The directory's config.json and extras; its weights as model.safetensors when they are kept. */
  saveModel(
    path: string,
    config: GPT2Config,
    weights: Map<string, Float32Array>,
    extra: Record<string, string | Uint8Array>,
  ): Promise<void> {
    for (const k of [...this.#files.keys()]) if (k.startsWith(`${path}/`)) this.#files.delete(k);
    this.#files.set(`${path}/${CONFIG_FILE}`, JSON.stringify(hfConfigJson(config), null, 2) + "\n");
    let bytes = 0;
    for (const [name, data] of Object.entries(extra)) {
      if (typeof data === "string") this.#files.set(`${path}/${name}`, data);
      else if (this.#opts.keepWeights) {
        this.#files.set(`${path}/${name}`, data);
        bytes += data.byteLength;
      }
    }
    if (this.#opts.keepWeights) {
      const st = safetensorsFromWeights(weights, config);
      this.#files.set(`${path}/${WEIGHTS_FILE}`, st);
      bytes += st.byteLength;
    }
    this.models.set(path, bytes);
    return Promise.resolve();
  }

  /** A kept binary file (weights, optimizer state), or undefined. */
  readBytes(path: string): Promise<Uint8Array | undefined> {
    const v = this.#files.get(path);
    return Promise.resolve(v instanceof Uint8Array ? v : undefined);
  }

  /**
   * The run folder as `deno task train` writes it: every file, except model directories whose weights
   * were not kept.
   */
  runFiles(): Map<string, string | Uint8Array> {
    const partial = [...this.models].filter(([, bytes]) => bytes === 0).map(([dir]) => `${dir}/`);
    return new Map([...this.#files].filter(([k]) => !partial.some((dir) => k.startsWith(dir))));
  }
}
