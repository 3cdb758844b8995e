/**
 * Teacher prompt and adapters: the baseline prompt renders byte for byte as TEACHER.md's Llama 3.1
 * template; template validation; request bodies field by field for chat, llama.cpp /completion and
 * /v1/completions; answers in input order under bounded concurrency; retries on 503/429/timeouts/resets/
 * malformed or empty bodies/aborted generations; failover from a dead server; no retry of a context
 * overflow or a 401; a clear error when nothing answers; health probes; the corpus teacher.
 */
import assert from "node:assert/strict";
import { DEFAULT_PROMPT, fillMessages, parsePromptTemplate } from "../interaction/prompt.ts";
import { loadPromptTemplate } from "../cli/files.ts";
import { pythonStrip, renderChat } from "../interaction/chat_template.ts";
import { CorpusTeacher, health, OpenAITeacher, type OpenAITeacherOptions } from "../interaction/teacher.ts";
import { deadUrl, fakeAnswer, type Fault, startResetServer, startTeacherServer } from "./teacher_server.ts";

const SHARED = new URL("../../shared/", import.meta.url).pathname;
const BASELINE_PROMPT = `${SHARED}data/interaction_baseline/teacher_prompt.json`;

async function baselinePrompt() {
  try {
    return await loadPromptTemplate(BASELINE_PROMPT);
  } catch {
    return undefined;
  }
}

const ITEMS = [
  { context: "*MOT:\tlook at the doggie .\n*CHI:\t", student: "doggie run fast" },
  { context: "A:\tWhat did you do today?", student: "I goed to park." },
  { context: "The cat sat", student: "on the the mat {context}" },
];

Deno.test("the baseline prompt renders byte for byte as TEACHER.md's Llama 3.1 template", async () => {
  const prompt = await baselinePrompt();
  let doc: string;
  try {
    doc = await Deno.readTextFile(`${SHARED}TEACHER.md`);
  } catch {
    doc = "";
  }
  if (!prompt || !doc) {
    console.log("note: ../shared/TEACHER.md or the baseline prompt absent, rendering check skipped");
    return;
  }
  const line = doc.split("\n").find((l) => l.startsWith("<|begin_of_text|>"));
  assert.ok(line, "TEACHER.md has the template line");
  const context = "  Once upon a time,\nthere was a fox. ", student = "The fox run away {context}.\n";
  const system = prompt.messages[0].content;
  // TEACHER.md writes newlines as "\n" and slots as {system}/{context}/{student}; bodies are trimmed.
  const expected = line.replaceAll("\\n", "\n").replace("{system}", system)
    .replace("{context}", context.trimEnd()) // the user message, trimmed
    .replace("{context}", context) // the prefill: trimming leaves its inside alone
    .replace("{student}", student.trim());
  const got = renderChat("llama3", fillMessages(prompt, { context, student }));
  assert.equal(got, expected);
  assert.ok(got.endsWith(`Partial Text: ${context}\n Corrected Completion:`), "prefill has no <|eot_id|>");
  assert.ok(
    got.includes("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a writer"),
  );
  assert.deepEqual(prompt.sampling, { temperature: 1, top_p: 0.8, min_tokens: 255, max_tokens: 256 });
});

