import assert from "node:assert/strict";
import {
  aoaScore,
  childAoa,
  fitSigmoid,
  modelAoa,
  parseCdiChildes,
  parseCdiHuman,
  type Sigmoid,
  sigmoidAt,
} from "../eval/aoa.ts";
import { parseCsv } from "../eval/csv.ts";
import { pearson } from "../eval/stats.ts";
import { main } from "../cli/eval.ts";
import type { Scorer, TextCodec } from "../eval/types.ts";

const SHARED = new URL("../../shared/data/babylm_eval_2026/", import.meta.url).pathname;
const CHILD = `${SHARED}aoa_reference/chang-bergen-2022/child_american_english_proportions.csv`;
const WORDBANK = `${SHARED}aoa_reference/evaluation-pipeline-2023/word_list.csv`;
const CDI_CHILDES = `${SHARED}full_eval/aoa/cdi_childes.json`;

function present(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    console.log(`  skipped: ${path} is not present`);
    return false;
  }
}

/** scipy's answers for the same fits (tests/eval_aoa_reference.py), or undefined without python3 + scipy. */
async function scipy(query: unknown): Promise<
  { child: (number | null)[]; model: (number | null)[]; pearson?: [number, number] } | undefined
> {
  const script = new URL("./eval_aoa_reference.py", import.meta.url).pathname;
  try {
    const p = new Deno.Command("python3", {
      args: [script],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    })
      .spawn();
    const w = p.stdin.getWriter();
    await w.write(new TextEncoder().encode(JSON.stringify(query)));
    await w.close();
    const r = await p.output();
    if (!r.success) {
      console.log(
        `  scipy reference unavailable: ${new TextDecoder().decode(r.stderr).trim().split("\n").pop()}`,
      );
      return undefined;
    }
    return JSON.parse(new TextDecoder().decode(r.stdout));
  } catch {
    console.log("  python3 not found: the scipy comparison is skipped");
    return undefined;
  }
}

Deno.test("sigmoid fit: recovers exact parameters; bounds hold", () => {
  const truth: Sigmoid = [0.8, 0.6, 22, 0.05];
  const x = Array.from({ length: 15 }, (_, i) => 16 + i);
  const y = x.map((v) => sigmoidAt(truth, v));
  const p = fitSigmoid(x, y, [1, 0.1, 23, 0], [0, 0, 16, -0.5], [2, 1, 30, 0.5])!;
  p.forEach((v, i) => assert.ok(Math.abs(v - truth[i]) < 1e-6, `parameter ${i}: ${v} vs ${truth[i]}`));
  // A truth outside the box: the fit stays inside and sits on the bound.
  const steep = x.map((v) => sigmoidAt([1, 3, 22, 0], v));
  const q = fitSigmoid(x, steep, [1, 0.1, 23, 0], [0, 0, 16, -0.5], [2, 1, 30, 0.5])!;
  assert.equal(q[1], 1);
  assert.equal(fitSigmoid(x, y, [3, 0.1, 23, 0], [0, 0, 16, -0.5], [2, 1, 30, 0.5]), undefined);
});

Deno.test("child AoA on Chang & Bergen's Wordbank proportions: scipy's fits, and Wordbank's AoA", async () => {
  if (!present(CHILD) || !present(WORDBANK)) return;
  const cdi = parseCdiHuman(await Deno.readTextFile(CHILD), CHILD);
  assert.equal(cdi.words.length, 680);
  assert.deepEqual(cdi.ages, Array.from({ length: 15 }, (_, i) => 16 + i));
  const ours = cdi.proportions.map((p) => childAoa(cdi.ages, p));
  const defined = ours.filter((v) => v !== undefined).length;
  console.log(`  child AoA defined for ${defined} of ${ours.length} words`);
  assert.ok(defined > 500);
  // Against the AoA (months) Wordbank gives the same words in the 2023 pipeline's word list.
  const rows = parseCsv(await Deno.readTextFile(WORDBANK), WORDBANK);
  const col = (n: string) => rows[0].fields.indexOf(n);
  const wordbank = new Map(
    rows.slice(1).map((r) => [r.fields[col("definition")], Number(r.fields[col("aoa")])]),
  );
  const pairs: [number[], number[]] = [[], []];
  cdi.words.forEach((w, i) => {
    const a = ours[i], b = wordbank.get(w);
    if (a !== undefined && b !== undefined && Number.isFinite(b)) {
      pairs[0].push(a);
      pairs[1].push(b);
    }
  });
  const r = pearson(pairs[0], pairs[1]);
  console.log(`  Pearson r with Wordbank's AoA over ${pairs[0].length} words: ${r.toFixed(4)}`);
  assert.ok(pairs[0].length > 400 && r > 0.9, `r = ${r}`);

  const ref = await scipy({
    child: cdi.proportions.map((p) => ({ ages: cdi.ages, props: p })),
    pairs,
  });
  if (!ref) return;
  let same = 0, close = 0, maxDiff = 0;
  ours.forEach((v, i) => {
    const s = ref.child[i];
    if ((v === undefined) === (s === null)) same++;
    if (v !== undefined && s !== null) {
      const d = Math.abs(v - s);
      maxDiff = Math.max(maxDiff, d);
      if (d < 1e-3) close++;
    }
  });
  console.log(
    `  scipy: same defined/undefined for ${same} of ${ours.length}; ${close} of ${defined} within 0.001 months; ` +
      `largest difference ${maxDiff.toExponential(2)} months`,
  );
  assert.ok(same >= ours.length - 3, `${ours.length - same} words differ in whether an AoA exists`);
  assert.ok(close >= defined - 5, `${defined - close} words differ by more than 0.001 months`);
  assert.ok(Math.abs(ref.pearson![0] - r) < 1e-12, "Pearson r against scipy");
});

