/**
 * The embedded default corpus: simple child-directed English generated from a small grammar, so a run
 * works offline with no download. Lines are speaker-labelled like the BabyLM CHILDES (`*MOT:\t...`,
 * lowercase with spaced punctuation) and Switchboard (`A:\t...`) files. The grammar covers
 * subject-verb agreement, regular and irregular plurals, determiner-noun number agreement (a/an,
 * this/these, that/those, numerals), present, past and progressive tense, do-support questions and
 * negation, wh-questions, adjectives, prepositional phrases, "there is/are", imperatives and short
 * question/answer exchanges about one topic. Everything is a pure function of the seed.
 *
 * The same grammar makes minimal pairs ({@link minimalPairs}): a grammatical sentence and the same
 * sentence with one agreement or number error, to check that a model trained on the corpus prefers
 * the grammatical one.
 * @module
 */
import { Rng } from "../model/random.ts";
import { ADJECTIVES, ADVERBS, NAMES, type Noun, NOUNS, PREPOSITIONS, type Verb, VERBS } from "./lexicon.ts";
import { whitespaceWords as countWords } from "./words.ts";

/** How lines look: CHILDES-like (lowercase, " ?" spaced punctuation) or plain written sentences. */
export type LineStyle = "childes" | "plain";

/** A noun phrase with what agreement needs. */
interface NP {
  text: string;
  plural: boolean;
  /** 1, 2 or 3. */
  person: number;
  animate: boolean;
  noun?: Noun;
}

/** A sentence before formatting: lowercase words (names and "I" capitalised) and its end mark. */
interface Sentence {
  text: string;
  end: "." | "?" | "!";
}

const ANIMATE = NOUNS.filter((n) => n.animate);
const THINGS = NOUNS.filter((n) => !n.animate);
const FOOD = NOUNS.filter((n) => n.food);
const PLACES = NOUNS.filter((n) => n.place);
const INTRANSITIVE = VERBS.filter((v) => v.object === "none");
const TRANSITIVE = VERBS.filter((v) => v.object !== "none");

const SUBJECT_PRONOUNS: NP[] = [
  { text: "I", plural: false, person: 1, animate: true },
  { text: "you", plural: false, person: 2, animate: true },
  { text: "he", plural: false, person: 3, animate: true },
  { text: "she", plural: false, person: 3, animate: true },
  { text: "we", plural: true, person: 1, animate: true },
  { text: "they", plural: true, person: 3, animate: true },
];
const OBJECT_PRONOUNS = ["me", "you", "him", "her", "it", "us", "them"];

const SG_DETERMINERS = ["the", "the", "the", "a", "a", "this", "that", "my", "your", "his", "her", "our"];
const PL_DETERMINERS = [
  "the",
  "the",
  "these",
  "those",
  "some",
  "two",
  "three",
  "my",
  "your",
  "our",
  "all the",
];
const INDEFINITE_PL = ["some", "two", "three", "many"];

/** "a" or "an" by the first letter of the next word. */
function article(next: string): string {
  return /^[aeiou]/.test(next) ? "an" : "a";
}

/** Third person singular? (the only case that takes "-s" and "is"/"does"/"was"). */
function isThirdSingular(np: NP): boolean {
  return np.person === 3 && !np.plural;
}

/** Present-tense form of `verb` agreeing with `subject`. */
function present(subject: NP, verb: Verb): string {
  return isThirdSingular(subject) ? verb.s : verb.base;
}

/** Present "be": am, is, are. */
function be(subject: NP): string {
  if (subject.person === 1 && !subject.plural) return "am";
  return isThirdSingular(subject) ? "is" : "are";
}

/** Past "be": was, were. */
function wasWere(subject: NP): string {
  return subject.plural || subject.person === 2 ? "were" : "was";
}

/** Present "do": do, does. */
function doDoes(subject: NP): string {
  return isThirdSingular(subject) ? "does" : "do";
}

/** The grammar with its random stream. */
export class Grammar {
  readonly rng: Rng;
  /** A noun the current exchange is about; noun phrases reuse it now and then. */
  topic: Noun | undefined;

  constructor(seed: number) {
    this.rng = new Rng(seed);
  }

