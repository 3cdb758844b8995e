/**
 * Teachers: who writes the "corrected" continuation of each student continuation.
 *
 * - {@link OpenAITeacher}: an LLM behind any OpenAI-compatible server (vLLM, SGLang, llama.cpp,
 *   Ollama's OpenAI API, TGI), or a fleet of them. Modes:
 *   - `chat`: POST `/v1/chat/completions` with the filled template messages, the final assistant message
 *     continued (`continue_final_message: true, add_generation_prompt: false`), `min_tokens`,
 *     `max_tokens`, `temperature`, `top_p`, non-streaming (vLLM, SGLang).
 *   - `completion`: the prompt rendered client-side with the teacher family's chat template
 *     ({@link renderChat}: Llama 3.1 / 3.2, Qwen 2.5 / 3 / 3.5, chosen from the model name or set), then either llama.cpp's POST `/completion` (`completionApi: "llamacpp"`, the default: `n_predict`,
 *     `ignore_eos` when min_tokens > 0 since llama.cpp has no min_tokens, `top_k: 0, min_p: 0,
 *     repeat_penalty: 1`, `cache_prompt`; Llama's leading `<|begin_of_text|>` is left out because llama.cpp
 *     inserts BOS itself) or POST `/v1/completions` (`completionApi: "openai"`, vLLM/SGLang: the rendered
 *     text with BOS, `add_special_tokens: false`, `min_tokens`).
 *
 *   Requests are spread over the servers with at most `maxInFlightPerServer` each, explicit timeouts,
 *   retries with exponential backoff and jitter on 429/5xx, connection failures, timeouts, bodies that
 *   are not JSON, empty answers and `finish_reason: "abort"`; a server that fails `failoverAfter` times
 *   in a row is benched for a while and the others take its work. A prompt longer than the teacher's
 *   context (HTTP 400 "maximum context length", llama.cpp's `exceed_context_size_error`) and other 4xx
 *   answers are reported at once, not retried. Answers come back in input order; `onAnswer` sees each
 *   one as it arrives so the caller can store it (crash-resume).
 * - {@link CorpusTeacher}: the datapoint's own corpus continuation is the "correction". A baseline
 *   variant for offline runs and tests, NOT the paper's teacher.
 *
 * Browser-safe (fetch, AbortSignal); the API key is read from an environment variable only under Deno.
 * @module
 */
import { type ChatMessage, DEFAULT_PROMPT, fillMessages, type PromptTemplate } from "./prompt.ts";
import {
  type ChatTemplateName,
  LLAMA3_DEFAULT_DATE,
  renderChat,
  resolveChatTemplate,
} from "./chat_template.ts";

/** One exchange to correct. */
export interface TeacherItem {
  /** What errors and logs call this item (the round loop: "round 2 datapoint 17"); default "item I". */
  label?: string;
  context: string;
  student: string;
  /** The corpus continuation of the context (needed by the corpus teacher only). */
  reference?: string;
}

/** Options of {@link Teacher.correct}. */
export interface CorrectOptions {
  signal?: AbortSignal;
  /** Called with every answer as it arrives (any order); awaited before the answer counts as done. */
  onAnswer?: (index: number, text: string) => void | Promise<void>;
}

/** Writes corrected continuations. */
export interface Teacher {
  /** A short description for logs. */
  readonly name: string;
  /** One answer per item, in input order. */
  correct(items: readonly TeacherItem[], options?: CorrectOptions): Promise<string[]>;
}

/** The corpus continuation as the correction: a baseline variant, not the paper's teacher. */
export class CorpusTeacher implements Teacher {
  readonly name = "corpus (the datapoint's own continuation; a baseline variant, not an LLM teacher)";

  /** Returns every item's `reference`; throws naming the first item without one. */
  async correct(items: readonly TeacherItem[], { signal, onAnswer }: CorrectOptions = {}): Promise<string[]> {
    const out: string[] = [];
    for (const [i, item] of items.entries()) {
      signal?.throwIfAborted();
      if (typeof item.reference !== "string") {
        const name = item.label ?? `item ${i}`;
        throw new Error(`corpus teacher: ${name} has no reference continuation (the loop must pass it)`);
      }
      out.push(item.reference);
      await onAnswer?.(i, item.reference);
    }
    return out;
  }
}

/** A failed teacher request; `retryable` says whether another attempt may succeed. */
export class TeacherError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = "TeacherError";
  }
}