/** A learning curve of surprisal over words seen with midpoint m (log10 words) and a little wobble. */
function curve(steps: number[], chance: number, m: number, wobble: number): number[] {
  return steps.map((s, k) => {
    const x = Math.log10(s + 1);
    return chance - 0.85 * chance / (1 + Math.exp(-4 * (x - m))) + wobble * Math.sin(3 * k + m);
  });
}

const STEPS = [
  ...Array.from({ length: 9 }, (_, i) => (i + 1) * 1e6),
  ...Array.from({ length: 10 }, (_, i) => (i + 1) * 1e7),
];

Deno.test("model AoA: threshold crossing of the fitted curve, against scipy", async () => {
  const cases = Array.from({ length: 40 }, (_, w) => {
    const nsub = 1 + (w % 3), vocab = 50257;
    return {
      steps: STEPS,
      surprisals: curve(STEPS, nsub * Math.log(vocab), 6.2 + (w % 17) * 0.09, 0.3),
      vocab,
      nsub,
    };
  });
  cases.push({ steps: STEPS, surprisals: STEPS.map(() => 5), vocab: 50257, nsub: 1 }); // flat: never learned
  cases[3].surprisals[5] = NaN;
  const ours = cases.map((c) => modelAoa(c.steps, c.surprisals, c.vocab, c.nsub));
  assert.equal(ours[40], undefined);
  // Without wobble the crossing is where the true curve crosses the threshold.
  const clean = curve(STEPS, Math.log(50257), 7, 0);
  const got = modelAoa(STEPS, clean, 50257, 1)!;
  const thr = Math.log(50257) - 0.5 * (Math.log(50257) - Math.min(...clean));
  const want = 7 - Math.log(0.85 * Math.log(50257) / (Math.log(50257) - thr) - 1) / 4;
  assert.ok(Math.abs(got - want) < 1e-6, `${got} vs ${want}`);
  const ref = await scipy({ model: cases });
  if (!ref) return;
  ours.forEach((v, i) => {
    const s = ref.model[i];
    assert.equal(v === undefined, s === null, `case ${i}: ${v} vs ${s}`);
    if (v !== undefined) assert.ok(Math.abs(v - s!) < 1e-4, `case ${i}: ${v} vs scipy ${s}`);
  });
});

Deno.test("AoA score: 0 below 3 words or when p > 0.1", () => {
  const cdi = { ages: [16, 20, 24, 28], words: ["a1", "b1", "c1", "d1"], proportions: [] as number[][] };
  const mids = [17, 20, 23, 27];
  cdi.proportions = mids.map((m) => cdi.ages.map((a) => 1 / (1 + Math.exp(-0.9 * (a - m)))));
  const curves = (order: number[]) =>
    cdi.words.map((word, i) => ({
      word,
      subwordTokens: 1,
      meanSurprisal: curve(STEPS, Math.log(1000), 6.3 + 0.4 * order[i], 0),
    }));
  const good = aoaScore(STEPS, curves([0, 1, 2, 3]), cdi, 1000);
  assert.equal(good.words.length, 4);
  assert.ok(good.r > 0.95 && good.p < 0.1 && good.score === good.r);
  const weak = aoaScore(STEPS, curves([1, 3, 0, 2]), cdi, 1000);
  assert.ok(weak.p > 0.1 && weak.score === 0, `r ${weak.r} p ${weak.p}`);
  const few = aoaScore(STEPS, curves([0, 1, 2, 3]).slice(0, 2), cdi, 1000);
  assert.equal(few.score, 0);
});

/** Tokens are UTF-16 code units (ids 1..65535), so every character is a token. */
const CHARS: TextCodec = {
  addsBos: false,
  vocabSize: 50257,
  encode: (t) => Array.from(t, (c) => c.charCodeAt(0)),
  decode: (ids) => String.fromCharCode(...ids),
};

/**
 * A model at `words` seen whose surprisal of each CDI word after its context follows a sigmoid in
 * log10(words) with the midpoint `mid(word)`, spread evenly over the word's tokens.
 */
