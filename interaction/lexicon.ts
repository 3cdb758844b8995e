/**
 * The word lists of the embedded child-directed corpus ({@link ./grammar.ts}): a few hundred words of
 * everyday English with the inflections the grammar needs (plurals, third-person -s, past tense,
 * -ing forms), irregular ones spelled out, regular ones derived by the spelling rules below.
 * @module
 */

/** A countable noun. */
export interface Noun {
  sg: string;
  pl: string;
  /** Animals and people can be subjects of verbs like "sleep" and take adjectives like "happy". */
  animate: boolean;
  /** Food can be eaten. */
  food?: boolean;
  /** Things other things can be on, under, in... */
  place?: boolean;
  /** Irregular plural (used by the plural minimal pairs). */
  irregular?: boolean;
}

/** A verb with its inflected forms. */
export interface Verb {
  base: string;
  s: string;
  past: string;
  ing: string;
  /** What the object must be: `none` (intransitive), any `thing`, or `food`. */
  object: "none" | "thing" | "any" | "food";
}

/** Regular English plural: box -> boxes, baby -> babies, dog -> dogs. */
export function regularPlural(sg: string): string {
  if (/(s|x|z|ch|sh)$/.test(sg)) return sg + "es";
  if (/[^aeiou]y$/.test(sg)) return sg.slice(0, -1) + "ies";
  return sg + "s";
}

/** Third-person singular present: watch -> watches, cry -> cries, run -> runs. */
export function thirdPerson(base: string): string {
  return regularPlural(base);
}

/** Regular past tense: jump -> jumped, dance -> danced, cry -> cried, hug -> hugged (CVC doubling). */
export function regularPast(base: string, double = false): string {
  if (double) return base + base[base.length - 1] + "ed";
  if (base.endsWith("e")) return base + "d";
  if (/[^aeiou]y$/.test(base)) return base.slice(0, -1) + "ied";
  return base + "ed";
}

/** -ing form: run -> running (doubling), hide -> hiding, see -> seeing, play -> playing. */
export function ingForm(base: string, double = false): string {
  if (double) return base + base[base.length - 1] + "ing";
  if (base.endsWith("e") && !base.endsWith("ee")) return base.slice(0, -1) + "ing";
  return base + "ing";
}

function noun(sg: string, flags: Partial<Noun> = {}, pl?: string): Noun {
  return { sg, pl: pl ?? regularPlural(sg), animate: false, irregular: pl !== undefined, ...flags };
}

/** A verb; `past` given means irregular, `double` doubles the final consonant (hug -> hugged). */
function verb(base: string, object: Verb["object"], past?: string, double = false): Verb {
  return {
    base,
    s: base === "have" ? "has" : base === "go" ? "goes" : base === "do" ? "does" : thirdPerson(base),
    past: past ?? regularPast(base, double),
    ing: ingForm(base, double),
    object,
  };
}

const A = { animate: true };
const F = { food: true };
const P = { place: true };

/** Nouns; irregular plurals carry their plural explicitly. */
export const NOUNS: readonly Noun[] = [
  noun("dog", A),
  noun("cat", A),
  noun("bird", A),
  noun("duck", A),
  noun("cow", A),
  noun("horse", A),
  noun("pig", A),
  noun("frog", A),
  noun("bear", A),
  noun("monkey", A),
  noun("lion", A),
  noun("rabbit", A),
  noun("puppy", A),
  noun("kitty", A),
  noun("baby", A),
  noun("boy", A),
  noun("girl", A),
  noun("friend", A),
  noun("teacher", A),
  noun("doctor", A),
  noun("farmer", A),
  noun("elephant", A),
  noun("turtle", A),
  noun("child", A, "children"),
  noun("man", A, "men"),
  noun("woman", A, "women"),
  noun("mouse", A, "mice"),
  noun("sheep", A, "sheep"),
  noun("fish", A, "fish"),
  noun("goose", A, "geese"),
  noun("person", A, "people"),
  noun("ball"),
  noun("book"),
  noun("cup"),
  noun("car"),
  noun("truck"),
  noun("block"),
  noun("spoon"),
  noun("hat"),
  noun("shoe"),
  noun("sock"),
  noun("toy"),
  noun("doll"),
  noun("train"),
  noun("boat"),
  noun("crayon"),
  noun("picture"),
  noun("bottle"),
  noun("key"),
  noun("bike"),
  noun("star"),
  noun("balloon"),
  noun("puzzle"),
  noun("drum"),
  noun("brush"),
  noun("dish"),
  noun("bus"),
  noun("coat"),
  noun("flower"),
  noun("leaf", {}, "leaves"),
  noun("foot", {}, "feet"),
  noun("tooth", {}, "teeth"),
  noun("knife", {}, "knives"),
  noun("apple", F),
  noun("banana", F),
  noun("cookie", F),
  noun("cake", F),
  noun("egg", F),
  noun("carrot", F),
  noun("sandwich", F),
  noun("cracker", F),
  noun("grape", F),
  noun("orange", F),
  noun("strawberry", F),
  noun("table", P),
  noun("chair", P),
  noun("bed", P),
  noun("box", P),
  noun("tree", P),
  noun("house", P),
  noun("basket", P),
  noun("blanket", P),
  noun("couch", P),
  noun("door", P),
  noun("window", P),
  noun("bag", P),
];