/** Settings of an {@link OpenAITeacher}. */
export interface OpenAITeacherOptions {
  /** Base URLs, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted). */
  urls: string[];
  mode: "chat" | "completion";
  /** Endpoint of `completion` mode: llama.cpp `/completion` (default) or OpenAI-style `/v1/completions`. */
  completionApi?: "llamacpp" | "openai";
  /** Model name sent in the body (llama.cpp ignores it). */
  model: string;
  /** Prompt template; default {@link DEFAULT_PROMPT}. */
  prompt?: PromptTemplate;
  /** API key; if absent, read from the environment variable `apiKeyEnv` under Deno. Never logged. */
  apiKey?: string;
  /** Environment variable holding the API key (default: {@link TEACHER_DEFAULTS}, as the next three). */
  apiKeyEnv?: string;
  /** Per-request timeout. */
  timeoutMs?: number;
  /** Concurrent requests per server. */
  maxInFlightPerServer?: number;
  /** Attempts per item before giving up. */
  maxAttempts?: number;
  /** First retry delay; doubles per attempt up to `maxBackoffMs` (defaults 500 and 30000 ms). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Consecutive failures after which a server is benched (default 3). */
  failoverAfter?: number;
  /**
   * Chat template of `completion` mode: `auto` (the default: from `model`) or a name of
   * `CHAT_TEMPLATES` (chat_template.ts). Unused in `chat` mode, where the server applies the model's own.
   */
  chatTemplate?: string;
  /** "Today Date" of the rendered Llama 3 system header (default the baseline's "26 Jul 2024"). */
  date?: string;
  /** Replaces the global fetch (tests, proxies). */
  fetch?: typeof fetch;
  /** Where retry notices go (default: nowhere). */
  log?: (message: string) => void;
}

/** How long one correction request may take: 255-256 new tokens from a busy server (5 minutes). */
export const TEACHER_TIMEOUT_MS = 300_000;

/**
 * Defaults of the teacher settings a run's config also holds (`teacher` in interaction/config.ts spreads
 * them): the one place they are written.
 */
export const TEACHER_DEFAULTS = {
  chatTemplate: "auto",
  apiKeyEnv: "OPENAI_API_KEY",
  timeoutMs: TEACHER_TIMEOUT_MS,
  maxInFlightPerServer: 64,
  maxAttempts: 8,
};

/** How long a server has to answer a probe ({@link probe}, {@link health}). */
export const PROBE_TIMEOUT_MS = 10_000;

/** A server of the fleet and its health. */
interface Server {
  base: string;
  inFlight: number;
  failures: number;
  benchedUntil: number;
}

/** Strip a trailing slash and `/v1`, and check the URL. */
export function normalizeBaseUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(
      `teacher URL ${JSON.stringify(url)} is not a valid URL (expected e.g. http://127.0.0.1:8000)`,
    );
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new Error(`teacher URL ${url} must be http or https, got ${u.protocol}`);
  }
  return url.replace(/\/+$/, "").replace(/\/v1$/, "");
}

const CONTEXT_LENGTH =
  /maximum context length|context length|exceed_context_size|context window|max_model_len|too many tokens|prompt is too long/i;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** The first 300 characters of a body, on one line, for error messages. */
function snippet(body: string): string {
  const s = body.replace(/\s+/g, " ").trim();
  return s.length > 300 ? s.slice(0, 300) + "..." : s;
}

/** An LLM teacher behind OpenAI-compatible HTTP servers. */
export class OpenAITeacher implements Teacher {
  readonly name: string;
  readonly prompt: PromptTemplate;
  /** The template completion mode renders with (undefined in chat mode). */
  readonly chatTemplate?: ChatTemplateName;
  #o: Required<Omit<OpenAITeacherOptions, "apiKey" | "prompt" | "log">> & { log?: (m: string) => void };
  #key: string | undefined;
  #servers: Server[];
  #waiters: (() => void)[] = [];

