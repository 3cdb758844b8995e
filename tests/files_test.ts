/**
 * The one durable atomic write (`cli/files.ts` writeFileAtomic): text, bytes and streams replace a file
 * whole; a stream that fails half-way leaves the old file as it was and no temporary behind.
 */
import assert from "node:assert/strict";
import { writeFileAtomic } from "../cli/files.ts";

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

Deno.test("writeFileAtomic: text, bytes and streams replace the file; a broken stream changes nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "files_" });
  try {
    const path = `${dir}/a.json`;
    await writeFileAtomic(path, "one\n");
    assert.equal(await Deno.readTextFile(path), "one\n");
    await writeFileAtomic(path, new Uint8Array([0x74, 0x77, 0x6f]));
    assert.equal(await Deno.readTextFile(path), "two");
    const enc = new TextEncoder();
    await writeFileAtomic(
      path,
      (async function* () {
        yield enc.encode("thr");
        yield enc.encode("ee");
      })(),
    );
    assert.equal(await Deno.readTextFile(path), "three");
    const broken = (async function* () {
      yield enc.encode("half of fo");
      throw new Error("connection reset");
    })();
    await assert.rejects(writeFileAtomic(path, broken), /connection reset/);
    assert.equal(await Deno.readTextFile(path), "three");
    assert.deepEqual(await names(dir), ["a.json"], "no temporary file is left");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
