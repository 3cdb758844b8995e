/**
 * The browser's run directory: text files in memory. Model directories keep their text files (config,
 * tokenizer, state) and a byte count of the weights, not the weights themselves: the page never resumes
 * a run, and keeping every checkpoint of a live run would only fill the tab's memory.
 * @module
 */
import type { RunStorage } from "../interaction/loop.ts";
import type { GPT2Config } from "../model/config.ts";
import { hfConfigJson } from "../model/checkpoint.ts";

/** A {@link RunStorage} in memory. */
export class MemoryStorage implements RunStorage {
  readonly #files = new Map<string, string>();
  /** Model directories saved so far, with the bytes their weights would take as f32. */
  readonly models = new Map<string, number>();

  /** The text of `path`, or undefined. */
  readText(path: string): Promise<string | undefined> {
    return Promise.resolve(this.#files.get(path));
  }

  /** Replace `path`. */
  writeText(path: string, text: string): Promise<void> {
    this.#files.set(path, text);
    return Promise.resolve();
  }

  /** Append to `path` (created when missing). */
  appendText(path: string, text: string): Promise<void> {
    this.#files.set(path, (this.#files.get(path) ?? "") + text);
    return Promise.resolve();
  }

  /** Keep the directory's config.json and text extras; count the weights' bytes. */
  saveModel(
    path: string,
    config: GPT2Config,
    weights: Map<string, Float32Array>,
    extra: Record<string, string | Uint8Array>,
  ): Promise<void> {
    this.#files.set(`${path}/config.json`, JSON.stringify(hfConfigJson(config), null, 2) + "\n");
    for (const [name, data] of Object.entries(extra)) {
      if (typeof data === "string") this.#files.set(`${path}/${name}`, data);
    }
    let bytes = 0;
    for (const w of weights.values()) bytes += w.byteLength;
    this.models.set(path, bytes);
    return Promise.resolve();
  }

  /** Binary files are not kept (see the module note); always undefined. */
  readBytes(_path: string): Promise<Uint8Array | undefined> {
    return Promise.resolve(undefined);
  }

  /** A copy of every text file, by path. */
  snapshot(): Record<string, string> {
    return Object.fromEntries(this.#files);
  }
}
