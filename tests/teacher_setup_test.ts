/**
 * The one teacher factory and reachability probe, as the CLI (files, environment) and the browser demo
 * (neither) use them: the prompt file is loaded or refused by name, the API key is read from `apiKeyEnv`
 * or its absence is logged, and the probe passes when one server answers any HTTP status.
 */
import assert from "node:assert/strict";
import { TINY } from "../interaction/config.ts";
import { DEFAULT_PROMPT, type PromptTemplate } from "../interaction/prompt.ts";
import { CorpusTeacher, OpenAITeacher } from "../interaction/teacher.ts";
import { createTeacher, probeTeachers, type TeacherHost } from "../interaction/teacher_setup.ts";
import { deadUrl, startTeacherServer } from "./teacher_server.ts";

const PROMPT: PromptTemplate = {
  ...DEFAULT_PROMPT,
  messages: [{ role: "user", content: "Continue: {context} / {student}" }],
};

function openai(url: string, extra: Partial<typeof TINY.teacher> = {}): typeof TINY.teacher {
  return { ...TINY.teacher, kind: "openai", urls: [url], maxAttempts: 1, ...extra };
}

Deno.test("createTeacher: corpus teacher, a prompt file through the host, refused where files cannot be read", async () => {
  assert.ok(await createTeacher(TINY.teacher, { name: "test" }) instanceof CorpusTeacher);
  const loaded: string[] = [];
  const host: TeacherHost = {
    name: "deno task train",
    loadPrompt: (path) => {
      loaded.push(path);
      return Promise.resolve(PROMPT);
    },
    env: () => undefined,
  };
  const t = await createTeacher(openai("http://127.0.0.1:1", { promptFile: "p.json" }), host);
  assert.ok(t instanceof OpenAITeacher);
  assert.deepEqual(loaded, ["p.json"]);
  assert.deepEqual((t as OpenAITeacher).prompt, PROMPT);
  await assert.rejects(
    createTeacher(openai("http://127.0.0.1:1", { promptFile: "p.json" }), { name: "the browser demo" }),
    /teacher\.promptFile "p\.json": the browser demo cannot read files/,
  );
});

Deno.test("createTeacher: the API key comes from apiKeyEnv; a host without an environment says it sends none", async () => {
  const server = startTeacherServer();
  try {
    const item = { context: "the cat", student: "sat on" };
    const keyed = await createTeacher(openai(server.url, { apiKeyEnv: "MY_KEY" }), {
      name: "deno task train",
      env: (name) => (name === "MY_KEY" ? "secret" : undefined),
    });
    await keyed.correct([item]);
    const logs: string[] = [];
    const browser = await createTeacher(openai(server.url, { apiKeyEnv: "MY_KEY" }), {
      name: "the browser demo",
      log: (line) => logs.push(line),
    });
    await browser.correct([item]);
    const gens = server.requests.filter((r) => r.path.startsWith("/v1/"));
    assert.deepEqual(gens.map((r) => r.authorization), ["Bearer secret", null]);
    assert.equal(logs.length, 1);
    assert.match(logs[0], /the browser demo has no environment variables, so teacher\.apiKeyEnv "MY_KEY"/);
  } finally {
    await server.close();
  }
});

Deno.test("probeTeachers: one answering server is enough (any status); none names every URL", async () => {
  const up = startTeacherServer({ loading: true });
  try {
    const dead = deadUrl();
    const logs: string[] = [];
    await probeTeachers([dead, up.url], { log: (l) => logs.push(l) });
    assert.equal(logs.length, 1);
    assert.ok(
      logs[0].startsWith(`warning: teacher server unreachable, the others take its work: ${dead}/health`),
    );
    const dead2 = deadUrl();
    await assert.rejects(probeTeachers([dead, dead2], { timeoutMs: 2000 }), (e: Error) => {
      assert.match(e.message, /^no teacher server answers/);
      for (const u of [dead, dead2]) assert.ok(e.message.includes(`${u}/health`), e.message);
      assert.match(e.message, /fix the teacher URL \(teacher\.urls\)$/);
      return true;
    });
    // The host says where its user sets the URL (the CLI's flag, the demo's field).
    await assert.rejects(
      probeTeachers([dead], { timeoutMs: 2000, urlSetting: "the teacher's Server URL" }),
      /fix the teacher URL \(the teacher's Server URL\)$/,
    );
  } finally {
    await up.close();
  }
});