function learner(words: number, mid: Map<string, number>): Scorer {
  const byLength = [...mid.keys()].sort((a, b) => b.length - a.length);
  return {
    tokenLogprobs: (seqs) =>
      Promise.resolve(seqs.map((s) => {
        const text = CHARS.decode(s);
        const w = byLength.find((x) => text.endsWith(` ${x}`));
        const out = new Float32Array(s.length - 1).fill(-1);
        if (w === undefined) return out;
        const chance = (w.length + 1) * Math.log(50257);
        const surprisal = chance - 0.85 * chance / (1 + Math.exp(-4 * (Math.log10(words + 1) - mid.get(w)!)));
        for (let i = s.length - w.length; i < s.length; i++) out[i - 1] = -surprisal / w.length;
        return out;
      })),
  };
}

Deno.test("deno task eval --run with aoa: the real CDI contexts, surprisal.json and the score", async () => {
  if (!present(CDI_CHILDES) || !present(CHILD)) return;
  const parsed = parseCdiChildes(await Deno.readTextFile(CDI_CHILDES), CDI_CHILDES);
  assert.equal(parsed.words.length, 504);
  assert.equal(parsed.contexts.flat().length, 8005, "the pipeline's AOA_SIZE");
  const cdi = parseCdiHuman(await Deno.readTextFile(CHILD), CHILD);
  // Midpoints that follow the children's AoA, so the score must come out close to 1.
  const mid = new Map<string, number>();
  cdi.words.forEach((w, i) => {
    const a = childAoa(cdi.ages, cdi.proportions[i]);
    if (a !== undefined) mid.set(w, 6.1 + (a - 16) / 14 * 1.8);
  });
  const dir = await Deno.makeTempDir();
  try {
    const names = [
      "checkpoint_1M",
      "checkpoint_2M",
      "checkpoint_4M",
      "checkpoint_7M",
      "checkpoint_10M",
      "checkpoint_20M",
      "checkpoint_40M",
      "checkpoint_70M",
      "checkpoint_100M",
    ];
    for (const n of [...names, "round_01_po"]) {
      await Deno.mkdir(`${dir}/run/${n}`, { recursive: true });
      await Deno.writeTextFile(`${dir}/run/${n}/config.json`, "{}");
      await Deno.writeTextFile(`${dir}/run/${n}/tokenizer.json`, "{}");
    }
    await Deno.writeTextFile(
      `${dir}/run/round_01_po/training_state.json`,
      JSON.stringify({ wordsSeen: 5e6 }),
    );
    const loaded: string[] = [];
    const load = (modelDir: string) => {
      loaded.push(modelDir);
      const name = modelDir.split("/").pop()!;
      const words = name === "round_01_po" ? 5e6 : Number(name.slice(11, -1)) * 1e6;
      return Promise.resolve({ scorer: learner(words, mid), encoder: CHARS });
    };
    await main(
      [
        "--run",
        `${dir}/run`,
        "--tasks",
        "aoa",
        "--aoa-data",
        CDI_CHILDES,
        "--cdi-human",
        CHILD,
        "--batch-size",
        "512",
      ],
      load,
    );
    assert.equal(loaded.length, names.length, "a round checkpoint has no task here");
    const out = JSON.parse(await Deno.readTextFile(`${dir}/run/eval/aoa/surprisal.json`));
    assert.equal(
      out.results.length,
      8005 * names.length,
      "8005 rows per word checkpoint; round checkpoints left out",
    );
    assert.deepEqual([...new Set(out.results.map((r: { step: string }) => r.step))], names);
    const row = out.results.find((r: { target_word: string }) => r.target_word === "airplane");
    assert.equal(row.word_count, 1e6);
    const score = JSON.parse(await Deno.readTextFile(`${dir}/run/eval/aoa/aoa_score.json`));
    const report = JSON.parse(await Deno.readTextFile(`${dir}/run/eval/aoa/aoa_report.json`));
    console.log(`  AoA score ${score.aoa.toFixed(4)} over ${report.words.length} words`);
    assert.ok(score.aoa > 0.95 && report.words.length > 300, `score ${score.aoa}`);
    // Without the children's data (none beside the CDI file here) the surprisals are written and no score.
    await Deno.remove(`${dir}/run/eval/aoa`, { recursive: true });
    await main(["--run", `${dir}/run`, "--tasks", "aoa", "--aoa-data", CDI_CHILDES], load);
    assert.equal(loaded.length, names.length, "the checkpoints' reports are reused");
    assert.ok((await Deno.stat(`${dir}/run/eval/aoa/surprisal.json`)).isFile);
    await assert.rejects(() => Deno.stat(`${dir}/run/eval/aoa/aoa_score.json`), Deno.errors.NotFound);
    await assert.rejects(
      () => main(["--model", `${dir}/run/checkpoint_1M`, "--tasks", "aoa", "--aoa-data", CDI_CHILDES], load),
      /task aoa needs --run RUN_DIR/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
