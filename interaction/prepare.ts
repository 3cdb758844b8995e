/**
 * Everything a run needs before its first round: the tokenizer (loaded, or trained on the corpus), the
 * tokenized corpus cut into rounds, the teacher, and the student's architecture and initial weights.
 * Browser-safe: file access comes in through {@link PrepareIO}; the embedded corpus, tokenizer training
 * and both teachers need none.
 * @module
 */
import type { GPT2Config } from "../model/config.ts";
import { validateConfig } from "../model/config.ts";
import { Tokenizer } from "../model/tokenizer.ts";
import { trainBpe, trainedBpeJson } from "../model/bpe_train.ts";
import { Corpus, type TokenizedSource, type TokenizeOptions, tokenizeSource } from "./corpus.ts";
import { parseWordMeasure } from "./words.ts";
import { embeddedSources } from "./grammar.ts";
import type { RunInputs } from "./loop.ts";
import type { TrainConfig } from "./config.ts";
import type { Teacher } from "./teacher.ts";

/** The file-system side of preparing a run (Deno implements all; the browser none). */
export interface PrepareIO {
  /**
   * Tokenize every source file of a corpus directory, its lines joined and its words counted as the
   * run's config says.
   */
  readCorpusDir?(
    path: string,
    encode: (text: string) => number[],
    options: Required<Pick<TokenizeOptions, "lineJoin" | "wordMeasure">>,
  ): Promise<TokenizedSource[]>;
  /** Text of every source file of a corpus directory (for tokenizer training). */
  corpusDirText?(path: string): AsyncIterable<string>;
  loadTokenizer?(path: string): Promise<Tokenizer>;
  loadModel?(dir: string): Promise<{ config: GPT2Config; weights: Map<string, Float32Array> }>;
  /** A tokenizer.json saved by an earlier start of the same run (resume). */
  savedTokenizerJson?: string;
  onLog?(line: string): void;
}

/**
 * Build the inputs of a run; `makeTeacher` turns the teacher config into a teacher (the CLI and the
 * demo: `teacher_setup.ts` createTeacher).
 */
export async function prepareRun(
  config: TrainConfig,
  makeTeacher: (config: TrainConfig) => Teacher | Promise<Teacher>,
  io: PrepareIO = {},
): Promise<RunInputs> {
  const log = (s: string) => io.onLog?.(s);
  const needIO = <K extends keyof PrepareIO>(k: K): NonNullable<PrepareIO[K]> => {
    const f = io[k];
    if (!f) {
      throw new Error(
        `this environment cannot ${k} (needed by the config); use the embedded corpus and a trained tokenizer`,
      );
    }
    return f as NonNullable<PrepareIO[K]>;
  };

  // Constructed first: a teacher config it refuses stops the start before any work.
  const teacher = await makeTeacher(config);

  // The embedded corpus is generated once: it feeds tokenizer training and the rounds.
  const embedded = config.corpus.kind === "embedded"
    ? embeddedSources(config.seed, config.corpus.words)
    : undefined;

  // Tokenizer.
  let tokenizer: Tokenizer;
  if (io.savedTokenizerJson) {
    tokenizer = Tokenizer.fromJSON(io.savedTokenizerJson, "run tokenizer.json");
  } else if (config.initModel && !config.tokenizer) {
    tokenizer = await needIO("loadTokenizer")(config.initModel);
  } else if (config.tokenizer === "train") {
    log(`training a byte-level BPE tokenizer with ${config.vocabSize} tokens on the corpus`);
    const texts: AsyncIterable<string> | Iterable<string> = embedded
      ? embedded.map((s) => s.text)
      : needIO("corpusDirText")((config.corpus as { path: string }).path);
    const { bpe } = await trainBpe(texts, { vocabSize: config.vocabSize });
    tokenizer = Tokenizer.fromJSON(trainedBpeJson(bpe), "trained tokenizer");
  } else if (config.tokenizer) {
    tokenizer = await needIO("loadTokenizer")(config.tokenizer);
  } else {
    throw new Error(`config: "tokenizer" must be a tokenizer.json path or "train" (or give "initModel")`);
  }

  // Student, before the corpus is tokenized (the long part): its errors come first.
  let modelConfig: GPT2Config;
  let initWeights: Map<string, Float32Array> | undefined;
  if (config.initModel) {
    const m = await needIO("loadModel")(config.initModel);
    // The run trains with its own rates; its checkpoints' config.json records them.
    modelConfig = { ...m.config, dropout: config.dropout };
    initWeights = m.weights;
    if (modelConfig.vocabSize < tokenizer.vocabSize) {
      throw new Error(
        `initModel ${config.initModel} has ${modelConfig.vocabSize} tokens but the tokenizer has ${tokenizer.vocabSize}`,
      );
    }
  } else {
    modelConfig = validateConfig({
      vocabSize: tokenizer.vocabSize,
      nPositions: config.architecture.nPositions,
      nEmbd: config.architecture.nEmbd,
      nLayer: config.architecture.nLayer,
      nHead: config.architecture.nHead,
      layerNormEpsilon: 1e-5,
      bosTokenId: tokenizer.bosId,
      eosTokenId: tokenizer.eosId,
      dropout: config.dropout,
    }, "student architecture");
  }
  const need = 1 + config.contextLength + config.student.maxTokens;
  if (need > modelConfig.nPositions) {
    throw new Error(
      `the student has ${modelConfig.nPositions} positions; BOS + context (${config.contextLength}) + ` +
        `continuation (${config.student.maxTokens}) needs ${need}`,
    );
  }
  // Corpus: its words (in every chunk) by the run's word measure, as the round loop counts them.
  const encode = (text: string) => tokenizer.encode(text);
  const reading = { lineJoin: config.corpusJoin, wordMeasure: parseWordMeasure(config.wordMeasure) };
  const sources = embedded
    ? await Promise.all(embedded.map((s) => tokenizeSource(s.name, s.text, encode, reading)))
    : await needIO("readCorpusDir")((config.corpus as { path: string }).path, encode, reading);
  const corpus = new Corpus(sources, {
    numRounds: config.numRounds,
    datapointLength: config.datapointLength,
    contextLength: config.contextLength,
    seed: config.seed,
  });
  for (const w of corpus.warnings) log(`warning: ${w}`);

  return { tokenizer, corpus, teacher, modelConfig, initWeights };
}
