/**
 * The teacher prompt: a template of chat messages with `{context}` and `{student}` slots (the last
 * message may be an assistant message the teacher continues, a "prefill") plus the sampling settings,
 * loaded from a JSON file (`--teacher-prompt FILE`) and validated, and the project's own default prompt.
 * Completion mode renders the filled messages with the teacher family's chat template
 * (`chat_template.ts`).
 *
 * File format:
 * ```json
 * { "messages": [{ "role": "system" | "user" | "assistant", "content": "... {context} ... {student} ..." }],
 *   "sampling": { "temperature": 1.0, "top_p": 0.8, "min_tokens": 255, "max_tokens": 256 } }
 * ```
 * `source`, `note` and `description` strings may sit beside them; other keys are errors.
 * @module
 */

/** A chat message. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** Teacher sampling settings, named as in the OpenAI/vLLM APIs. */
export interface TeacherSampling {
  temperature: number;
  top_p: number;
  /** Fewest new tokens (vLLM/SGLang `min_tokens`; llama.cpp has none: it generates `max_tokens` with `ignore_eos`). */
  min_tokens: number;
  max_tokens: number;
}

/** A teacher prompt template. */
export interface PromptTemplate {
  messages: ChatMessage[];
  sampling: TeacherSampling;
}

/**
 * The project's default prompt, written for this project: the same conversation shape as the baseline
 * (an instruction, the partial text, the student's continuation, a request for a continuation only, and
 * a prefilled assistant turn that repeats the partial text), in its own words.
 */
export const DEFAULT_PROMPT: PromptTemplate = {
  messages: [
    {
      role: "system",
      content: "You finish stories and conversations that have been cut off. You will see the start of a " +
        "text (marked 'Beginning') and a continuation of it written by someone learning English (marked " +
        "'Learner Continuation'). Rewrite the learner's continuation so that it is grammatical, makes sense " +
        "and follows naturally from the beginning. If the learner's continuation is nonsense, write a new " +
        "continuation of your own instead. Reply with the continuation only: no notes, explanations or feedback.",
    },
    { role: "user", content: "Beginning: {context}" },
    { role: "user", content: "Learner Continuation: {student}" },
    { role: "user", content: "Now write your own continuation of the Beginning, and nothing else." },
    { role: "assistant", content: "Beginning: {context}\nContinuation:" },
  ],
  sampling: { temperature: 1, top_p: 0.8, min_tokens: 255, max_tokens: 256 },
};

const SLOT = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Validate a parsed template; `where` names the file in errors. */
export function parsePromptTemplate(raw: unknown, where: string): PromptTemplate {
  const fail = (field: string, expected: string, got: unknown): never => {
    throw new Error(`${where}: "${field}" must be ${expected}, got ${JSON.stringify(got)}`);
  };
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    fail("(top level)", "a JSON object", raw);
  }
  const obj = raw as Record<string, unknown>;
  for (const k of Object.keys(obj)) {
    if (!["messages", "sampling", "source", "note", "description"].includes(k)) {
      fail(k, "absent (allowed keys: messages, sampling, source, note, description)", obj[k]);
    }
  }
  const msgs = obj.messages;
  if (!Array.isArray(msgs) || msgs.length === 0) {
    fail("messages", "a non-empty array of {role, content}", msgs);
  }
  const messages: ChatMessage[] = (msgs as unknown[]).map((m, i) => {
    const mm = m as Record<string, unknown>;
    if (mm === null || typeof mm !== "object") fail(`messages[${i}]`, "an object {role, content}", m);
    if (!["system", "user", "assistant"].includes(mm.role as string)) {
      fail(`messages[${i}].role`, `"system", "user" or "assistant"`, mm.role);
    }
    if (typeof mm.content !== "string") fail(`messages[${i}].content`, "a string", mm.content);
    for (const s of (mm.content as string).matchAll(SLOT)) {
      if (s[1] !== "context" && s[1] !== "student") {
        fail(`messages[${i}].content`, "text whose only slots are {context} and {student}", `{${s[1]}}`);
      }
    }
    return { role: mm.role as ChatMessage["role"], content: mm.content as string };
  });
  messages.forEach((m, i) => {
    if (m.role === "system" && i > 0) fail(`messages[${i}].role`, "system only as the first message", m.role);
  });
  if (!messages.some((m) => m.content.includes("{context}"))) {
    fail("messages", "a conversation with a {context} slot somewhere", "no {context}");
  }
  const s = obj.sampling as Record<string, unknown>;
  if (s === null || typeof s !== "object" || Array.isArray(s)) fail("sampling", "an object", s);
  for (const k of Object.keys(s)) {
    if (!["temperature", "top_p", "min_tokens", "max_tokens"].includes(k)) {
      fail(`sampling.${k}`, "absent (allowed: temperature, top_p, min_tokens, max_tokens)", s[k]);
    }
  }
  const num = (k: string, ok: (v: number) => boolean, expected: string) => {
    if (typeof s[k] !== "number" || !ok(s[k] as number)) fail(`sampling.${k}`, expected, s[k]);
    return s[k] as number;
  };
  const sampling: TeacherSampling = {
    temperature: num("temperature", (v) => v >= 0, "a number >= 0"),
    top_p: num("top_p", (v) => v > 0 && v <= 1, "a number in (0, 1]"),
    max_tokens: num("max_tokens", (v) => Number.isInteger(v) && v >= 1, "an integer >= 1"),
    min_tokens: 0,
  };
  sampling.min_tokens = num(
    "min_tokens",
    (v) => Number.isInteger(v) && v >= 0 && v <= sampling.max_tokens,
    `an integer in [0, max_tokens=${sampling.max_tokens}]`,
  );
  return { messages, sampling };
}

/** Parse and validate the text of a template file; `path` names it in errors. */
export function promptTemplateFromText(text: string, path: string): PromptTemplate {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  return parsePromptTemplate(raw, path);
}

/**
 * The template's messages with the slots filled, in one pass, so that a `{student}` inside the context
 * text stays as it is.
 */
export function fillMessages(
  template: PromptTemplate,
  values: { context: string; student: string },
): ChatMessage[] {
  return template.messages.map((m) => ({
    role: m.role,
    content: m.content.replace(
      SLOT,
      (whole, name: string) => (name === "context" || name === "student" ? values[name] : whole),
    ),
  }));
}
