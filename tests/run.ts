/**
 * `deno task test`: the whole suite once on wgpu's GL backend (Mesa llvmpipe here), then the engine's
 * tests (every kernel test, the model tests) again on Vulkan (Mesa lavapipe here, the NVIDIA or AMD
 * driver on a workstation) with the GPU kernel family forced, so both backends and both families are
 * checked on every run. A backend without an adapter is skipped with a note; when GL has none the whole
 * suite runs on whatever Deno picks.
 *
 *   deno task test [FILES...] [-- deno test options]
 *
 * Files given narrow both passes (the second keeps the engine tests among them). Exit status: non-zero
 * when any pass failed.
 * @module
 */
import { basename, join } from "node:path";

/** Model tests that run on both backends, besides every test importing `../shaders/` (the kernel tests). */
const MODEL_TESTS = [
  "gpt2_test.ts",
  "gpt2_dropout_test.ts",
  "generate_test.ts",
  "f16_infer_test.ts",
  "f16_train_test.ts",
  "f16_halfsums_test.ts",
  "f16_step_test.ts",
  "f16_cli_test.ts",
  "f16_resume_test.ts",
  "eval_f16_test.ts",
];

/** The test files of `dir` whose source imports a kernel module, plus {@link MODEL_TESTS}. */
export async function engineTests(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (!e.isFile || !e.name.endsWith("_test.ts")) continue;
    const path = join(dir, e.name);
    if (MODEL_TESTS.includes(e.name) || /from "\.\.\/shaders\//.test(await Deno.readTextFile(path))) {
      out.push(path);
    }
  }
  return out.sort();
}

/** The adapter's description on `backend` (DENO_WEBGPU_BACKEND), or undefined when there is none. */
async function probe(backend: string): Promise<string | undefined> {
  const code = `const a = await navigator.gpu?.requestAdapter();
if (!a) Deno.exit(3);
console.log([a.info.description, a.info.vendor].filter(Boolean).join(" / "));`;
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { DENO_WEBGPU_BACKEND: backend },
    stdout: "piped",
    stderr: "null",
    signal: AbortSignal.timeout(60_000),
  });
  try {
    const r = await cmd.output();
    return r.success ? new TextDecoder().decode(r.stdout).trim() || backend : undefined;
  } catch {
    return undefined;
  }
}

/** Run `deno test` on `files` with `env`; resolves with success and seconds taken. */
async function pass(
  title: string,
  files: string[],
  flags: string[],
  env: Record<string, string>,
): Promise<{ title: string; ok: boolean; seconds: number }> {
  console.log(`\n=== ${title}\n`);
  const t0 = performance.now();
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check=remote", ...flags, ...files],
    env,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  return { title, ok: r.success, seconds: (performance.now() - t0) / 1000 };
}

if (import.meta.main) {
  const dir = new URL(".", import.meta.url).pathname;
  const split = Deno.args.indexOf("--");
  const given = split < 0 ? Deno.args : Deno.args.slice(0, split);
  const flags = split < 0 ? [] : Deno.args.slice(split + 1);
  const engine = await engineTests(dir);
  const second = given.length ? engine.filter((p) => given.some((g) => basename(g) === basename(p))) : engine;
  const [gl, vulkan] = [await probe("gl"), await probe("vulkan")];
  console.log(`adapters: GL ${gl ?? "none"}; Vulkan ${vulkan ?? "none"}`);
  const results = [];
  results.push(
    await pass(
      gl ? `all tests on GL (${gl})` : "all tests (no GL adapter: the backend Deno picks)",
      given.length ? given : [dir],
      flags,
      gl ? { DENO_WEBGPU_BACKEND: "gl" } : {},
    ),
  );
  if (!vulkan) {
    console.log(
      "\nnote: no Vulkan adapter, so the engine tests ran on one backend only (Debian: apt-get install " +
        "mesa-vulkan-drivers libvulkan1 gives Mesa lavapipe)",
    );
  } else if (!gl) {
    console.log("\nnote: no GL adapter; the suite above ran on Vulkan");
  } else if (second.length) {
    results.push(
      await pass(
        `engine tests on Vulkan (${vulkan}), GPU kernel family forced`,
        second,
        flags,
        { DENO_WEBGPU_BACKEND: "vulkan", TEST_KERNELS: "gpu" },
      ),
    );
  }
  console.log("");
  for (const r of results) {
    console.log(`${r.ok ? "ok    " : "FAILED"} ${r.title} (${r.seconds.toFixed(0)} s)`);
  }
  if (!results.every((r) => r.ok)) Deno.exit(1);
}
