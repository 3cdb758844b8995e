/**
 * Chat templates rendered on the client, for teachers served in completion mode (llama.cpp `/completion`,
 * Ollama raw, `/v1/completions`): the prompt text each approved BabyLM 2026 teacher family's
 * `tokenizer_config.json` template produces for a conversation, written out in TypeScript.
 *
 * | name | models | what it renders |
 * | --- | --- | --- |
 * | `llama3` | Llama 3.1 8B, Llama 3.2 1B / 3B Instruct | header tokens; a system header that always holds "Cutting Knowledge Date: December 2023" and "Today Date: {date}"; bodies trimmed |
 * | `chatml-qwen2.5` | Qwen 2.5 Instruct | ChatML; "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." when no system message is given; bodies as they are |
 * | `qwen3` | Qwen 3 (hybrid thinking) | ChatML with no default system message; thinking disabled as `enable_thinking=False` does: an empty `<think>\n\n</think>\n\n` block opens the answer |
 * | `qwen3-instruct-2507` | Qwen 3 Instruct-2507 (non-thinking only) | plain ChatML, no think block |
 * | `qwen3.5` | Qwen 3.5 | ChatML, bodies trimmed, the empty think block as for `qwen3` |
 *
 * A final assistant message is a prefill: it is continued, so nothing closes it (what vLLM's
 * `continue_final_message` leaves). Otherwise the template's generation prompt opens the answer.
 * Chat mode never uses these: the server applies the model's own template.
 * @module
 */
import type { ChatMessage } from "./prompt.ts";

/** The templates, by the names `--chat-template` takes. */
export const CHAT_TEMPLATES = [
  "llama3",
  "chatml-qwen2.5",
  "qwen3",
  "qwen3-instruct-2507",
  "qwen3.5",
] as const;

/** A chat template's name. */
export type ChatTemplateName = typeof CHAT_TEMPLATES[number];

/** Options of {@link renderChat}. */
export interface RenderOptions {
  /** "Today Date" of the Llama 3 system header; the baseline's vLLM rendered "26 Jul 2024". */
  date?: string;
  /** Start with `<|begin_of_text|>` (Llama; false for servers that insert BOS themselves). Qwen has no BOS. */
  bos?: boolean;
}

/** The "Today Date" Llama 3.1's template writes when none is given (the baseline's rendering). */
export const LLAMA3_DEFAULT_DATE = "26 Jul 2024";

const QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
const EMPTY_THINK = "<think>\n\n</think>\n\n";

/** Python's `str.strip()` (what Jinja's `trim` does): its whitespace set differs from JavaScript's `trim`. */
export function pythonStrip(s: string): string {
  const ws =
    "[\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
  return s.replace(new RegExp(`^${ws}+|${ws}+$`, "gu"), "");
}

/**
 * The template a model name implies: Llama 3.1 / 3.2 -> `llama3`, Qwen 2.5 -> `chatml-qwen2.5`, Qwen 3.5 ->
 * `qwen3.5`, Qwen 3 Instruct-2507 -> `qwen3-instruct-2507`, other Qwen 3 -> `qwen3`. Throws for names it
 * cannot place (and for Qwen 3 Thinking-2507, whose thinking cannot be turned off), saying to pass
 * `--chat-template`.
 */
export function chatTemplateForModel(model: string): ChatTemplateName {
  const m = model.toLowerCase();
  if (/llama[-_ ]?3[._][12](?!\d)/.test(m)) return "llama3";
  if (/qwen[-_ ]?2[._]5(?!\d)/.test(m)) return "chatml-qwen2.5";
  if (/qwen[-_ ]?3[._]5(?!\d)/.test(m)) return "qwen3.5";
  if (/qwen[-_ ]?3(?![._]?\d)/.test(m)) {
    if (/thinking-2507/.test(m)) {
      throw new Error(
        `teacher model ${
          JSON.stringify(model)
        } is a thinking-only Qwen 3 model: its template always opens a ` +
          "reasoning block, so it cannot write a plain continuation; use an Instruct-2507 or hybrid Qwen 3 model",
      );
    }
    return /instruct-2507/.test(m) ? "qwen3-instruct-2507" : "qwen3";
  }
  throw new Error(
    `no chat template is known for teacher model ${JSON.stringify(model)}: pass --chat-template ` +
      `(${CHAT_TEMPLATES.join(", ")}) or set teacher.chatTemplate`,
  );
}

/** `auto` (from the model name) or a template name, checked; `where` names the setting in errors. */
export function resolveChatTemplate(
  setting: string,
  model: string,
  where = "chat template",
): ChatTemplateName {
  if (setting === "auto") return chatTemplateForModel(model);
  if ((CHAT_TEMPLATES as readonly string[]).includes(setting)) return setting as ChatTemplateName;
  throw new Error(
    `${where} must be "auto" or one of ${CHAT_TEMPLATES.join(", ")}, got ${JSON.stringify(setting)}`,
  );
}

/** Render `messages` with the named template (see the module table). */
export function renderChat(
  template: ChatTemplateName,
  messages: readonly ChatMessage[],
  options: RenderOptions = {},
): string {
  messages.forEach((m, i) => {
    if (m.role === "system" && i > 0) {
      throw new Error(`${template} chat template: a system message is only allowed first (message ${i})`);
    }
  });
  switch (template) {
    case "llama3":
      return renderLlama3(messages, options);
    case "chatml-qwen2.5":
      return renderChatml(messages, { defaultSystem: QWEN25_DEFAULT_SYSTEM, ...PLAIN });
    case "qwen3":
      return renderChatml(messages, { ...PLAIN, think: true });
    case "qwen3-instruct-2507":
      return renderChatml(messages, PLAIN);
    case "qwen3.5":
      return renderChatml(messages, { strip: true, think: true, needsQuery: true });
  }
}

