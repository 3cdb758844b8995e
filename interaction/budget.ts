/**
 * Word accounting of a teacher-feedback run and the BabyLM 2026 limits it is checked against.
 *
 * Counted per round and in total (by the run's word measure, words.ts):
 *
 * | count | what | rule it serves |
 * | --- | --- | --- |
 * | `corpusContext` | corpus words shown to the student as contexts | the Strict data budget: corpus text the student trains on |
 * | `corpusContinuation` | corpus words after each context (the corpus teacher's "correction"; an LLM teacher's student never sees them) | the stricter reading: every corpus word drawn counts |
 * | `student` | words the student generated | 2025 capped them; 2026 does not say |
 * | `teacher` | words the teacher returned, cut to the student's length (what is trained on) | "teacher feedback ... must conform to the Strict data requirements": text from an external model counts as training data, as in 2025 |
 * | `trained` | words of every sequence trained on, each time it is trained on (= `wordsSeen`) | checkpoints by words seen; 10 epochs times the budget at most |
 * | `trainedDistinct` | words of the round's sequences, once each | epochs over the data = trained / trainedDistinct |
 *
 * `wordBudget` limits the sum of the counts named in `budgetCounts` (default corpusContext + teacher).
 * `maxEpochs` limits the passes over a round's data (nSftEpochs + nPoEpochs; each round's data is
 * new, so that is also the passes over the run's data). Before a round starts, its corpus counts are
 * known exactly and its student and teacher words are projected as its corpus continuation's words (both
 * continue the same contexts to about the same length); after the teacher turn, before any training on
 * the round, the exact counts are checked again. A round that would pass a limit stops the run with a
 * {@link BudgetStop} naming the count and the limit; the run stays resumable (raise the limit in the
 * run's config.json, then `--resume`).
 * @module
 */
import type { Datapoint } from "./corpus.ts";
import { countWords, type WordMeasure } from "./words.ts";

/** The counts a word budget may sum. */
export const BUDGET_COUNTS = ["corpusContext", "corpusContinuation", "student", "teacher"] as const;

/** A countable kind of words. */
export type BudgetCount = typeof BUDGET_COUNTS[number];

/** Words of one round, or of a run so far. */
export interface WordTally {
  corpusContext: number;
  corpusContinuation: number;
  student: number;
  teacher: number;
  /** Words trained on, repetitions counted. */
  trained: number;
  /** Words of the sequences trained on, each once. */
  trainedDistinct: number;
}

/** The limits a run is checked against (0: none). */
export interface BudgetRules {
  wordBudget: number;
  budgetCounts: readonly BudgetCount[];
  maxEpochs: number;
}

/** A round that would pass a limit: the run stops here, resumable. */
export class BudgetStop extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BudgetStop";
  }
}

/** A tally of zeros. */
export function zeroTally(): WordTally {
  return { corpusContext: 0, corpusContinuation: 0, student: 0, teacher: 0, trained: 0, trainedDistinct: 0 };
}

/** `a + b`, count by count. */
export function addTally(a: WordTally, b: WordTally): WordTally {
  const out = zeroTally();
  for (const k of Object.keys(out) as (keyof WordTally)[]) out[k] = a[k] + b[k];
  return out;
}

/** The sum of the budgeted counts of `t`. */
export function trainingDataWords(t: WordTally, rules: BudgetRules): number {
  return rules.budgetCounts.reduce((a, k) => a + t[k], 0);
}

/** Corpus words of a round's datapoints: contexts and continuations, decoded. */
export function corpusTally(
  points: readonly Datapoint[],
  decode: (ids: number[]) => string,
  measure?: WordMeasure,
): Pick<WordTally, "corpusContext" | "corpusContinuation"> {
  let corpusContext = 0, corpusContinuation = 0;
  for (const p of points) {
    corpusContext += countWords(decode(Array.from(p.context)), measure);
    corpusContinuation += countWords(decode(Array.from(p.continuation)), measure);
  }
  return { corpusContext, corpusContinuation };
}

/** A round's full tally, once its interactions exist. */
export function roundTally(
  corpus: Pick<WordTally, "corpusContext" | "corpusContinuation">,
  texts: readonly { student: string; teacher: string }[],
  sequenceWords: { win: readonly number[]; lose: readonly number[] },
  epochs: { sft: number; po: number },
  measure?: WordMeasure,
): WordTally {
  const sum = (a: readonly number[]) => a.reduce((s, v) => s + v, 0);
  const win = sum(sequenceWords.win), lose = sum(sequenceWords.lose);
  return {
    ...corpus,
    student: texts.reduce((a, t) => a + countWords(t.student, measure), 0),
    teacher: texts.reduce((a, t) => a + countWords(t.teacher, measure), 0),
    // What the loop's steps add to wordsSeen: every winning sequence each SFT epoch, both sequences of
    // every pair each preference epoch.
    trained: epochs.sft * win + epochs.po * (win + lose),
    trainedDistinct: (epochs.sft > 0 || epochs.po > 0 ? win : 0) + (epochs.po > 0 ? lose : 0),
  };
}