/** Verbs: intransitive ones take animate subjects; transitive ones name what their object must be. */
export const VERBS: readonly Verb[] = [
  verb("run", "none", "ran", true),
  verb("jump", "none"),
  verb("sleep", "none", "slept"),
  verb("sing", "none", "sang"),
  verb("swim", "none", "swam", true),
  verb("cry", "none"),
  verb("laugh", "none"),
  verb("sit", "none", "sat", true),
  verb("fall", "none", "fell"),
  verb("walk", "none"),
  verb("play", "none"),
  verb("dance", "none"),
  verb("hide", "none", "hid"),
  verb("smile", "none"),
  verb("go", "none", "went"),
  verb("see", "any", "saw"),
  verb("want", "thing"),
  verb("like", "any"),
  verb("have", "thing", "had"),
  verb("find", "thing", "found"),
  verb("take", "thing", "took"),
  verb("hold", "thing", "held"),
  verb("push", "thing"),
  verb("pull", "thing"),
  verb("throw", "thing", "threw"),
  verb("catch", "thing", "caught"),
  verb("make", "thing", "made"),
  verb("get", "thing", "got", true),
  verb("love", "any"),
  verb("need", "thing"),
  verb("carry", "thing"),
  verb("wash", "thing"),
  verb("kiss", "any"),
  verb("bring", "thing", "brought"),
  verb("build", "thing", "built"),
  verb("draw", "thing", "drew"),
  verb("open", "thing"),
  verb("drop", "thing", undefined, true),
  verb("fix", "thing"),
  verb("touch", "any"),
  verb("watch", "any"),
  verb("chase", "any"),
  verb("hug", "any", undefined, true),
  verb("kick", "thing"),
  verb("feed", "any", "fed"),
  verb("hear", "any", "heard"),
  verb("eat", "food", "ate"),
  verb("cut", "food", "cut", true),
  verb("share", "food"),
  verb("pick", "food"),
];

/** Adjectives for anything, and ones that only fit animals and people. */
export const ADJECTIVES = {
  any: [
    "big",
    "little",
    "small",
    "red",
    "blue",
    "green",
    "yellow",
    "orange",
    "purple",
    "new",
    "old",
    "funny",
  ],
  thing: ["soft", "wet", "dirty", "clean", "round", "empty", "heavy", "shiny", "broken", "pretty"],
  animate: ["happy", "sad", "hungry", "sleepy", "silly", "angry", "tired", "nice", "good", "brave"],
} as const;

/** Prepositions of place. */
export const PREPOSITIONS = ["on", "under", "in", "near", "behind", "next to", "by", "inside"] as const;

/** People the speakers talk about, by name. */
export const NAMES = [
  "Mommy",
  "Daddy",
  "Grandma",
  "Grandpa",
  "Anna",
  "Sam",
  "Lily",
  "Max",
  "Emma",
  "Ben",
  "Mia",
  "Tom",
];

/** Time adverbs for the past tense and the present. */
export const ADVERBS = {
  past: ["yesterday", "last night", "this morning", "before lunch", "at the park"],
  present: ["every day", "in the morning", "after lunch", "at night", "all the time", "again", "now"],
} as const;