/**
 * Llama 3.1 / 3.2 Instruct: the system header always carries the knowledge cut-off and "Today Date"
 * (Llama 3.2's template writes the server's current date when it can; a fixed date keeps runs
 * reproducible), bodies are trimmed, every message ends with `<|eot_id|>` except a final assistant prefill.
 */
function renderLlama3(
  messages: readonly ChatMessage[],
  { date = LLAMA3_DEFAULT_DATE, bos = true }: RenderOptions,
): string {
  const header = (role: string) => `<|start_header_id|>${role}<|end_header_id|>\n\n`;
  const hasSystem = messages.length > 0 && messages[0].role === "system";
  const system = hasSystem ? pythonStrip(messages[0].content) : "";
  const rest = hasSystem ? messages.slice(1) : messages;
  let out = (bos ? "<|begin_of_text|>" : "") + header("system") +
    `Cutting Knowledge Date: December 2023\nToday Date: ${date}\n\n${system}<|eot_id|>`;
  rest.forEach((m, i) => {
    const prefill = i === rest.length - 1 && m.role === "assistant";
    out += header(m.role) + pythonStrip(m.content) + (prefill ? "" : "<|eot_id|>");
  });
  if (rest.length === 0 || rest[rest.length - 1].role !== "assistant") out += header("assistant");
  return out;
}

/** How a Qwen template differs from plain ChatML. */
interface ChatmlStyle {
  /** Written as the system message when the conversation has none (Qwen 2.5). */
  defaultSystem?: string;
  /** Bodies trimmed (Qwen 3.5's `|trim`). */
  strip: boolean;
  /** Assistant turns after the last user query open with a think block (Qwen 3, 3.5). */
  think: boolean;
  /** A conversation without a user query is an error (Qwen 3.5 raises "No user query found"). */
  needsQuery: boolean;
}

const PLAIN: ChatmlStyle = { strip: false, think: false, needsQuery: false };

/** The reasoning and answer of an assistant body that holds `</think>`, split as the Qwen 3 templates do. */
function splitThink(content: string): { reasoning: string; answer: string } {
  const parts = content.split("</think>");
  return {
    reasoning: stripChars(parts[0], "\n", "end").split("<think>").at(-1)!.replace(/^\n+/, ""),
    answer: parts[parts.length - 1].replace(/^\n+/, ""),
  };
}

/** Python's `rstrip(chars)` / `strip(chars)` for one character class. */
function stripChars(s: string, ch: "\n", side: "end" | "both"): string {
  const end = s.replace(new RegExp(`${ch}+$`), "");
  return side === "end" ? end : end.replace(new RegExp(`^${ch}+`), "");
}

/**
 * The Qwen family's ChatML: `<|im_start|>{role}\n{body}<|im_end|>\n` per message. With `think`, an
 * assistant turn after the last user query opens with `<think>\n{reasoning}\n</think>\n\n` (empty
 * reasoning: thinking off), and so does the generation prompt (`enable_thinking=False`).
 */
function renderChatml(messages: readonly ChatMessage[], style: ChatmlStyle): string {
  const body = (s: string) => (style.strip ? pythonStrip(s) : s);
  let out = "";
  let rest = messages;
  if (messages.length > 0 && messages[0].role === "system") {
    out += `<|im_start|>system\n${body(messages[0].content)}<|im_end|>\n`;
    rest = messages.slice(1);
  } else if (style.defaultSystem !== undefined) {
    out += `<|im_start|>system\n${style.defaultSystem}<|im_end|>\n`;
  }
  // The last user message that is not a tool response (the templates' `last_query_index`).
  const isQuery = (m: ChatMessage) => {
    const c = body(m.content);
    return m.role === "user" && !(c.startsWith("<tool_response>") && c.endsWith("</tool_response>"));
  };
  const lastQuery = rest.findLastIndex(isQuery);
  if (style.needsQuery && lastQuery < 0) {
    throw new Error(
      "qwen3.5 chat template: the conversation needs a user message (the template raises otherwise)",
    );
  }
  rest.forEach((m, i) => {
    const last = i === rest.length - 1;
    if (m.role !== "assistant") {
      out += `<|im_start|>${m.role}\n${body(m.content)}<|im_end|>\n`;
      return;
    }
    let answer = body(m.content);
    let reasoning = "";
    if (style.think && answer.includes("</think>")) ({ reasoning, answer } = splitThink(answer));
    out += `<|im_start|>assistant\n`;
    if (style.think && i > lastQuery) {
      if (style.strip) out += `<think>\n${pythonStrip(reasoning)}\n</think>\n\n${answer}`;
      else if (last || reasoning) {
        out += `<think>\n${stripChars(reasoning, "\n", "both")}\n</think>\n\n${answer.replace(/^\n+/, "")}`;
      } else out += answer;
    } else out += answer;
    if (!last) out += "<|im_end|>\n";
  });
  if (rest.length === 0 || rest[rest.length - 1].role !== "assistant") {
    out += "<|im_start|>assistant\n" + (style.think ? EMPTY_THINK : "");
  }
  return out;
}
