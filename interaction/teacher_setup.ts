/**
 * The teacher of a run from its config, for every host (the CLI under Deno, the demo in a browser
 * worker), and the check that a teacher server answers before the long student turn. Browser-safe: what
 * only some hosts can do (load the prompt file, read the API key's environment variable) comes from the
 * {@link TeacherHost}, and a host that cannot do what the config asks says so instead of ignoring it.
 * @module
 */
import type { TeacherConfig } from "./config.ts";
import type { PromptTemplate } from "./prompt.ts";
import {
  CorpusTeacher,
  normalizeBaseUrl,
  OpenAITeacher,
  probe,
  PROBE_TIMEOUT_MS,
  type Teacher,
} from "./teacher.ts";

/** What the host running a training offers the teacher. */
export interface TeacherHost {
  /** The host in messages, e.g. "the browser demo". */
  name: string;
  /** Load a prompt template file (`cli/files.ts` loadPromptTemplate); absent: the host cannot read files. */
  loadPrompt?: (path: string) => Promise<PromptTemplate>;
  /** An environment variable (the API key); absent: the host has no environment. */
  env?: (name: string) => string | undefined;
  /** Replaces the global fetch (the demo's explains a refusal by the browser). */
  fetch?: typeof fetch;
  /** Retry notices and notes (default: nowhere). */
  log?: (line: string) => void;
  /** Where the user sets the teacher's URL, for messages (default `teacher.urls`). */
  urlSetting?: string;
}

/**
 * The prompt template of `teacher.promptFile` (undefined: the project's default prompt). A host that
 * cannot read files refuses a non-empty `promptFile`, naming it.
 */
export async function teacherPrompt(
  config: TeacherConfig,
  host: TeacherHost,
): Promise<PromptTemplate | undefined> {
  const path = config.promptFile;
  if (!path) return undefined;
  if (!host.loadPrompt) {
    throw new Error(
      `teacher.promptFile ${JSON.stringify(path)}: ${host.name} cannot read files; clear it to use the ` +
        "default prompt, or run `deno task train --teacher-prompt FILE`",
    );
  }
  return await host.loadPrompt(path);
}

/**
 * The teacher `config` describes: the corpus teacher, or an {@link OpenAITeacher} with the prompt of
 * `promptFile` and the API key from the environment variable `apiKeyEnv`. A host without an environment
 * sends no key and logs that it could not read `apiKeyEnv`.
 */
export async function createTeacher(config: TeacherConfig, host: TeacherHost): Promise<Teacher> {
  if (config.kind === "corpus") return new CorpusTeacher();
  const prompt = await teacherPrompt(config, host);
  // "" sends no key (and keeps OpenAITeacher from reading Deno's environment itself).
  let apiKey = "";
  if (host.env) apiKey = host.env(config.apiKeyEnv) ?? "";
  else if (config.apiKeyEnv) {
    host.log?.(
      `note: ${host.name} has no environment variables, so teacher.apiKeyEnv ` +
        `${JSON.stringify(config.apiKeyEnv)} is not read: requests go without an API key`,
    );
  }
  return new OpenAITeacher({
    urls: config.urls,
    mode: config.mode,
    model: config.model,
    chatTemplate: config.chatTemplate,
    prompt,
    apiKey,
    apiKeyEnv: config.apiKeyEnv,
    timeoutMs: config.timeoutMs,
    maxInFlightPerServer: config.maxInFlightPerServer,
    maxAttempts: config.maxAttempts,
    ...(host.fetch ? { fetch: host.fetch } : {}),
    ...(host.log ? { log: host.log } : {}),
  });
}

/**
 * Check that at least one teacher server answers HTTP before the long student turn: any status counts
 * (a server that is up but has no `/health` still answers). Unreachable ones are logged; when none
 * answers, throws with every URL and its error, and says to fix the host's `urlSetting`.
 */
export async function probeTeachers(
  urls: string[],
  { timeoutMs = PROBE_TIMEOUT_MS, fetch, log, urlSetting = "teacher.urls" }:
    & Pick<TeacherHost, "fetch" | "log" | "urlSetting">
    & { timeoutMs?: number } = {},
): Promise<void> {
  const failures: string[] = [];
  await Promise.all(urls.map(async (url) => {
    const base = normalizeBaseUrl(url);
    const r = await probe(base, "/health", { timeoutMs, ...(fetch ? { fetchFn: fetch } : {}) });
    if ("error" in r) failures.push(`${base}/health: ${r.error}`);
  }));
  if (failures.length === urls.length) {
    throw new Error(
      `no teacher server answers (${failures.join("; ")}); start the server or fix the teacher URL ` +
        `(${urlSetting})`,
    );
  }
  for (const f of failures) log?.(`warning: teacher server unreachable, the others take its work: ${f}`);
}
