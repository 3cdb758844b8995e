/**
 * A fake teacher server for tests: `Deno.serve` on 127.0.0.1, port 0, speaking vLLM's
 * `/v1/chat/completions` and `/v1/completions`, llama.cpp's `/completion`, and the health/info routes
 * (`/health`, `/v1/models`, `/props`). Faults are scripted per request (503, 429, a timeout, a body
 * that is not JSON, empty content, `finish_reason: "abort"`, a context-length 400, a 401), and every
 * request is recorded with its parsed body. {@link startResetServer} is a TCP server that drops every
 * connection (a reset), {@link deadUrl} a port where nothing listens.
 * @module
 */

/** What the next request gets instead of a normal answer. */
export type Fault = "503" | "429" | "hang" | "malformed" | "empty" | "abort" | "context" | "401";

/** A recorded request. */
export interface Recorded {
  path: string;
  body: Record<string, unknown>;
  authorization: string | null;
}

/** Options of {@link startTeacherServer}. */
export interface FakeTeacherOptions {
  /** Faults for the first requests, in order; later requests are answered normally. */
  faults?: Fault[];
  /** Milliseconds before answering request n (0-based), to shuffle completion order. */
  delayMs?: (n: number) => number;
  /** `llamacpp` adds `/props`; `vllm` adds `max_model_len` to `/v1/models`. */
  flavor?: "vllm" | "llamacpp";
  /** Health answers 503 (a model still loading). */
  loading?: boolean;
}

/** A running fake server. */
export interface FakeTeacher {
  url: string;
  requests: Recorded[];
  /** Requests that reached a generation route (fault or not). */
  generations: () => number;
  /** The most generation requests that were open at once. */
  maxConcurrent: () => number;
  close(): Promise<void>;
}

/**
 * The fake's answer: "fixed(" + the student text + ")" where the student text is what follows
 * "Student Completion: " (the baseline's prompt) or "Learner Continuation: " (the default) up to the end of that message (chat) or the next `<|eot_id|>` (completions).
 */
export function fakeAnswer(studentText: string): string {
  return ` fixed(${studentText})`;
}

function studentOf(body: Record<string, unknown>): string {
  const messages = body.messages as { content: string }[] | undefined;
  const text = messages ? messages.map((m) => m.content).join("<|eot_id|>") : String(body.prompt ?? "");
  const m = /(?:Student Completion|Learner Continuation): ([\s\S]*?)(<\|eot_id\|>|$)/.exec(text);
  return m ? m[1] : "?";
}

/** Start a fake teacher. */
export function startTeacherServer(options: FakeTeacherOptions = {}): FakeTeacher {
  const faults = [...(options.faults ?? [])];
  const requests: Recorded[] = [];
  let generations = 0, open = 0, maxOpen = 0;
  const hangs = new Set<number>();
  const json = (value: unknown, status = 200) =>
    new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    if (req.method !== "POST") return await handle(req);
    maxOpen = Math.max(maxOpen, ++open);
    try {
      return await handle(req);
    } finally {
      open--;
    }
  });
  const handle = async (req: Request): Promise<Response> => {
    const path = new URL(req.url).pathname;
    if (req.method === "GET") {
      if (path === "/health") {
        return options.loading ? json({ error: "loading" }, 503) : json({ status: "ok" });
      }
      if (path === "/v1/models") {
        const model: Record<string, unknown> = { id: "fake-llama", object: "model" };
        if (options.flavor !== "llamacpp") model.max_model_len = 8192;
        return json({ object: "list", data: [model] });
      }
      if (path === "/props" && options.flavor === "llamacpp") {
        return json({ default_generation_settings: { n_ctx: 4096 } });
      }
      return json({ error: "not found" }, 404);
    }
    const body = await req.json();
    requests.push({ path, body, authorization: req.headers.get("authorization") });
    const n = generations++;
    const fault = faults.shift();
    const delay = options.delayMs?.(n) ?? 0;
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    const text = fakeAnswer(studentOf(body));
    const finish = fault === "abort" ? "abort" : "length";
    const answer = fault === "empty" ? "" : text;
    switch (fault) {
      case "503":
        return json({ error: "overloaded" }, 503);
      case "429":
        return json({ error: "Model is overloaded" }, 429);
      case "401":
        return json({ error: "bad key" }, 401);
      case "context":
        return path === "/completion"
          ? json({
            error: {
              code: 400,
              message: "the request exceeds the available context size",
              type: "exceed_context_size_error",
            },
          }, 400)
          : json({
            object: "error",
            message: "This model's maximum context length is 8192 tokens.",
            code: 400,
          }, 400);
      case "malformed":
        return new Response("<html>Bad Gateway</html>", { status: 200 });
      case "hang": {
        // Never answer (until the server closes): the client's timeout must fire.
        const id = n;
        hangs.add(id);
        await new Promise<void>((resolve) => {
          const check = setInterval(() => {
            if (!hangs.has(id)) {
              clearInterval(check);
              resolve();
            }
          }, 20);
        });
        return json({ error: "closed" }, 503);
      }
    }
    if (path === "/completion") {
      return json({
        content: answer,
        stop: true,
        stop_type: fault === "abort" ? "abort" : "limit",
        tokens_predicted: 5,
      });
    }
    if (path === "/v1/completions") {
      return json({
        id: "c",
        object: "text_completion",
        choices: [{ index: 0, text: answer, finish_reason: finish }],
      });
    }
    if (path === "/v1/chat/completions") {
      return json({
        id: "c",
        object: "chat.completion",
        choices: [{ index: 0, message: { role: "assistant", content: answer }, finish_reason: finish }],
      });
    }
    return json({ error: `no route ${path}` }, 404);
  };
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    generations: () => generations,
    maxConcurrent: () => maxOpen,
    async close() {
      hangs.clear();
      await server.shutdown();
    },
  };
}

/** A URL on which nothing listens (a port bound and released at once): connections are refused. */
export function deadUrl(): string {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return `http://127.0.0.1:${port}`;
}

/** A TCP server that reads a little of every connection and closes it without answering. */
export function startResetServer(): { url: string; connections: () => number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connections = 0;
  (async () => {
    for await (const conn of listener) {
      connections++;
      await conn.read(new Uint8Array(1024)).catch(() => null);
      conn.close();
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    connections: () => connections,
    close: () => listener.close(),
  };
}
