/**
 * The public API: the WebGPU engine, generation, tokenizers, checkpoints, the interaction round loop
 * and the evaluations. Everything here runs in Deno and in the browser except the file helpers of
 * `cli/files.ts` (`loadCheckpoint`, `saveCheckpoint`, `loadTokenizer`, `loadPromptTemplate`,
 * `writeFileAtomic`) and `evaluateModel` (reads the evaluation data), which use Deno's file system.
 * @module
 */
export {
  Gpu,
  GpuCapacityError,
  type GpuDescription,
  type GpuOptions,
  type KernelFamily,
  Plan,
  type TensorView,
} from "./shaders/gpu.ts";
export {
  attachTuner,
  memoryStore,
  tune,
  type TuneMode,
  type TuneOptions,
  type TuneStore,
} from "./shaders/tune.ts";
export { GPT2_124M, type GPT2Config, parameterCount, validateConfig } from "./model/config.ts";
export { type ParamSpec, paramTable } from "./model/params.ts";
export { GPT2, initWeights, Workspace } from "./model/gpt2.ts";
export {
  type AdamWConfig,
  BASELINE_ADAMW,
  type Batch,
  type LossSpec,
  type StepMetrics,
  Trainer,
  type TrainerState,
} from "./model/trainer.ts";
export { checkHalfSupport, type Precision, type PrecisionOptions, PRECISIONS } from "./model/precision.ts";
export { LossScaler, SCALER_DEFAULTS, type ScalerOptions, type ScalerState } from "./model/scaler.ts";
export { generate, type GenerateOptions, type Generation, Generator } from "./model/generate.ts";
export { BatchScorer } from "./model/score.ts";
export { Tokenizer, tokenizerJsonFromGpt2Files } from "./model/tokenizer.ts";
export { trainBpe, trainedBpeJson } from "./model/bpe_train.ts";
export {
  loadCheckpoint,
  loadPromptTemplate,
  loadTokenizer,
  saveCheckpoint,
  writeFileAtomic,
} from "./cli/files.ts";
export { parseSafetensors, serializeSafetensors } from "./model/safetensors.ts";
export {
  BABYLM_INTERACTION,
  PRESETS,
  STRICT,
  STRICT_SMALL,
  TINY,
  type TrainConfig,
  validateTrainConfig,
} from "./interaction/config.ts";
export { type LoopEvents, runInteraction, type RunStorage } from "./interaction/loop.ts";
export { prepareRun } from "./interaction/prepare.ts";
export { CorpusTeacher, OpenAITeacher, type Teacher } from "./interaction/teacher.ts";
export { createTeacher, probeTeachers, type TeacherHost } from "./interaction/teacher_setup.ts";
export { learningRate, type ScheduleConfig } from "./interaction/schedule.ts";
export { parseJsonLines } from "./model/jsonl.ts";
export { deriveSeed, Rng } from "./model/random.ts";
export { CHAT_TEMPLATES, chatTemplateForModel, renderChat } from "./interaction/chat_template.ts";
export { BudgetStop, type BudgetSummary, type WordTally } from "./interaction/budget.ts";
export { revisionName, type Track, TRACKS } from "./interaction/tracks.ts";
export { countWords, englishEquivalentWords, type WordMeasure } from "./interaction/words.ts";
export { Corpus } from "./interaction/corpus.ts";
export { embeddedSources, minimalPairs } from "./interaction/grammar.ts";
export { evaluateModel } from "./eval/tasks.ts";
export { Classifier, type ClassifierOptions, initHead } from "./eval/finetune_model.ts";
export {
  FINETUNE_DEFAULTS,
  type FinetuneResult,
  type FinetuneSettings,
  finetuneTask,
} from "./eval/finetune.ts";
export { encodeExamples, FINETUNE_TASKS, padBatch, readTaskFile } from "./eval/finetune_data.ts";
