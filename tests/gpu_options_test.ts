import assert, { deepStrictEqual as assertEquals, rejects } from "node:assert/strict";
import { defaultTuneCache, describeLine, fileStore, openGpu } from "../cli/gpu_options.ts";
import { UsageError } from "../cli/common.ts";

Deno.test("--kernels and --tune reject unknown values before any device is opened", async () => {
  await rejects(
    openGpu({ kernels: "fast" }),
    (e) => e instanceof UsageError && /--kernels must be/.test(e.message),
  );
  await rejects(
    openGpu({ tune: "always" }),
    (e) => e instanceof UsageError && /--tune must be/.test(e.message),
  );
});

Deno.test("the tuning cache file: absent reads as none, saves create the folder and replace the text", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_cache_" });
  const store = fileStore(`${dir}/sub/cache.json`);
  assertEquals(await store.load(), undefined);
  await store.save('{"a": 1}\n');
  await store.save('{"b": 2}\n');
  assertEquals(await store.load(), '{"b": 2}\n');
  assertEquals(store.where, `${dir}/sub/cache.json`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the default cache is one file per adapter under XDG_CACHE_HOME; the log line names backend, adapter and family", () => {
  const saved = Deno.env.get("XDG_CACHE_HOME");
  try {
    Deno.env.set("XDG_CACHE_HOME", "/x/cache");
    const gl = defaultTuneCache("65541//0/llvmpipe (LLVM 15.0.6, 256 bits) on gl");
    assert.match(
      gl,
      /^\/x\/cache\/babylm-webgpu\/tuning\/65541-0-llvmpipe-llvm-15-0-6-256-bits-on-gl-[0-9a-f]{8}\.json$/,
    );
    // The same key gives the same file; another backend, or a key that differs only in punctuation, another.
    assertEquals(defaultTuneCache("65541//0/llvmpipe (LLVM 15.0.6, 256 bits) on gl"), gl);
    const names = [
      gl,
      defaultTuneCache("65541//0/llvmpipe (LLVM 15.0.6, 256 bits) on vulkan"),
      defaultTuneCache("65541/0/llvmpipe (LLVM 15.0.6, 256 bits) on gl"),
      defaultTuneCache("10de/hopper/2335/NVIDIA H100 80GB HBM3 on vulkan"),
    ];
    assertEquals(new Set(names).size, 4);
    assert.match(defaultTuneCache("///"), /\/tuning\/adapter-[0-9a-f]{8}\.json$/);
    assert.ok(defaultTuneCache("x".repeat(300)).length < 140, "long adapter names are cut");
  } finally {
    if (saved === undefined) Deno.env.delete("XDG_CACHE_HOME");
    else Deno.env.set("XDG_CACHE_HOME", saved);
  }
  const line = describeLine({
    backend: "vulkan",
    adapter: { vendor: "nvidia", architecture: "hopper", device: "0", description: "H100", fallback: false },
    kernels: "gpu",
    features: ["shader-f16", "timestamp-query"],
  });
  assertEquals(line, "backend vulkan, adapter nvidia hopper H100, gpu kernels, shader-f16");
});