  constructor(options: OpenAITeacherOptions) {
    if (!options.urls?.length) {
      throw new Error("openai teacher: at least one server URL is needed (--teacher-url)");
    }
    if (options.mode !== "chat" && options.mode !== "completion") {
      throw new Error(
        `openai teacher: mode must be "chat" or "completion", got ${JSON.stringify(options.mode)}`,
      );
    }
    this.#o = {
      ...TEACHER_DEFAULTS,
      completionApi: "llamacpp",
      backoffMs: 500,
      maxBackoffMs: 30_000,
      failoverAfter: 3,
      date: LLAMA3_DEFAULT_DATE,
      fetch: globalThis.fetch.bind(globalThis),
      ...options,
    };
    for (const k of ["timeoutMs", "maxInFlightPerServer", "maxAttempts", "failoverAfter"] as const) {
      if (!Number.isInteger(this.#o[k]) || this.#o[k] < 1) {
        throw new Error(`openai teacher: ${k} must be a positive integer, got ${this.#o[k]}`);
      }
    }
    this.prompt = options.prompt ?? DEFAULT_PROMPT;
    if (options.mode === "completion") {
      this.chatTemplate = resolveChatTemplate(
        this.#o.chatTemplate,
        this.#o.model,
        "openai teacher: chatTemplate",
      );
    }
    this.#key = options.apiKey ??
      (typeof Deno !== "undefined" ? Deno.env.get(this.#o.apiKeyEnv) : undefined);
    this.#servers = options.urls.map((u) => ({
      base: normalizeBaseUrl(u),
      inFlight: 0,
      failures: 0,
      benchedUntil: 0,
    }));
    const endpoint = options.mode === "chat"
      ? "/v1/chat/completions"
      : this.#o.completionApi === "llamacpp"
      ? "/completion"
      : "/v1/completions";
    this.name = `openai ${options.mode} ${endpoint}${
      this.chatTemplate ? ` (${this.chatTemplate} template)` : ""
    } at ${this.#servers.map((s) => s.base).join(", ")}`;
  }

  /** The HTTP path and JSON body of one request (exposed for teacher-check and tests). */
  requestBody(item: TeacherItem): { path: string; body: Record<string, unknown> } {
    const messages = fillMessages(this.prompt, item);
    const s = this.prompt.sampling;
    const prefill = messages[messages.length - 1].role === "assistant";
    if (this.#o.mode === "chat") {
      return {
        path: "/v1/chat/completions",
        body: {
          model: this.#o.model,
          messages,
          continue_final_message: prefill,
          add_generation_prompt: !prefill,
          temperature: s.temperature,
          top_p: s.top_p,
          min_tokens: s.min_tokens,
          max_tokens: s.max_tokens,
          stream: false,
        },
      };
    }
    if (this.#o.completionApi === "llamacpp") {
      return {
        path: "/completion",
        body: {
          prompt: this.render(messages, false),
          n_predict: s.max_tokens,
          ignore_eos: s.min_tokens > 0,
          temperature: s.temperature,
          top_p: s.top_p,
          top_k: 0,
          min_p: 0,
          repeat_penalty: 1,
          cache_prompt: true,
          stream: false,
        },
      };
    }
    return {
      path: "/v1/completions",
      body: {
        model: this.#o.model,
        prompt: this.render(messages, true),
        add_special_tokens: false,
        temperature: s.temperature,
        top_p: s.top_p,
        min_tokens: s.min_tokens,
        max_tokens: s.max_tokens,
        stream: false,
      },
    };
  }

  /** The completion-mode prompt text of filled messages, rendered with {@link chatTemplate}. */
  render(messages: ChatMessage[], bos: boolean): string {
    if (!this.chatTemplate) {
      throw new Error("openai teacher: chat mode sends messages; the server renders them");
    }
    return renderChat(this.chatTemplate, messages, { date: this.#o.date, bos });
  }

  /** The answer text in a successful response body; throws a retryable error when there is none. */
  parseResponse(json: unknown): string {
    const j = json as Record<string, unknown> | null;
    if (j === null || typeof j !== "object") throw new TeacherError("response is not a JSON object", true);
    if (j.error) {
      throw new TeacherError(`response carries an error: ${snippet(JSON.stringify(j.error))}`, true);
    }
    let text: unknown, finish: unknown;
    if (this.#o.mode === "completion" && this.#o.completionApi === "llamacpp") {
      text = j.content;
      finish = j.stop_type;
    } else {
      const choice = (j.choices as Record<string, unknown>[] | undefined)?.[0];
      if (!choice) throw new TeacherError("response has no choices[0]", true);
      text = this.#o.mode === "chat"
        ? (choice.message as Record<string, unknown> | undefined)?.content
        : choice.text;
      finish = choice.finish_reason;
    }
    if (finish === "abort") {
      throw new TeacherError(`generation aborted by the server (finish_reason "abort")`, true);
    }
    if (typeof text !== "string") throw new TeacherError("response has no answer text", true);
    if (text.trim() === "") throw new TeacherError("the answer is empty", true);
    return text;
  }

  /** One HTTP request to one server. */
  async #requestOnce(server: Server, item: TeacherItem, signal: AbortSignal): Promise<string> {
    const { path, body } = this.requestBody(item);
    const url = server.base + path;
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.#key) headers.authorization = `Bearer ${this.#key}`;
    const timeout = AbortSignal.timeout(this.#o.timeoutMs);
    const both = AbortSignal.any([signal, timeout]);
    let status: number, text: string, retryAfter: string | null;
    try {
      const res = await this.#o.fetch(url, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: both,
      });
      status = res.status;
      retryAfter = res.headers.get("retry-after");
      text = await res.text();
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      if (timeout.aborted) throw new TeacherError(`${url}: no answer within ${this.#o.timeoutMs} ms`, true);
      throw new TeacherError(`${url}: connection failed (${(e as Error).message})`, true);
    }
    if (status >= 200 && status < 300) {
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        throw new TeacherError(`${url}: HTTP ${status} body is not JSON: ${snippet(text)}`, true, status);
      }
      try {
        return this.parseResponse(json);
      } catch (e) {
        throw new TeacherError(`${url}: ${(e as Error).message}`, true, status);
      }
    }
    if ((status === 400 || status === 413 || status === 422) && CONTEXT_LENGTH.test(text)) {
      throw new TeacherError(
        `${url}: the prompt is longer than the teacher's context (HTTP ${status}: ${snippet(text)}); ` +
          "shorten contextLength or the template, or serve the model with a longer context",
        false,
        status,
      );
    }
    const retryable = status === 408 || status === 409 || status === 425 || status === 429 || status >= 500;
    const ra = retryAfter === null ? undefined : Number(retryAfter) * 1000;
    throw new TeacherError(
      `${url}: HTTP ${status}: ${snippet(text)}`,
      retryable,
      status,
      Number.isFinite(ra) ? ra : undefined,
    );
  }

  /** Wait for a free slot, preferring healthy, idle servers other than `avoid`. */
  async #acquire(signal: AbortSignal, avoid?: Server): Promise<Server> {
    for (;;) {
      signal.throwIfAborted();
      const now = Date.now();
      const free = this.#servers.filter((s) => s.inFlight < this.#o.maxInFlightPerServer);
      const healthy = this.#servers.filter((s) => s.benchedUntil <= now);
      // Benched servers are used only when every server is benched (then the soonest back is probed).
      const pool = healthy.length > 0
        ? free.filter((s) => s.benchedUntil <= now)
        : free.filter((s) => s.benchedUntil === Math.min(...this.#servers.map((x) => x.benchedUntil)));
      if (pool.length > 0) {
        pool.sort((a, b) =>
          (a === avoid ? 1 : 0) - (b === avoid ? 1 : 0) || a.failures - b.failures || a.inFlight - b.inFlight
        );
        pool[0].inFlight++;
        return pool[0];
      }
      const wake = Math.min(
        ...this.#servers.map((s) => (s.benchedUntil > now ? s.benchedUntil - now : Infinity)),
      );
      await new Promise<void>((resolve, reject) => {
        const done = () => {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          resolve();
        };
        const onAbort = () => {
          clearTimeout(timer);
          this.#waiters = this.#waiters.filter((w) => w !== done);
          reject(signal.reason);
        };
        const timer = Number.isFinite(wake) ? setTimeout(done, wake) : undefined;
        this.#waiters.push(done);
        signal.addEventListener("abort", onAbort, { once: true });
      });
    }
  }

  #release(server: Server): void {
    server.inFlight--;
    this.#waiters.shift()?.();
  }

  /** Ask for one item until an answer comes or the attempts are spent. */
  async #one(index: number, item: TeacherItem, signal: AbortSignal): Promise<string> {
    const name = item.label ?? `item ${index}`;
    let last: Server | undefined;
    for (let attempt = 1;; attempt++) {
      const server = await this.#acquire(signal, last);
      let error: TeacherError;
      try {
        const text = await this.#requestOnce(server, item, signal);
        server.failures = 0;
        server.benchedUntil = 0;
        return text;
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        if (!(e instanceof TeacherError)) throw e;
        if (!e.retryable) throw new TeacherError(`teacher, ${name}: ${e.message}`, false, e.status);
        error = e;
        server.failures++;
        if (server.failures >= this.#o.failoverAfter) {
          const k = server.failures - this.#o.failoverAfter;
          server.benchedUntil = Date.now() + Math.min(this.#o.maxBackoffMs, this.#o.backoffMs * 2 ** k);
        }
      } finally {
        this.#release(server);
      }
      last = server;
      if (attempt >= this.#o.maxAttempts) {
        throw new TeacherError(
          `no teacher answered ${name} after ${attempt} attempts (servers: ` +
            `${this.#servers.map((s) => s.base).join(", ")}); last error: ${error.message}`,
          false,
        );
      }
      // Exponential backoff with "equal jitter": half fixed, half random.
      const base = Math.min(this.#o.maxBackoffMs, this.#o.backoffMs * 2 ** (attempt - 1));
      const delay = Math.max(
        base * (0.5 + 0.5 * Math.random()),
        Math.min(error.retryAfterMs ?? 0, this.#o.maxBackoffMs),
      );
      this.#o.log?.(
        `teacher: ${name} attempt ${attempt} failed (${error.message}); retrying in ${Math.round(delay)} ms`,
      );
      await sleep(delay, signal);
    }
  }

  /** Correct every item; the first unrecoverable error cancels the rest and is thrown. */
  async correct(items: readonly TeacherItem[], { signal, onAnswer }: CorrectOptions = {}): Promise<string[]> {
    const stop = new AbortController();
    const all = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
    const out = new Array<string>(items.length);
    let first: unknown;
    await Promise.all(items.map(async (item, i) => {
      try {
        out[i] = await this.#one(i, item, all);
        await onAnswer?.(i, out[i]);
      } catch (e) {
        if (first === undefined) {
          first = e;
          stop.abort(e);
        }
      }
    }));
    if (first !== undefined) throw first;
    return out;
  }
}

