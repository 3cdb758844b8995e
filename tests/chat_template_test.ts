/**
 * Client-side chat templates of the approved BabyLM 2026 teachers, byte for byte. The expected strings
 * are written out by hand from each family's published `tokenizer_config.json` template (Llama 3.1 /
 * 3.2 Instruct, Qwen2.5-Instruct, Qwen3 with `enable_thinking=False`, Qwen3-Instruct-2507, Qwen3.5), with
 * a final assistant message continued (vLLM's `continue_final_message`: the rendering stops after the
 * prefill's text). Also: the template a model name implies, overrides, the request body, and
 * teacher-check's printout of the rendered prompt.
 */
import assert from "node:assert/strict";
import {
  CHAT_TEMPLATES,
  chatTemplateForModel,
  type ChatTemplateName,
  renderChat,
  resolveChatTemplate,
} from "../interaction/chat_template.ts";
import { type ChatMessage, DEFAULT_PROMPT, fillMessages } from "../interaction/prompt.ts";
import { OpenAITeacher } from "../interaction/teacher.ts";
import { startTeacherServer } from "./teacher_server.ts";

/** The baseline's conversation shape, with whitespace at the ends that the templates treat differently. */
const PREFILLED: ChatMessage[] = [
  { role: "system", content: "You continue texts.\n" },
  { role: "user", content: "Partial Text:  the dog ran " },
  { role: "user", content: "Student Completion: dog go home\n" },
  { role: "user", content: "Now produce your own completion." },
  { role: "assistant", content: "Partial Text:  the dog ran \n Corrected Completion:" },
];

const QWEN_USERS_AS_IS = "<|im_start|>user\nPartial Text:  the dog ran <|im_end|>\n" +
  "<|im_start|>user\nStudent Completion: dog go home\n<|im_end|>\n" +
  "<|im_start|>user\nNow produce your own completion.<|im_end|>\n";
const PREFILL = "Partial Text:  the dog ran \n Corrected Completion:";

const EXPECTED_PREFILLED: Record<ChatTemplateName, string> = {
  llama3: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou continue texts.<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nPartial Text:  the dog ran<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nStudent Completion: dog go home<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nNow produce your own completion.<|eot_id|>" +
    "<|start_header_id|>assistant<|end_header_id|>\n\n" + PREFILL,
  "chatml-qwen2.5": "<|im_start|>system\nYou continue texts.\n<|im_end|>\n" + QWEN_USERS_AS_IS +
    "<|im_start|>assistant\n" + PREFILL,
  qwen3: "<|im_start|>system\nYou continue texts.\n<|im_end|>\n" + QWEN_USERS_AS_IS +
    "<|im_start|>assistant\n<think>\n\n</think>\n\n" + PREFILL,
  "qwen3-instruct-2507": "<|im_start|>system\nYou continue texts.\n<|im_end|>\n" + QWEN_USERS_AS_IS +
    "<|im_start|>assistant\n" + PREFILL,
  "qwen3.5": "<|im_start|>system\nYou continue texts.<|im_end|>\n" +
    "<|im_start|>user\nPartial Text:  the dog ran<|im_end|>\n" +
    "<|im_start|>user\nStudent Completion: dog go home<|im_end|>\n" +
    "<|im_start|>user\nNow produce your own completion.<|im_end|>\n" +
    "<|im_start|>assistant\n<think>\n\n</think>\n\n" + PREFILL,
};

/** One user message, no system message, no prefill: the generation prompt (thinking off). */
const EXPECTED_OPEN: Record<ChatTemplateName, string> = {
  llama3: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  "chatml-qwen2.5":
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant." +
    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  qwen3: "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
  "qwen3-instruct-2507": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  "qwen3.5": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
};

