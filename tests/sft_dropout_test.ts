/**
 * `sft` and `simpo` train as transformers' train mode does: with the dropout rates of the model's
 * config.json, unless `--dropout P` sets all three; the written config.json records the rates used.
 * At lr 0 a step's loss is the forward's, so dropout shows as a loss away from the eval-mode one.
 */
import assert from "node:assert/strict";
import { main as sft } from "../cli/sft.ts";
import { main as simpo } from "../cli/simpo.ts";
import { parseSafetensors } from "../model/safetensors.ts";
import { testGpu } from "./util.ts";

const FIXTURE = new URL("./fixtures/gpt2_tiny/", import.meta.url).pathname;

/** A copy of the fixture model whose config.json has these dropout rates. */
async function modelWithRates(root: string, name: string, rates: [number, number, number]): Promise<string> {
  const dir = `${root}/${name}`;
  await Deno.mkdir(dir);
  await Deno.copyFile(FIXTURE + "model.safetensors", `${dir}/model.safetensors`);
  const config = JSON.parse(await Deno.readTextFile(FIXTURE + "config.json"));
  [config.embd_pdrop, config.attn_pdrop, config.resid_pdrop] = rates;
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2) + "\n");
  return dir;
}

async function rates(dir: string): Promise<number[]> {
  const c = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  return [c.embd_pdrop, c.attn_pdrop, c.resid_pdrop];
}

Deno.test("sft and simpo drop at the model's config.json rates unless --dropout says otherwise", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir({ prefix: "sft_dropout_" });
  try {
    const ref = parseSafetensors(await Deno.readFile(FIXTURE + "reference.safetensors")).tensors;
    const [B, T] = ref.get("lm.inputs")!.shape;
    const inp = ref.get("lm.inputs")!.data,
      mask = ref.get("lm.mask")!.data,
      tgt = ref.get("lm.targets")!.data;
    const seqs = Array.from({ length: B }, (_, b) => {
      let n = 0;
      while (n < T && mask[b * T + n] === 1) n++;
      return [...Array.from(inp.slice(b * T, b * T + n), Number), Number(tgt[b * T + n - 1])];
    });
    const data = `${root}/data.jsonl`;
    await Deno.writeTextFile(data, seqs.map((tokens) => JSON.stringify({ tokens })).join("\n") + "\n");
    const evalLoss = Number(ref.get("lm.loss")!.data[0]);
    const run = async (model: string, out: string, extra: string[] = []) =>
      (await sft(
        ["--model", model, "--data", data, "--out", `${root}/${out}`, "--steps", "1", "--lr", "0", ...extra],
        gpu,
      ))[0].loss;

    // The fixture's config.json says 0.1 everywhere (a default GPT2Config): sft drops.
    const dropped = await run(FIXTURE, "default");
    assert.ok(Math.abs(dropped - evalLoss) > 1e-3, `dropout changes the loss: ${dropped} vs ${evalLoss}`);
    assert.deepEqual(await rates(`${root}/default`), [0.1, 0.1, 0.1]);
    // The same seed draws the same masks.
    assert.equal(await run(FIXTURE, "again"), dropped);
    assert.notEqual(await run(FIXTURE, "seed", ["--seed", "5"]), dropped);
    // A config.json with rates 0 trains without dropout: the eval-mode loss.
    const off = await modelWithRates(root, "off", [0, 0, 0]);
    assert.ok(Math.abs((await run(off, "from_off")) - evalLoss) < 1e-4 * evalLoss);
    assert.deepEqual(await rates(`${root}/from_off`), [0, 0, 0]);
    // --dropout sets all three, and the written config.json says so.
    const set = await run(off, "set", ["--dropout", "0.2"]);
    assert.ok(Math.abs(set - evalLoss) > 1e-3);
    assert.deepEqual(await rates(`${root}/set`), [0.2, 0.2, 0.2]);
    assert.ok(Math.abs((await run(FIXTURE, "zero", ["--dropout", "0"])) - evalLoss) < 1e-4 * evalLoss);
    await assert.rejects(run(FIXTURE, "bad", ["--dropout", "1"]), /--dropout must be a rate in \[0, 1\)/);

    // simpo likewise: the fixture's rates drop, --dropout 0 gives eval mode's loss.
    const pairs = `${root}/pairs.jsonl`;
    await Deno.writeTextFile(
      pairs,
      [{ prompt: [60, 1, 2], chosen: [3, 4, 5, 60], rejected: [6, 7, 60] }, {
        prompt: [60, 8],
        chosen: [9, 10, 60],
        rejected: [11, 12, 13, 60],
      }].map((p) => JSON.stringify(p)).join("\n") + "\n",
    );
    const po = async (out: string, extra: string[] = []) =>
      (await simpo(
        [
          "--model",
          FIXTURE,
          "--pairs",
          pairs,
          "--out",
          `${root}/${out}`,
          "--steps",
          "1",
          "--lr",
          "0",
          ...extra,
        ],
        gpu,
      ))[0].loss;
    const poOff = await po("po_off", ["--dropout", "0"]);
    assert.ok(Math.abs((await po("po_default")) - poOff) > 1e-4, "simpo drops at the config.json rates");
    assert.deepEqual(await rates(`${root}/po_off`), [0, 0, 0]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
