/**
 * The baseline's corpus text: `babylm-interaction` reads each file as `' '.join(f.readlines())` (every
 * newline but a final one followed by a space), `raw` reads it as it is; prepareRun hands the config's
 * choice to the corpus reader.
 */
import assert from "node:assert/strict";
import { readCorpusDir } from "../cli/corpus_dir.ts";
import { BABYLM_INTERACTION, TINY, type TrainConfig } from "../interaction/config.ts";
import { prepareRun } from "../interaction/prepare.ts";
import type { LineJoin } from "../interaction/corpus.ts";
import { CorpusTeacher } from "../interaction/teacher.ts";

/** One code unit per token, so tokens spell the text that was tokenized. */
const chars = (text: string) => Array.from(text, (c) => c.charCodeAt(0));
const spelled = (tokens: ArrayLike<number>) => String.fromCharCode(...Array.from(tokens));

// One utterance per line, as the BabyLM .train files are; one line ends in "\r\n".
const FILE = "*MOT:\tlook at the doggie !\n*CHI:\tdoggie .\r\n*MOT:\tyes , a big doggie .\n*CHI:\tbig .\n";
// Python: open(f).readlines() gives the lines with their "\n" ("\r\n" read as "\n"); ' '.join puts a
// space between consecutive lines, so after every newline except the last.
const JOINED = "*MOT:\tlook at the doggie !\n *CHI:\tdoggie .\n *MOT:\tyes , a big doggie .\n *CHI:\tbig .\n";

Deno.test("corpusJoin: babylm-interaction joins a one-line-per-utterance file as the baseline, raw keeps it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/childes.train`, FILE);
    const [baseline] = await readCorpusDir(dir, chars, { lineJoin: BABYLM_INTERACTION.corpusJoin });
    assert.equal(spelled(baseline.tokens), JOINED);
    const [raw] = await readCorpusDir(dir, chars, { lineJoin: "raw" });
    assert.equal(spelled(raw.tokens), FILE);
    // Words are the same either way: the join adds whitespace only.
    assert.equal(baseline.words, raw.words);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("corpusJoin: prepareRun reads the corpus with the config's join", async () => {
  for (const corpusJoin of ["baseline", "raw"] as const) {
    const seen: LineJoin[] = [];
    const config: TrainConfig = {
      ...TINY,
      corpus: { kind: "dir", path: "/corpus" },
      corpusJoin,
      tokenizer: "train",
      vocabSize: 300,
    };
    const inputs = await prepareRun(config, () => new CorpusTeacher(), {
      corpusDirText: () =>
        (async function* () {
          yield FILE.repeat(20);
        })(),
      readCorpusDir: async (_path, encode, { lineJoin }) => {
        seen.push(lineJoin);
        const dir = await Deno.makeTempDir();
        try {
          await Deno.writeTextFile(`${dir}/childes.train`, FILE.repeat(20));
          return await readCorpusDir(dir, encode, { lineJoin });
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      },
    });
    assert.deepEqual(seen, [corpusJoin]);
    const text = inputs.tokenizer.decode(Array.from(inputs.corpus.sources[0].tokens));
    assert.equal(
      text,
      corpusJoin === "baseline"
        ? FILE.repeat(20).replaceAll("\r\n", "\n").replace(/\n(?!$)/g, "\n ")
        : FILE.repeat(20),
    );
  }
});