Deno.test("render without a system message or a prefill; Python's strip", () => {
  const r = renderChat("llama3", [{ role: "user", content: " hi " }], { date: "1 Jan 2025", bos: false });
  assert.equal(
    r,
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 1 Jan 2025\n\n" +
      "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  );
  assert.equal(pythonStrip("\x85\x1f a \u3000"), "a");
  assert.equal(pythonStrip("\ufeffa"), "\ufeffa", "U+FEFF is not whitespace to Python");
});

Deno.test("templates: the default is valid, slots fill in one pass, bad files are named", async () => {
  assert.deepEqual(
    parsePromptTemplate(JSON.parse(JSON.stringify(DEFAULT_PROMPT)), "default"),
    DEFAULT_PROMPT,
  );
  const filled = fillMessages(DEFAULT_PROMPT, { context: "a {student} b", student: "S" });
  assert.equal(filled[1].content, "Beginning: a {student} b");
  assert.equal(filled[2].content, "Learner Continuation: S");
  const base = JSON.parse(JSON.stringify(DEFAULT_PROMPT));
  const bad = (patch: (t: typeof base) => void, re: RegExp) => {
    const t = JSON.parse(JSON.stringify(base));
    patch(t);
    assert.throws(() => parsePromptTemplate(t, "p.json"), re);
  };
  bad(
    (t) => (t.messages[1].content = "x {Context}"),
    /p\.json: "messages\[1\]\.content" must be text whose only slots/,
  );
  bad((t) => (t.messages[0].role = "tool"), /"messages\[0\]\.role" must be "system", "user" or "assistant"/);
  bad((t) => (t.sampling.top_p = 0), /"sampling\.top_p" must be a number in \(0, 1\]/);
  bad(
    (t) => (t.sampling.min_tokens = 300),
    /"sampling\.min_tokens" must be an integer in \[0, max_tokens=256\]/,
  );
  bad((t) => (t.extra = 1), /"extra" must be absent/);
  bad((t) => (t.messages = [{ role: "user", content: "{student}" }]), /with a \{context\} slot/);
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/t.json`, "{ nope");
  await assert.rejects(loadPromptTemplate(`${dir}/t.json`), /t\.json: not valid JSON/);
  await assert.rejects(loadPromptTemplate(`${dir}/missing.json`), /cannot read teacher prompt/);
  await Deno.remove(dir, { recursive: true });
});

/** A teacher with fast retries for tests. */
function teacher(urls: string[], extra: Partial<OpenAITeacherOptions> = {}) {
  return new OpenAITeacher({
    urls,
    mode: "chat",
    model: "fake-llama",
    chatTemplate: "llama3",
    apiKey: "",
    timeoutMs: 2000,
    backoffMs: 5,
    maxBackoffMs: 40,
    maxAttempts: 5,
    ...extra,
  });
}

const expectedAnswers = ITEMS.map((it) => fakeAnswer(it.student));

Deno.test("chat mode: exact body, answers in input order, bounded concurrency, onAnswer", async () => {
  const prompt = (await baselinePrompt()) ?? DEFAULT_PROMPT;
  const fake = startTeacherServer({ delayMs: (n) => [60, 5, 30, 0, 10][n % 5] });
  try {
    const items = [...ITEMS, ...ITEMS, ...ITEMS];
    const seen: number[] = [];
    const t = teacher([fake.url + "/v1/"], { prompt, apiKey: "sk-test", maxInFlightPerServer: 2 });
    const got = await t.correct(items, {
      onAnswer: (i, text) => {
        assert.equal(text, expectedAnswers[i % 3]);
        seen.push(i);
      },
    });
    assert.deepEqual(got, [...expectedAnswers, ...expectedAnswers, ...expectedAnswers]);
    assert.deepEqual([...seen].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert.ok(fake.maxConcurrent() <= 2, `max concurrent ${fake.maxConcurrent()}`);
    const r = fake.requests[0];
    assert.equal(r.path, "/v1/chat/completions");
    assert.equal(r.authorization, "Bearer sk-test");
    const first = fake.requests.find((x) =>
      (x.body.messages as { content: string }[])[2].content.includes(ITEMS[0].student)
    )!;
    assert.deepEqual(first.body, {
      model: "fake-llama",
      messages: fillMessages(prompt, ITEMS[0]),
      continue_final_message: true,
      add_generation_prompt: false,
      temperature: 1,
      top_p: 0.8,
      min_tokens: 255,
      max_tokens: 256,
      stream: false,
    });
  } finally {
    await fake.close();
  }
});

Deno.test("completion mode: llama.cpp /completion and /v1/completions bodies", async () => {
  const prompt = (await baselinePrompt()) ?? DEFAULT_PROMPT;
  const fake = startTeacherServer({ flavor: "llamacpp" });
  try {
    const t = teacher([fake.url], { prompt, mode: "completion" });
    assert.deepEqual(await t.correct(ITEMS), expectedAnswers);
    const rendered = renderChat("llama3", fillMessages(prompt, ITEMS[1]));
    assert.ok(rendered.startsWith("<|begin_of_text|>"));
    assert.deepEqual(fake.requests[1].body, {
      prompt: rendered.slice("<|begin_of_text|>".length), // llama.cpp inserts BOS itself
      n_predict: 256,
      ignore_eos: true,
      temperature: 1,
      top_p: 0.8,
      top_k: 0,
      min_p: 0,
      repeat_penalty: 1,
      cache_prompt: true,
      stream: false,
    });
    assert.equal(fake.requests[1].path, "/completion");
    assert.equal(fake.requests[1].authorization, null, "no key, no header");
    const o = teacher([fake.url], { prompt, mode: "completion", completionApi: "openai" });
    assert.deepEqual(await o.correct(ITEMS.slice(0, 1)), expectedAnswers.slice(0, 1));
    const last = fake.requests[fake.requests.length - 1];
    assert.equal(last.path, "/v1/completions");
    assert.deepEqual(last.body, {
      model: "fake-llama",
      prompt: renderChat("llama3", fillMessages(prompt, ITEMS[0])),
      add_special_tokens: false,
      temperature: 1,
      top_p: 0.8,
      min_tokens: 255,
      max_tokens: 256,
      stream: false,
    });
  } finally {
    await fake.close();
  }
});

Deno.test("retries: 503s, 429, a timeout, malformed and empty bodies, aborted generations", async () => {
  const cases: [Fault[], Partial<OpenAITeacherOptions>][] = [
    [["503", "503"], {}],
    [["429"], {}],
    [["hang"], { timeoutMs: 250 }],
    [["malformed"], {}],
    [["empty"], {}],
    [["abort"], {}],
  ];
  for (const [faults, extra] of cases) {
    for (const mode of ["chat", "completion"] as const) {
      const fake = startTeacherServer({ faults: [...faults] });
      try {
        const logs: string[] = [];
        const t = teacher([fake.url], { ...extra, mode, log: (m) => logs.push(m) });
        assert.deepEqual(
          await t.correct(ITEMS.slice(0, 1)),
          expectedAnswers.slice(0, 1),
          `${faults} ${mode}`,
        );
        assert.equal(fake.generations(), faults.length + 1, `${faults} ${mode}: one retry per fault`);
        assert.equal(logs.length, faults.length);
      } finally {
        await fake.close();
      }
    }
  }
});

Deno.test("a reset connection is retried on the next server", async () => {
  const reset = startResetServer();
  const fake = startTeacherServer();
  try {
    const t = teacher([reset.url, fake.url], { failoverAfter: 1 });
    assert.deepEqual(await t.correct(ITEMS.slice(0, 1)), expectedAnswers.slice(0, 1));
    assert.equal(reset.connections(), 1, "the first attempt went to the resetting server");
    assert.equal(fake.generations(), 1);
    const alone = teacher([reset.url], { maxAttempts: 2 });
    await assert.rejects(alone.correct(ITEMS.slice(0, 1)), /after 2 attempts.*connection failed/);
  } finally {
    reset.close();
    await fake.close();
  }
});

Deno.test("failover: a dead server's work goes to the live one", async () => {
  const fake = startTeacherServer();
  try {
    const t = teacher([deadUrl(), fake.url], { failoverAfter: 1, maxInFlightPerServer: 1 });
    const items = [...ITEMS, ...ITEMS];
    assert.deepEqual(await t.correct(items), [...expectedAnswers, ...expectedAnswers]);
    assert.equal(fake.generations(), items.length);
  } finally {
    await fake.close();
  }
});

Deno.test("no blind retries: context overflow and 401 are reported at once", async () => {
  for (const mode of ["chat", "completion"] as const) {
    const fake = startTeacherServer({ faults: ["context"] });
    try {
      await assert.rejects(
        teacher([fake.url], { mode }).correct(ITEMS.slice(0, 1)),
        /longer than the teacher's context/,
      );
      assert.equal(fake.generations(), 1);
    } finally {
      await fake.close();
    }
  }
  const fake = startTeacherServer({ faults: ["401"] });
  try {
    await assert.rejects(teacher([fake.url]).correct(ITEMS.slice(0, 1)), /item 0: .*HTTP 401/);
    assert.equal(fake.generations(), 1);
  } finally {
    await fake.close();
  }
});

Deno.test("nothing answers: the error names every URL, the attempts and the last error, not the key", async () => {
  const a = deadUrl(), b = deadUrl();
  const t = teacher([a, b], { maxAttempts: 3, apiKey: "sk-secret" });
  const err = await t.correct(ITEMS.slice(0, 2)).then(() => undefined, (e) => e as Error);
  assert.ok(err, "rejected");
  assert.match(err.message, /no teacher answered item \d after 3 attempts/);
  assert.ok(err.message.includes(a) && err.message.includes(b), err.message);
  assert.match(err.message, /connection failed/);
  assert.ok(!err.message.includes("sk-secret"));
});

Deno.test("the caller's abort stops waiting requests", async () => {
  const fake = startTeacherServer({ faults: ["hang", "hang"] });
  try {
    const ac = new AbortController();
    const p = teacher([fake.url], { timeoutMs: 10_000 }).correct(ITEMS.slice(0, 2), { signal: ac.signal });
    setTimeout(() => ac.abort(new Error("stopped by test")), 50);
    await assert.rejects(p, /stopped by test/);
  } finally {
    await fake.close();
  }
});

Deno.test("API key from the named environment variable", async () => {
  const fake = startTeacherServer();
  try {
    Deno.env.set("TEACHER_TEST_KEY", "sk-env");
    const t = new OpenAITeacher({
      urls: [fake.url],
      mode: "chat",
      model: "m",
      apiKeyEnv: "TEACHER_TEST_KEY",
    });
    await t.correct(ITEMS.slice(0, 1));
    assert.equal(fake.requests[0].authorization, "Bearer sk-env");
  } finally {
    Deno.env.delete("TEACHER_TEST_KEY");
    await fake.close();
  }
  assert.throws(() => teacher(["ftp://x"]), /must be http or https/);
  assert.throws(() => teacher([]), /at least one server URL/);
});

Deno.test("health probes: vLLM, llama.cpp, loading and dead servers", async () => {
  const v = startTeacherServer({ flavor: "vllm" });
  const l = startTeacherServer({ flavor: "llamacpp" });
  const loading = startTeacherServer({ loading: true });
  try {
    const hv = await health(v.url);
    assert.deepEqual([hv.ok, hv.server, hv.models, hv.maxModelLen], [true, "vllm", ["fake-llama"], 8192]);
    const hl = await health(l.url + "/");
    assert.deepEqual([hl.ok, hl.server, hl.maxModelLen], [true, "llamacpp", 4096]);
    assert.equal((await health(loading.url)).ok, false);
    const dead = await health(deadUrl(), { timeoutMs: 1000 });
    assert.equal(dead.ok, false);
    assert.match(dead.details[0], /^\/health: /);
  } finally {
    await Promise.all([v.close(), l.close(), loading.close()]);
  }
});

Deno.test("corpus teacher: the reference continuation, or a clear error", async () => {
  const t = new CorpusTeacher();
  const seen: [number, string][] = [];
  const got = await t.correct([{ context: "a", student: "b", reference: "c" }, {
    context: "d",
    student: "e",
    reference: "f",
  }], {
    onAnswer: (i, s) => void seen.push([i, s]),
  });
  assert.deepEqual(got, ["c", "f"]);
  assert.deepEqual(seen, [[0, "c"], [1, "f"]]);
  await assert.rejects(t.correct([{ context: "a", student: "b" }]), /item 0 has no reference/);
});