/** What {@link health} found at a server. */
export interface HealthReport {
  url: string;
  ok: boolean;
  /** `vllm` (has /v1/models with max_model_len), `llamacpp` (has /props) or `unknown`. */
  server: "vllm" | "llamacpp" | "unknown";
  models: string[];
  /** The context length the server reports, when it does. */
  maxModelLen?: number;
  /** One line per probe: path, status or error. */
  details: string[];
}

/** What one {@link probe} got: the server's answer, or why there was none. */
export type ProbeResult = { status: number; text: string } | { error: string };

/** GET `base + path` within `timeoutMs`: the status and body, or the error. Never throws. */
export async function probe(
  base: string,
  path: string,
  { timeoutMs = PROBE_TIMEOUT_MS, fetchFn = globalThis.fetch.bind(globalThis) } = {},
): Promise<ProbeResult> {
  try {
    const res = await fetchFn(base + path, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: res.status, text: await res.text() };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/**
 * Probe a server: `/health` (vLLM, SGLang, llama.cpp, TGI), `/v1/models` (vLLM: model ids and
 * `max_model_len`) and `/props` (llama.cpp: `n_ctx`). Never throws; `ok` is true when `/health` is 2xx.
 */
export async function health(
  url: string,
  options: { timeoutMs?: number; fetchFn?: typeof fetch } = {},
): Promise<HealthReport> {
  const base = normalizeBaseUrl(url);
  const report: HealthReport = { url: base, ok: false, server: "unknown", models: [], details: [] };
  const get = async (path: string): Promise<unknown> => {
    const r = await probe(base, path, options);
    if ("error" in r) {
      report.details.push(`${path}: ${r.error}`);
      return undefined;
    }
    report.details.push(`${path}: HTTP ${r.status}`);
    if (r.status < 200 || r.status > 299) return undefined;
    try {
      return JSON.parse(r.text);
    } catch {
      return r.text;
    }
  };
  report.ok = (await get("/health")) !== undefined;
  const models = await get("/v1/models") as { data?: { id?: string; max_model_len?: number }[] } | undefined;
  if (models && Array.isArray(models.data)) {
    report.models = models.data.map((m) => String(m.id));
    const len = models.data.find((m) => typeof m.max_model_len === "number")?.max_model_len;
    if (len !== undefined) {
      report.server = "vllm";
      report.maxModelLen = len;
    }
  }
  const props = await get("/props") as
    | { default_generation_settings?: { n_ctx?: number }; n_ctx?: number }
    | undefined;
  if (props && typeof props === "object") {
    report.server = "llamacpp";
    report.maxModelLen = props.default_generation_settings?.n_ctx ?? props.n_ctx ?? report.maxModelLen;
  }
  return report;
}
