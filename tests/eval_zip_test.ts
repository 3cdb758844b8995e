import assert from "node:assert/strict";
import { crc32, EWOK_PASSWORD, listZip, readZip } from "../eval/zip.ts";
import { parseEwok } from "../eval/readers.ts";

const SHARED = new URL("../../shared/data/babylm_eval_2025/full_eval/", import.meta.url);

async function exists(url: URL | string): Promise<boolean> {
  try {
    await Deno.stat(url);
    return true;
  } catch {
    return false;
  }
}

async function sha256(data: Uint8Array): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return [...h].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function which(cmd: string): Promise<boolean> {
  try {
    const r = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" }).output();
    return r.success;
  } catch {
    return false;
  }
}

Deno.test("crc32 matches known check values", () => {
  // The standard check value of CRC-32/ISO-HDLC is crc("123456789") = 0xCBF43926.
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
  const a = new TextEncoder().encode("hello "), b = new TextEncoder().encode("world");
  assert.equal(crc32(b, crc32(a)), crc32(new TextEncoder().encode("hello world")));
});

Deno.test("ZipCrypto zip made by the zip CLI: stored and deflated entries, wrong password", async () => {
  if (!(await which("zip"))) {
    console.log("  skipped: the `zip` command is not installed (apt-get install -y zip)");
    return;
  }
  const dir = await Deno.makeTempDir();
  try {
    const small = "tiny\n";
    const big = Array.from({ length: 400 }, (_, i) => `line ${i} ${"é".repeat(i % 7)} the cat sat`).join(
      "\n",
    );
    await Deno.mkdir(`${dir}/d`);
    await Deno.writeTextFile(`${dir}/d/small.txt`, small);
    await Deno.writeTextFile(`${dir}/d/big.txt`, big);
    // -0 stores (method 0) the first archive; the second deflates (method 8).
    for (const [flag, name] of [["-0", "s.zip"], ["-9", "d.zip"]]) {
      const r = await new Deno.Command("zip", {
        args: ["-q", "-r", flag, "-e", "-P", "pw", name, "d"],
        cwd: dir,
      }).output();
      assert.ok(r.success, new TextDecoder().decode(r.stderr));
      const zip = await Deno.readFile(`${dir}/${name}`);
      const entries = listZip(zip, name);
      assert.ok(entries.filter((e) => !e.name.endsWith("/")).every((e) => e.encrypted));
      const files = await readZip(zip, "pw", name);
      assert.equal(new TextDecoder().decode(files.get("d/small.txt")), small);
      assert.equal(new TextDecoder().decode(files.get("d/big.txt")), big);
      if (flag === "-9") assert.ok(entries.some((e) => e.method === 8), "expected a deflated entry");
      await assert.rejects(() => readZip(zip, "wrong", name), /wrong password|CRC|inflate/);
      await assert.rejects(() => readZip(zip, undefined, name), /no password/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("not a zip: a clear error", () => {
  assert.throws(
    () => listZip(new TextEncoder().encode("hello, this is not a zip archive at all"), "x.zip"),
    /x\.zip: expected a ZIP/,
  );
});

Deno.test("real ewok_filtered.zip decrypts to the published sha256 of every file", async () => {
  if (!(await exists(SHARED))) {
    console.log("  skipped: ../shared/data is not present");
    return;
  }
  const zip = await Deno.readFile(new URL("ewok_filtered.zip", SHARED));
  const list = await Deno.readTextFile(new URL("ewok_filtered.sha256", SHARED));
  const files = await readZip(zip, EWOK_PASSWORD, "ewok_filtered.zip");
  let n = 0, items = 0;
  for (const line of list.split("\n").filter((l) => l.trim())) {
    const [hash, name] = line.trim().split(/\s+/);
    const data = files.get(name);
    assert.ok(data, `${name} is in the archive`);
    assert.equal(await sha256(data), hash, name);
    items += parseEwok(new TextDecoder().decode(data), name).length;
    n++;
  }
  assert.equal(n, 11);
  assert.equal(files.size, 11);
  assert.equal(items, 7618);
  console.log(`  ${n} EWoK files match their sha256; ${items} items`);
});
