/**
 * `--resume` reaches the same weights as an uninterrupted run: the same small config is trained once
 * straight through and once killed three times with SIGKILL in round 2, resuming after each: in the student turn
 * (continuations partly stored, the last line cut in half as a kill during an append leaves it) and after
 * a word checkpoint saved the state mid-epoch and one more step was logged (a metrics line cut in half),
 * then once more in round 2's SimPO epoch after a step past the saved state appended its pair rewards (a
 * rewards line cut in half). Weights, optimizer moments, state, every checkpoint, interactions, pair
 * rewards and metrics must match bit for bit (metrics: all but wall-clock fields).
 */
import assert from "node:assert/strict";
import type { MetricsRecord, RunState } from "../interaction/loop.ts";
import { tinyRunConfig } from "./tiny_training.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/**
 * A babylm-interaction-shaped run made tiny: 2 rounds of 16 datapoints (16 + 16 tokens), LM epochs then a
 * SimPO epoch, batch 4, width 32, one layer, the corpus teacher; dropout 0.1 at every site and the
 * baseline's corpus join, as the card preset trains. Resume must regenerate the same dropout masks.
 */
const CONFIG = tinyRunConfig(4, {
  seed: 11,
  nSftEpochs: 3,
  checkpointWords: [[5000, 150]],
  dropout: { embdPdrop: 0.1, attnPdrop: 0.1, residPdrop: 0.1 },
  corpusJoin: "baseline",
});

function command(args: string[]): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/train.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  });
}

async function run(args: string[]): Promise<string> {
  const out = await command(args).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return stderr + new TextDecoder().decode(out.stdout);
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

/** What the poller sees of a run directory. */
interface Seen {
  state?: RunState;
  /** Lines in metrics.jsonl. */
  logged: number;
  /** Lines in round 2's student file, and whether round 2's interaction file is complete. */
  studentLines: number;
  roundDone: boolean;
  /** Lines in round 2's pair-rewards file. */
  rewardLines: number;
}

async function look(dir: string): Promise<Seen> {
  const text = await readText(`${dir}/state/state.json`);
  const lines = async (f: string) =>
    (await readText(`${dir}/${f}`))?.split("\n").filter((l) => l !== "").length ?? 0;
  return {
    state: text ? JSON.parse(text) as RunState : undefined,
    logged: await lines("metrics.jsonl"),
    studentLines: await lines("interactions/round_1.student.jsonl"),
    roundDone: (await readText(`${dir}/interactions/round_1.jsonl`)) !== undefined,
    rewardLines: await lines("interactions/round_1.rewards.jsonl"),
  };
}

/** Start a run and SIGKILL it as soon as `when` holds (polled every 10 ms); throws if it ends first. */
async function runAndKill(args: string[], dir: string, when: (s: Seen) => boolean): Promise<Seen> {
  const child = command(args).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  // Drain the pipes so the child never blocks on a full one.
  const drain = Promise.all([
    child.stdout.pipeTo(new WritableStream()),
    child.stderr.pipeTo(new WritableStream()),
  ]);
  try {
    for (;;) {
      if (exited) throw new Error("the run ended before it could be killed mid-round");
      if (when(await look(dir))) {
        child.kill("SIGKILL");
        break;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    await status;
    await drain.catch(() => {});
  }
  return await look(dir);
}

/** Append half a line to `path`, as a kill in the middle of an append leaves it. */
async function cutLine(path: string, half: string): Promise<void> {
  await Deno.writeTextFile(path, half, { append: true });
}

/** Relative paths of every file under `dir`. */
function files(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(`${dir}/${prefix}`)) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...files(dir, rel));
    else out.push(rel);
  }
  return out.sort();
}

/** Metrics lines without their wall-clock fields. */
function metrics(text: string): Omit<MetricsRecord, "time" | "tokensPerSec">[] {
  return text.split("\n").filter((l) => l !== "").map((l) => {
    const { time: _t, tokensPerSec: _s, ...rest } = JSON.parse(l) as MetricsRecord;
    return rest;
  });
}