/** `12.3M`, `450K`, `999` words. */
export function formatWords(w: number): string {
  if (w >= 1e6) return `${Number((w / 1e6).toPrecision(4))}M`;
  if (w >= 1e4) return `${Number((w / 1e3).toPrecision(4))}K`;
  return String(Math.round(w));
}

/**
 * Why round `round` (0-based) may not run with `total` words counted so far and `projected` for the
 * round, or undefined when it may. `passes` is nSftEpochs + nPoEpochs; `what` says how the round's
 * counts were obtained ("projected" before its interactions, "exact" after).
 */
export function budgetProblem(
  rules: BudgetRules,
  round: number,
  total: WordTally,
  projected: WordTally,
  passes: { sft: number; po: number },
  what: "projected" | "exact",
): string | undefined {
  const n = passes.sft + passes.po;
  if (rules.maxEpochs > 0 && n > rules.maxEpochs) {
    return `round ${round + 1} would train ${n} epochs over its data (nSftEpochs ${passes.sft} + nPoEpochs ` +
      `${passes.po}), past maxEpochs ${rules.maxEpochs}`;
  }
  if (rules.wordBudget > 0) {
    const before = trainingDataWords(total, rules);
    const after = before + trainingDataWords(projected, rules);
    if (after > rules.wordBudget) {
      const parts = rules.budgetCounts.map((k) => `${formatWords(projected[k])} ${k}`).join(" + ");
      return `round ${round + 1} would bring the budgeted words (${rules.budgetCounts.join(" + ")}) to ` +
        `${formatWords(after)} (${after}): ${
          formatWords(before)
        } so far + ${parts} (${what}), past wordBudget ` +
        `${formatWords(rules.wordBudget)} (${rules.wordBudget})`;
    }
  }
  return undefined;
}

/** The end-of-round budget summary, as stored in `budget.jsonl`. */
export interface BudgetSummary {
  round: number;
  step: number;
  /** This round's counts and the run's totals after it. */
  roundWords: WordTally;
  totalWords: WordTally;
  /** The budgeted sum after the round, and the limits. */
  budgetedWords: number;
  budgetCounts: readonly BudgetCount[];
  wordBudget: number;
  /** Passes over the round's data, and trained / trainedDistinct over the run. */
  epochs: number;
  repetition: number;
  maxEpochs: number;
}

/** The summary of round `round` and its text for the log. */
export function budgetSummary(
  rules: BudgetRules,
  round: number,
  step: number,
  roundWords: WordTally,
  totalWords: WordTally,
  epochs: number,
): { record: BudgetSummary; text: string } {
  const budgeted = trainingDataWords(totalWords, rules);
  const repetition = totalWords.trainedDistinct > 0 ? totalWords.trained / totalWords.trainedDistinct : 0;
  const record: BudgetSummary = {
    round,
    step,
    roundWords,
    totalWords,
    budgetedWords: budgeted,
    budgetCounts: rules.budgetCounts,
    wordBudget: rules.wordBudget,
    epochs,
    repetition,
    maxEpochs: rules.maxEpochs,
  };
  const t = totalWords, w = roundWords;
  const limit = (v: number, max: number, unit: string) => (max > 0 ? `${v} of ${max}${unit}` : `${v}${unit}`);
  const text = `words after round ${round + 1}: corpus ${formatWords(t.corpusContext)} context + ` +
    `${formatWords(t.corpusContinuation)} continuation, student ${formatWords(t.student)}, teacher ` +
    `${formatWords(t.teacher)}, trained on ${formatWords(t.trained)} (this round: +${
      formatWords(w.corpusContext)
    } ` +
    `context, +${formatWords(w.teacher)} teacher, +${formatWords(w.trained)} trained); budgeted ` +
    `(${rules.budgetCounts.join(" + ")}) ${
      rules.wordBudget > 0
        ? `${formatWords(budgeted)} of ${formatWords(rules.wordBudget)} (${
          (100 * budgeted / rules.wordBudget).toFixed(1)
        }%)`
        : formatWords(budgeted)
    }; epochs ${limit(epochs, rules.maxEpochs, " per round")}, repetition ${repetition.toFixed(2)}x`;
  return { record, text };
}

/** Check a config's budget fields; throws naming the key. */
export function validateBudget(rules: BudgetRules): void {
  if (!(Number.isFinite(rules.wordBudget) && rules.wordBudget >= 0)) {
    throw new Error(`"wordBudget" must be a number >= 0 (0: no budget), got ${rules.wordBudget}`);
  }
  if (!Number.isInteger(rules.maxEpochs) || rules.maxEpochs < 0) {
    throw new Error(`"maxEpochs" must be an integer >= 0 (0: no limit), got ${rules.maxEpochs}`);
  }
  const bad = rules.budgetCounts.find((k) => !(BUDGET_COUNTS as readonly string[]).includes(k));
  if (bad !== undefined || new Set(rules.budgetCounts).size !== rules.budgetCounts.length) {
    throw new Error(
      `"budgetCounts" must list distinct names of ${BUDGET_COUNTS.join(", ")}, got ${
        JSON.stringify(rules.budgetCounts)
      }`,
    );
  }
  if (rules.wordBudget > 0 && rules.budgetCounts.length === 0) {
    throw new Error(`"budgetCounts" must name at least one count when wordBudget is set`);
  }
}