Deno.test("every template renders a prefilled conversation byte for byte, the prefill left open", () => {
  for (const name of CHAT_TEMPLATES) {
    assert.equal(renderChat(name, PREFILLED), EXPECTED_PREFILLED[name], name);
    assert.ok(
      !renderChat(name, PREFILLED).endsWith("<|eot_id|>"),
      `${name}: no end of turn after the prefill`,
    );
  }
});

Deno.test("every template's generation prompt; Qwen 2.5's default system message; Llama without BOS", () => {
  for (const name of CHAT_TEMPLATES) {
    assert.equal(renderChat(name, [{ role: "user", content: "Hi" }]), EXPECTED_OPEN[name], name);
  }
  assert.equal(
    renderChat("llama3", [{ role: "user", content: "Hi" }], { bos: false, date: "1 Jan 2025" }),
    EXPECTED_OPEN.llama3.replace("<|begin_of_text|>", "").replace("26 Jul 2024", "1 Jan 2025"),
  );
  assert.equal(
    renderChat("qwen3", [{ role: "user", content: "Hi" }], { bos: true }),
    EXPECTED_OPEN.qwen3,
    "Qwen has no BOS text",
  );
});

Deno.test("Qwen 3 think blocks: only after the last user query; reasoning split out; leading newlines", () => {
  // The template's documented rendering of [user Hi, assistant Hello] ends with "<|im_end|>\n", which a
  // continued final message leaves off.
  assert.equal(
    renderChat("qwen3", [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }]) +
      "<|im_end|>\n",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello<|im_end|>\n",
  );
  const turns: ChatMessage[] = [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello" },
    { role: "user", content: "Bye" },
    { role: "assistant", content: "\n\nSee you" },
  ];
  const earlier = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n" +
    "<|im_start|>user\nBye<|im_end|>\n";
  assert.equal(renderChat("qwen3", turns), earlier + "<|im_start|>assistant\n<think>\n\n</think>\n\nSee you");
  assert.equal(
    renderChat("qwen3.5", turns),
    earlier + "<|im_start|>assistant\n<think>\n\n</think>\n\nSee you",
    "3.5 trims the body",
  );
  assert.equal(
    renderChat("qwen3-instruct-2507", turns),
    earlier + "<|im_start|>assistant\n\n\nSee you",
    "Instruct-2507 has no think block and keeps the body as it is",
  );
  const reasoned: ChatMessage[] = [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "<think>\n\nplan\n</think>\n\nAnswer" },
  ];
  assert.equal(
    renderChat("qwen3", reasoned),
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nplan\n</think>\n\nAnswer",
  );
  assert.throws(
    () => renderChat("qwen3.5", [{ role: "assistant", content: "x" }]),
    /qwen3\.5 chat template: the conversation needs a user message/,
  );
  assert.throws(
    () => renderChat("qwen3", [{ role: "user", content: "a" }, { role: "system", content: "b" }]),
    /a system message is only allowed first \(message 1\)/,
  );
});

Deno.test("the template a model name implies, the override, and names it cannot place", () => {
  const cases: [string, ChatTemplateName][] = [
    ["meta-llama/Llama-3.1-8B-Instruct", "llama3"],
    ["meta-llama/Llama-3.2-1B-Instruct", "llama3"],
    ["llama3.2:3b", "llama3"],
    ["Llama-3.1-8B-Instruct-Q8_0.gguf", "llama3"],
    ["Qwen/Qwen2.5-7B-Instruct", "chatml-qwen2.5"],
    ["qwen2.5:0.5b", "chatml-qwen2.5"],
    ["Qwen/Qwen3-8B", "qwen3"],
    ["qwen3:1.7b", "qwen3"],
    ["Qwen/Qwen3-4B-Instruct-2507", "qwen3-instruct-2507"],
    ["Qwen/Qwen3.5-9B", "qwen3.5"],
    ["qwen3.5:0.8b", "qwen3.5"],
  ];
  for (const [model, name] of cases) assert.equal(chatTemplateForModel(model), name, model);
  assert.throws(() => chatTemplateForModel("Qwen/Qwen3-4B-Thinking-2507"), /thinking-only Qwen 3 model/);
  for (const model of ["gpt2", "meta-llama/Meta-Llama-3-8B-Instruct", "Qwen/Qwen3.6-27B", "llama3.3"]) {
    assert.throws(
      () => chatTemplateForModel(model),
      /no chat template is known .* pass --chat-template/,
      model,
    );
  }
  assert.equal(resolveChatTemplate("qwen3", "gpt2"), "qwen3");
  assert.equal(resolveChatTemplate("auto", "Qwen/Qwen3.5-4B"), "qwen3.5");
  assert.throws(
    () => resolveChatTemplate("chatml", "x", "--chat-template"),
    /--chat-template must be "auto" or one of/,
  );
});