Deno.test("train --resume after SIGKILL mid-round reaches the uninterrupted run's weights bit for bit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "train_resume_" });
  try {
    const configPath = `${dir}/config.in.json`;
    await Deno.writeTextFile(configPath, JSON.stringify(CONFIG));
    const a = `${dir}/a`, b = `${dir}/b`;
    await run(["--config", configPath, "--out", a]);

    // Kill 1: in round 2's student turn (state saved at the end of round 1, some continuations stored),
    // with the last stored line cut in half. The window is short: when the poll misses it, the kill lands
    // at the first state saved in round 2 instead, which is mid-round too.
    const k1 = await runAndKill(
      ["--config", configPath, "--out", b],
      b,
      (s) => s.state?.round === 1 && (s.studentLines > 0 || s.state.phase !== "student"),
    );
    const inStudentTurn = k1.state?.phase === "student" && !k1.roundDone;
    if (inStudentTurn) await cutLine(`${b}/interactions/round_1.student.jsonl`, '{"tokens":[3,');
    console.log(
      `  kill 1: ${
        inStudentTurn
          ? `round 2 student turn, ${k1.studentLines} of 16 continuations stored`
          : `missed the student turn; state at round 2 ${k1.state?.phase} step ${k1.state?.step}`
      }`,
    );

    // Kill 2: resumed, then killed after a later state saved mid-epoch in round 2 and one more logged step,
    // with a metrics line cut in half.
    const k2 = await runAndKill(
      ["--resume", b],
      b,
      (s) =>
        s.state?.round === 1 && s.state.phase !== "student" && s.state.step > k1.state!.step &&
        s.logged > s.state.step,
    );
    console.log(
      `  kill 2: ${k2.logged} steps logged; state at round 2 ${k2.state!.phase} epoch ${k2.state!.epoch} ` +
        `batch ${k2.state!.batch}, step ${k2.state!.step}`,
    );
    await cutLine(`${b}/metrics.jsonl`, '{"phase":"sft","rou');

    // Kill 3: resumed, then killed in round 2's SimPO epoch after a state saved mid-epoch and a later step's
    // pair rewards (4 pairs a step) were appended, with a rewards line cut in half.
    const k3 = await runAndKill(
      ["--resume", b],
      b,
      (s) => s.state?.round === 1 && s.state.phase === "po" && s.rewardLines > 4 * s.state.batch,
    );
    console.log(
      `  kill 3: ${k3.rewardLines} pair rewards stored; state at round 2 po batch ${k3.state!.batch}, ` +
        `step ${k3.state!.step}`,
    );
    await cutLine(`${b}/interactions/round_1.rewards.jsonl`, '{"round":1,"ind');

    // A second start without --resume refuses and leaves the run as it is.
    const before = await Deno.readFile(`${b}/state/model.safetensors`);
    const refused = await command(["--config", configPath, "--out", b]).output();
    assert.equal(refused.code, 1);
    assert.match(new TextDecoder().decode(refused.stderr), /is not empty.*--resume/);
    assert.deepEqual(await Deno.readFile(`${b}/state/model.safetensors`), before);

    const log = await run(["--resume", b]);
    assert.match(log, /resumed at round 2, phase (sft|po)/);

    // Same files, same bytes (the metrics' wall-clock fields aside); every pair's rewards in each round.
    assert.deepEqual(files(b), files(a));
    for (const r of [0, 1]) {
      const text = await Deno.readTextFile(`${a}/interactions/round_${r}.rewards.jsonl`);
      const indices = text.trim().split("\n").map((l) => JSON.parse(l).index).sort((x, y) => x - y);
      assert.deepEqual(indices, [...Array(16).keys()], `round ${r}: one reward line per pair`);
    }
    let compared = 0;
    for (const f of files(a)) {
      if (f === "metrics.jsonl") continue;
      if (f === "config.json") {
        // The same config but for the run directory it names.
        const [x, y] = [
          JSON.parse(await Deno.readTextFile(`${a}/${f}`)),
          JSON.parse(await Deno.readTextFile(`${b}/${f}`)),
        ];
        assert.deepEqual({ ...y, outDir: x.outDir }, x);
        continue;
      }
      const [x, y] = [await Deno.readFile(`${a}/${f}`), await Deno.readFile(`${b}/${f}`)];
      assert.ok(x.length === y.length && x.every((v, i) => v === y[i]), `${f} differs after resume`);
      compared++;
    }
    assert.deepEqual(
      metrics(await Deno.readTextFile(`${b}/metrics.jsonl`)),
      metrics(await Deno.readTextFile(`${a}/metrics.jsonl`)),
    );
    console.log(
      `  ${compared} files identical, e.g. state/model.safetensors and state/optimizer.safetensors`,
    );
    // The student trained in train mode: its checkpoints record the dropout rates it used.
    const saved = files(a).filter((f) => f.startsWith("checkpoints/") && f.endsWith("/config.json"));
    assert.ok(saved.length > 0);
    for (const f of saved) {
      const c = JSON.parse(await Deno.readTextFile(`${a}/${f}`));
      assert.deepEqual([c.embd_pdrop, c.attn_pdrop, c.resid_pdrop], [0.1, 0.1, 0.1], f);
    }

    // Resuming a finished run does nothing and changes nothing.
    const finished = await Deno.readTextFile(`${a}/metrics.jsonl`);
    assert.match(await run(["--resume", a]), /the run is complete \(32 steps/);
    assert.deepEqual(files(a), files(b));
    assert.equal(await Deno.readTextFile(`${a}/metrics.jsonl`), finished);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
