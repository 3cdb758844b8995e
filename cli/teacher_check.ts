/**
 * `deno task teacher-check --teacher-url URL`: probe a teacher server, send it one correction request
 * built exactly as training builds them, and print the rendered prompt (completion mode: the chat
 * template of the teacher's family, rendered here), the request, the raw response body and how it was
 * parsed. For checking a server before a long run.
 * @module
 */
import { parseOptions, required, runMain, UsageError } from "./common.ts";
import { DEFAULT_PROMPT, fillMessages } from "../interaction/prompt.ts";
import { loadPromptTemplate } from "./files.ts";
import { health, normalizeBaseUrl, OpenAITeacher, TEACHER_DEFAULTS } from "../interaction/teacher.ts";

const SAMPLE = {
  context:
    "*MOT:\twhere is the red ball ?\n*CHI:\tball under bed .\n*MOT:\tcan you get the ball for me ?\n*CHI:\t",
  student: "me get ball the go under now .",
};

async function main(): Promise<void> {
  const o = parseOptions(
    "teacher-check",
    "Send one correction request to a teacher server and show the result.",
    {
      "teacher-url": { type: "string", help: "server base URL, e.g. http://127.0.0.1:8000" },
      mode: {
        type: "string",
        help: "chat (vLLM, SGLang: the server renders the template) or completion (rendered here)",
        default: "chat",
      },
      "completion-api": {
        type: "string",
        help: "completion mode endpoint: llamacpp (/completion) or openai (/v1/completions)",
        default: "llamacpp",
      },
      model: {
        type: "string",
        help: "model name sent in the request",
        default: "meta-llama/Llama-3.1-8B-Instruct",
      },
      "chat-template": {
        type: "string",
        help: "completion mode's chat template: auto (from --model), llama3, chatml-qwen2.5, qwen3, " +
          "qwen3-instruct-2507 or qwen3.5",
        default: TEACHER_DEFAULTS.chatTemplate,
      },
      "teacher-prompt": { type: "string", help: "prompt template JSON (default: the project's own prompt)" },
      "api-key-env": {
        type: "string",
        help: "environment variable holding the API key",
        default: TEACHER_DEFAULTS.apiKeyEnv,
      },
      "timeout-ms": { type: "string", help: "request timeout", default: String(TEACHER_DEFAULTS.timeoutMs) },
      context: { type: "string", help: "the context text to send", default: SAMPLE.context },
      student: { type: "string", help: "the student continuation to send", default: SAMPLE.student },
    },
  );
  const url = normalizeBaseUrl(required(o["teacher-url"], "teacher-url"));
  const mode = o.mode as string;
  if (mode !== "chat" && mode !== "completion") {
    throw new UsageError(`--mode must be chat or completion, got ${mode}`);
  }
  const api = o["completion-api"] as string;
  if (api !== "llamacpp" && api !== "openai") {
    throw new UsageError(`--completion-api must be llamacpp or openai, got ${api}`);
  }
  const timeoutMs = Number(o["timeout-ms"]);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) {
    throw new UsageError(`--timeout-ms must be a positive integer`);
  }
  const prompt = o["teacher-prompt"]
    ? await loadPromptTemplate(o["teacher-prompt"] as string)
    : DEFAULT_PROMPT;

  const h = await health(url);
  console.log(
    `health: ${h.ok ? "ok" : "NOT ok"}; server: ${h.server}; models: ${h.models.join(", ") || "?"}` +
      (h.maxModelLen ? `; context: ${h.maxModelLen} tokens` : ""),
  );
  for (const d of h.details) console.log(`  ${d}`);

  let teacher: OpenAITeacher;
  try {
    teacher = new OpenAITeacher({
      urls: [url],
      mode,
      completionApi: api,
      model: o.model as string,
      chatTemplate: o["chat-template"] as string,
      prompt,
      apiKeyEnv: o["api-key-env"] as string,
      timeoutMs,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const item = { context: o.context as string, student: o.student as string };
  if (teacher.chatTemplate) {
    const rendered = teacher.render(fillMessages(prompt, item), true);
    console.log(
      `\nrendered prompt (${teacher.chatTemplate} template; the request below drops BOS where the server ` +
        `adds it):\n${rendered}\n\nthe same, as a JSON string (every byte visible):\n${
          JSON.stringify(rendered)
        }`,
    );
  } else {
    console.log("\nchat mode: the server renders the model's own chat template from the messages below");
  }
  const { path, body } = teacher.requestBody(item);
  console.log(`\nPOST ${url}${path}\n${JSON.stringify(body, null, 2)}`);

  const headers: Record<string, string> = { "content-type": "application/json" };
  const key = Deno.env.get(o["api-key-env"] as string);
  if (key) headers.authorization = `Bearer ${key}`;
  const t0 = performance.now();
  let res: Response;
  try {
    res = await fetch(url + path, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    throw new UsageError(`no answer from ${url}${path}: ${(e as Error).message}`);
  }
  const raw = await res.text();
  console.log(`\nHTTP ${res.status} in ${((performance.now() - t0) / 1000).toFixed(1)} s, raw body:\n${raw}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new UsageError("the body is not JSON: training would retry this request");
  }
  if (!res.ok) {
    throw new UsageError(
      `HTTP ${res.status}: training would ${res.status === 429 || res.status >= 500 ? "retry" : "stop"}`,
    );
  }
  try {
    const text = teacher.parseResponse(parsed);
    console.log(`\nparsed answer (${text.length} characters):\n${text}`);
  } catch (e) {
    throw new UsageError(`parsed: ${(e as Error).message} (training would retry)`);
  }
}

if (import.meta.main) await runMain(main);