Deno.test("completion-mode requests carry the family's rendering; chat mode leaves it to the server", () => {
  const item = { context: "the dog ran", student: "dog go home" };
  const prompt = {
    messages: PREFILLED.map((m) => ({ ...m, content: m.content.replace("the dog ran", "{context}") })),
    sampling: { temperature: 1, top_p: 0.8, min_tokens: 255, max_tokens: 256 },
  };
  prompt.messages[2].content = "Student Completion: {student}\n";
  const make = (model: string, extra = {}) =>
    new OpenAITeacher({
      urls: ["http://127.0.0.1:1"],
      mode: "completion",
      model,
      prompt,
      apiKey: "",
      ...extra,
    });
  const qwen = make("Qwen/Qwen3-8B");
  assert.equal(qwen.chatTemplate, "qwen3");
  assert.match(qwen.name, /\(qwen3 template\)/);
  assert.equal(qwen.requestBody(item).body.prompt, EXPECTED_PREFILLED.qwen3);
  const openai = make("Qwen/Qwen3.5-9B", { completionApi: "openai" });
  assert.equal(openai.requestBody(item).body.prompt, EXPECTED_PREFILLED["qwen3.5"]);
  const llama = make("meta-llama/Llama-3.2-3B-Instruct");
  assert.equal(
    llama.requestBody(item).body.prompt,
    EXPECTED_PREFILLED.llama3.slice("<|begin_of_text|>".length),
    "llama.cpp inserts BOS itself",
  );
  assert.equal(make("my-gguf", { chatTemplate: "chatml-qwen2.5" }).chatTemplate, "chatml-qwen2.5");
  assert.throws(() => make("my-gguf"), /no chat template is known for teacher model "my-gguf"/);
  assert.throws(() => make("x", { chatTemplate: "nope" }), /chatTemplate must be "auto" or one of/);
  const chat = new OpenAITeacher({
    urls: ["http://127.0.0.1:1"],
    mode: "chat",
    model: "my-gguf",
    apiKey: "",
  });
  assert.equal(chat.chatTemplate, undefined);
  assert.ok(Array.isArray(chat.requestBody(item).body.messages));
});

Deno.test("teacher-check prints the rendered prompt of completion mode, byte for byte, and sends it", async () => {
  const fake = startTeacherServer({ flavor: "llamacpp" });
  try {
    const item = { context: "the dog ran ", student: "dog go home" };
    const args = ["--teacher-url", fake.url, "--mode", "completion", "--model", "Qwen/Qwen3-4B"];
    const p = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../cli/teacher_check.ts", import.meta.url).pathname,
        ...args,
        "--context",
        item.context,
        "--student",
        item.student,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(p.stdout);
    assert.equal(p.code, 0, out + new TextDecoder().decode(p.stderr));
    const expected = renderChat("qwen3", fillMessages(DEFAULT_PROMPT, item));
    assert.ok(out.includes(`rendered prompt (qwen3 template;`), out);
    assert.ok(out.includes(`\n${JSON.stringify(expected)}\n`), "the JSON form, every byte visible");
    assert.equal(fake.requests.at(-1)!.body.prompt, expected, "the request carries the same text");
  } finally {
    await fake.close();
  }
});