  #chance(p: number): boolean {
    return this.rng.float() < p;
  }

  #adjective(noun: Noun): string {
    const pool = noun.animate
      ? [...ADJECTIVES.any, ...ADJECTIVES.animate]
      : [...ADJECTIVES.any, ...ADJECTIVES.thing];
    let adj = this.rng.pick(pool);
    if (adj === noun.sg) adj = "big"; // no "orange orange"
    return adj;
  }

  /** A determiner + (adjective) + noun phrase for `noun` in the given number. */
  nounPhrase(
    noun: Noun,
    plural: boolean,
    adjective = this.#chance(0.3),
    determiners: readonly string[] = plural ? PL_DETERMINERS : SG_DETERMINERS,
  ): NP {
    const head = plural ? noun.pl : noun.sg;
    const adj = adjective ? this.#adjective(noun) + " " : "";
    let det = this.rng.pick(determiners);
    if (det === "a") det = article(adj || head);
    return { text: `${det} ${adj}${head}`, plural, person: 3, animate: noun.animate, noun };
  }

  /** A noun from `pool`, the current topic when it belongs to the pool and a coin says so. */
  #noun(pool: readonly Noun[]): Noun {
    if (this.topic && pool.includes(this.topic) && this.#chance(0.35)) return this.topic;
    return this.rng.pick(pool);
  }

  /** An animate subject: a pronoun, a name or an animate noun phrase. */
  subject(): NP {
    const u = this.rng.float();
    if (u < 0.3) return this.rng.pick(SUBJECT_PRONOUNS);
    if (u < 0.45) return { text: this.rng.pick(NAMES), plural: false, person: 3, animate: true };
    return this.nounPhrase(this.#noun(ANIMATE), this.#chance(0.4));
  }

  /** An object that fits `verb`: an object pronoun or a noun phrase of the right kind. */
  object(verb: Verb): string {
    if (verb.object !== "food" && this.#chance(0.15)) {
      return verb.object === "any" ? this.rng.pick(OBJECT_PRONOUNS) : this.rng.pick(["it", "them"]);
    }
    const pool = verb.object === "food" ? FOOD : verb.object === "thing" ? THINGS : NOUNS;
    return this.nounPhrase(this.#noun(pool), this.#chance(0.35)).text;
  }

  /** A prepositional phrase of place: "under the big table". */
  place(): string {
    return `${this.rng.pick(PREPOSITIONS)} ${this.nounPhrase(this.rng.pick(PLACES), this.#chance(0.2)).text}`;
  }

  /** A verb phrase after the subject, in the given tense, optionally negated with do-support. */
  #predicate(subject: NP, tense: "present" | "past" | "progressive", negate: boolean): string {
    const verb = this.rng.pick(this.#chance(0.4) ? INTRANSITIVE : TRANSITIVE);
    const obj = verb.object === "none" ? "" : " " + this.object(verb);
    const tail = this.#chance(0.25)
      ? " " + this.place()
      : this.#chance(0.15)
      ? " " + this.rng.pick(tense === "past" ? ADVERBS.past : ADVERBS.present)
      : "";
    let vp: string;
    if (tense === "progressive") vp = `${be(subject)}${negate ? " not" : ""} ${verb.ing}`;
    else if (negate) {
      const aux = tense === "past" ? "did" : doDoes(subject);
      vp = `${this.#chance(0.5) ? aux + "n't" : aux + " not"} ${verb.base}`;
    } else vp = tense === "past" ? verb.past : present(subject, verb);
    return `${vp}${obj}${tail}`;
  }

  #tense(): "present" | "past" | "progressive" {
    const u = this.rng.float();
    return u < 0.45 ? "present" : u < 0.8 ? "past" : "progressive";
  }

  /** A declarative sentence, negated about one time in five. */
  declarative(): Sentence {
    const s = this.subject();
    return { text: `${s.text} ${this.#predicate(s, this.#tense(), this.#chance(0.2))}`, end: "." };
  }

  /** "the ball is red", "the cats were not under the bed", "it is empty". */
  copula(): Sentence {
    const np = this.#chance(0.5)
      ? this.nounPhrase(this.#noun(NOUNS), this.#chance(0.4), false)
      : this.subject();
    const verb = this.#chance(0.7) ? be(np) : wasWere(np);
    const neg = this.#chance(0.2) ? " not" : "";
    const noun = np.noun ?? ANIMATE[0];
    const rest = this.#chance(0.5)
      ? this.place()
      : np.noun
      ? this.#adjective(noun)
      : this.rng.pick(ADJECTIVES.animate);
    return { text: `${np.text} ${verb}${neg} ${rest}`, end: "." };
  }

  /** "there is a dog on the bed", "there are two cats in the box". */
  existential(): Sentence {
    const plural = this.#chance(0.45);
    // Existentials take indefinite determiners ("there is my dog" is odd).
    const np = this.nounPhrase(this.#noun(NOUNS), plural, this.#chance(0.3), plural ? INDEFINITE_PL : ["a"]);
    return { text: `there ${plural ? "are" : "is"} ${np.text} ${this.place()}`, end: "." };
  }

  /** Yes/no questions with do-support, "be" or "can". */
  yesNoQuestion(): Sentence {
    const s = this.subject();
    const u = this.rng.float();
    if (u < 0.5) {
      const past = this.#chance(0.3);
      const verb = this.rng.pick(VERBS);
      const obj = verb.object === "none" ? "" : " " + this.object(verb);
      const aux = past ? "did" : doDoes(s);
      return { text: `${aux} ${s.text} ${verb.base}${obj}`, end: "?" };
    }
    if (u < 0.8) {
      const pred = this.#chance(0.5) ? this.place() : this.rng.pick(ADJECTIVES.animate);
      const aux = s.text === "I" ? "am" : be(s);
      return { text: `${aux} ${s.text} ${pred}`, end: "?" };
    }
    const verb = this.rng.pick(INTRANSITIVE);
    return { text: `can ${s.text} ${verb.base}`, end: "?" };
  }

  /** Wh-questions: what/where/who/what color/how many. */
  whQuestion(): Sentence {
    const u = this.rng.float();
    if (u < 0.25) {
      const s = this.subject();
      const verb = this.rng.pick(TRANSITIVE);
      const aux = this.#chance(0.3) ? "did" : doDoes(s);
      return { text: `what ${aux} ${s.text} ${verb.base}`, end: "?" };
    }
    if (u < 0.45) {
      const np = this.nounPhrase(this.#noun(NOUNS), this.#chance(0.4));
      return { text: `where ${np.plural ? "are" : "is"} ${np.text}`, end: "?" };
    }
    if (u < 0.65) {
      const verb = this.rng.pick(TRANSITIVE);
      const past = this.#chance(0.4);
      return { text: `who ${past ? verb.past : verb.s} ${this.object(verb)}`, end: "?" };
    }
    if (u < 0.8) {
      const s = this.subject();
      return { text: `what ${be(s)} ${s.text} doing`, end: "?" };
    }
    if (u < 0.9) {
      const np = this.nounPhrase(this.#noun(THINGS), this.#chance(0.3), false);
      return { text: `what color ${np.plural ? "are" : "is"} ${np.text}`, end: "?" };
    }
    const noun = this.#noun(NOUNS);
    return { text: `how many ${noun.pl} ${this.#chance(0.5) ? "are there" : "do you see"}`, end: "?" };
  }

  /** Imperatives: "look at the dog", "put the cup on the table", "don't throw the ball". */
  imperative(): Sentence {
    const u = this.rng.float();
    const thing = () => this.nounPhrase(this.#noun(THINGS), this.#chance(0.3)).text;
    if (u < 0.25) {
      return { text: `look at ${this.nounPhrase(this.#noun(NOUNS), this.#chance(0.4)).text}`, end: "!" };
    }
    if (u < 0.45) return { text: `give me ${thing()}`, end: "." };
    if (u < 0.65) return { text: `put ${thing()} ${this.place()}`, end: "." };
    const verb = this.rng.pick(TRANSITIVE);
    if (u < 0.8) return { text: `don't ${verb.base} ${this.object(verb)}`, end: "!" };
    return { text: `let's ${this.rng.pick(INTRANSITIVE).base}`, end: "!" };
  }

  /** Two clauses joined by "and"/"but"/"because", or one embedded under "I think". */
  complex(): Sentence {
    const a = this.declarative().text;
    if (this.#chance(0.3)) return { text: `${this.rng.pick(["I think", "I know", "look,"])} ${a}`, end: "." };
    return { text: `${a} ${this.rng.pick(["and", "but", "because"])} ${this.declarative().text}`, end: "." };
  }

  /** Any sentence, by rough child-directed frequencies. */
  sentence(): Sentence {
    const u = this.rng.float();
    if (u < 0.28) return this.declarative();
    if (u < 0.4) return this.copula();
    if (u < 0.5) return this.existential();
    if (u < 0.65) return this.yesNoQuestion();
    if (u < 0.8) return this.whQuestion();
    if (u < 0.92) return this.imperative();
    return this.complex();
  }

  /**
   * A question about one topic and a fitting answer: where-is, do-you-want, what-is-it-doing or
   * what-color. The answer is a full sentence, a pronoun sentence or a fragment.
   */
  exchange(): [Sentence, Sentence] {
    const u = this.rng.float();
    if (u < 0.3) {
      this.topic = this.rng.pick(NOUNS);
      const np = this.nounPhrase(this.topic, this.#chance(0.3));
      const where = this.place();
      const pron = np.plural ? "they are" : "it is";
      const answer = this.rng.pick([
        `${np.text} ${np.plural ? "are" : "is"} ${where}`,
        `${pron} ${where}`,
        where,
      ]);
      return [{ text: `where ${np.plural ? "are" : "is"} ${np.text}`, end: "?" }, { text: answer, end: "." }];
    }
    if (u < 0.55) {
      this.topic = this.rng.pick(FOOD);
      const want = this.nounPhrase(this.topic, this.#chance(0.3), false);
      const other = this.nounPhrase(this.rng.pick(FOOD), this.#chance(0.3), false);
      const answer = this.rng.pick([`yes, I want ${want.text}`, `no, I want ${other.text}`, "yes", "no"]);
      return [{ text: `do you want ${want.text}`, end: "?" }, { text: answer, end: "." }];
    }
    if (u < 0.8) {
      this.topic = this.rng.pick(ANIMATE);
      const np = this.nounPhrase(this.topic, this.#chance(0.3));
      const verb = this.rng.pick(INTRANSITIVE);
      const aux = np.plural ? "are" : "is";
      const answer = this.rng.pick([
        `${np.text} ${aux} ${verb.ing}`,
        `${np.plural ? "they" : "it"} ${aux} ${verb.ing}`,
        verb.ing,
      ]);
      return [{ text: `what ${aux} ${np.text} doing`, end: "?" }, { text: answer, end: "." }];
    }
    this.topic = this.rng.pick(THINGS);
    const np = this.nounPhrase(this.topic, this.#chance(0.3), false);
    const color = this.rng.pick(["red", "blue", "green", "yellow", "orange", "purple"]);
    const answer = this.rng.pick([`${np.plural ? "they are" : "it is"} ${color}`, color]);
    return [{ text: `what color ${np.plural ? "are" : "is"} ${np.text}`, end: "?" }, {
      text: answer,
      end: ".",
    }];
  }
}

/** Write a sentence in a line style: CHILDES-like "where is the ball ?" or plain "Where is the ball?". */
export function formatSentence(s: { text: string; end: string }, style: LineStyle): string {
  if (style === "childes") return `${s.text} ${s.end}`;
  return `${s.text[0].toUpperCase()}${s.text.slice(1)}${s.end}`;
}

/** Options of {@link generateLines}. */
export interface GrammarOptions {
  seed: number;
  /** `childes`: `*MOT:`/`*CHI:`/`*FAT:` lines, CHILDES style; `plain`: `A:`/`B:` lines, written style. */
  style: LineStyle;
}

/**
 * An endless stream of speaker-labelled lines (tab after the label, as in the BabyLM files), in short
 * conversations: an adult question, the other speaker's answer, then a few more sentences.
 */
export function* generateLines({ seed, style }: GrammarOptions): Generator<string> {
  const g = new Grammar(seed);
  const adult = style === "childes" ? ["*MOT:", "*MOT:", "*FAT:"] : ["A:"];
  const other = style === "childes" ? "*CHI:" : "B:";
  for (;;) {
    const a = g.rng.pick(adult);
    const [q, ans] = g.exchange();
    yield `${a}\t${formatSentence(q, style)}`;
    yield `${other}\t${formatSentence(ans, style)}`;
    const more = 1 + g.rng.int(5);
    for (let i = 0; i < more; i++) {
      const speaker = g.rng.float() < 0.65 ? a : other;
      yield `${speaker}\t${formatSentence(g.sentence(), style)}`;
    }
    g.topic = undefined;
  }
}

/** Whitespace-separated words of a text, as Python's `len(text.split())` (words.ts). */
export { countWords };

/** At least `words` words of generated lines, joined with "\n" (no trailing newline, as BabyLM files). */
export function generateText(words: number, options: GrammarOptions): string {
  const lines: string[] = [];
  let n = 0;
  for (const line of generateLines(options)) {
    if (n >= words) break;
    lines.push(line);
    n += countWords(line);
  }
  return lines.join("\n");
}

/** A named text source (a file's worth of text). */
export interface TextSource {
  name: string;
  text: string;
}

/**
 * The embedded corpus as two sources, like two BabyLM files: `embedded_childes` (CHILDES-style
 * parent/child talk, 2/3 of the words) and `embedded_dialogue` (plain `A:`/`B:` conversation).
 */
export function embeddedSources(seed: number, words: number): TextSource[] {
  if (!Number.isInteger(words) || words < 1) {
    throw new Error(`embedded corpus: words must be a positive integer, got ${words}`);
  }
  const childes = Math.ceil((words * 2) / 3);
  return [
    { name: "embedded_childes", text: generateText(childes, { seed, style: "childes" }) },
    {
      name: "embedded_dialogue",
      text: generateText(Math.max(1, words - childes), { seed: seed + 1, style: "plain" }),
    },
  ];
}

/** One grammatical/ungrammatical pair. */
export interface MinimalPair {
  good: string;
  bad: string;
  /** What the bad sentence gets wrong. */
  kind: "subject-verb agreement" | "determiner-noun agreement" | "irregular plural";
}

/**
 * `n` minimal pairs from the corpus grammar, in plain style ("The dogs run."): a third of each kind.
 * - subject-verb agreement: the verb (or "is/are", "does/do") takes the other number;
 * - determiner-noun agreement: this/these, that/those, a/two swapped against the noun's number;
 * - irregular plural: an irregular noun gets the regular "-s" plural ("mouses").
 */
export function minimalPairs(n: number, seed: number): MinimalPair[] {
  const g = new Grammar(seed);
  const r = g.rng;
  const out: MinimalPair[] = [];
  const plain = (text: string) => formatSentence({ text, end: "." }, "plain");
  const irregular = NOUNS.filter((x) => x.irregular && x.pl !== x.sg);
  for (let i = 0; i < n; i++) {
    const kind = i % 3;
    if (kind === 0) {
      const noun = r.pick(ANIMATE.filter((x) => x.pl !== x.sg));
      const plural = r.float() < 0.5;
      const np = g.nounPhrase(noun, plural, r.float() < 0.3);
      const other = { ...np, plural: !plural };
      const form = r.int(3);
      let good: string, bad: string;
      if (form === 0) {
        const verb = r.pick(INTRANSITIVE);
        good = `${np.text} ${present(np, verb)}`;
        bad = `${np.text} ${present(other, verb)}`;
      } else if (form === 1) {
        const adj = r.pick(ADJECTIVES.animate);
        good = `${np.text} ${be(np)} ${adj}`;
        bad = `${np.text} ${be(other)} ${adj}`;
      } else {
        const verb = r.pick(TRANSITIVE);
        const obj = g.object(verb);
        good = `${np.text} ${present(np, verb)} ${obj}`;
        bad = `${np.text} ${present(other, verb)} ${obj}`;
      }
      out.push({ good: plain(good), bad: plain(bad), kind: "subject-verb agreement" });
    } else if (kind === 1) {
      const noun = r.pick(NOUNS.filter((x) => x.pl !== x.sg));
      const plural = r.float() < 0.5;
      const adj = r.float() < 0.3 ? r.pick(ADJECTIVES.any) + " " : "";
      const [sgDet, plDet] = r.pick([["this", "these"], ["that", "those"], ["a", "two"]]);
      const head = plural ? noun.pl : noun.sg;
      const fix = (d: string) => (d === "a" ? article(adj || head) : d);
      const good = `${fix(plural ? plDet : sgDet)} ${adj}${head}`;
      const bad = `${fix(plural ? sgDet : plDet)} ${adj}${head}`;
      // The noun phrase as object, so the verb's agreement does not give the answer away.
      const verb = r.pick(TRANSITIVE.filter((v) => v.object !== "food"));
      const subj = r.pick(SUBJECT_PRONOUNS);
      out.push({
        good: plain(`${subj.text} ${present(subj, verb)} ${good}`),
        bad: plain(`${subj.text} ${present(subj, verb)} ${bad}`),
        kind: "determiner-noun agreement",
      });
    } else {
      const noun = r.pick(irregular);
      const det = r.pick(["the", "two", "three", "some", "these", "my"]);
      const wrong = noun.sg + "s";
      const tail = noun.animate
        ? ` ${r.pick(["are", "were"])} ${r.pick(ADJECTIVES.animate)}`
        : ` ${r.pick(["are", "were"])} ${g.place()}`;
      out.push({
        good: plain(`${det} ${noun.pl}${tail}`),
        bad: plain(`${det} ${wrong}${tail}`),
        kind: "irregular plural",
      });
    }
  }
  return out;
}
