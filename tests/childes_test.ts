/**
 * The embedded child-directed corpus: deterministic per seed, speaker-labelled lines, a small
 * vocabulary, and agreement that an independent checker (determiner-noun, a/an, subject-verb, "there
 * is/are", "where is/are") finds no fault with; minimal pairs whose good side passes the checker and
 * whose bad side fails it.
 */
import assert from "node:assert/strict";
import {
  countWords,
  embeddedSources,
  generateLines,
  generateText,
  minimalPairs,
} from "../interaction/grammar.ts";
import { ADJECTIVES, NOUNS, VERBS } from "../interaction/lexicon.ts";

const SG_NOUNS = new Set(NOUNS.filter((n) => n.sg !== n.pl).map((n) => n.sg));
const PL_NOUNS = new Set(NOUNS.filter((n) => n.sg !== n.pl).map((n) => n.pl));
const ADJ = new Set<string>([...ADJECTIVES.any, ...ADJECTIVES.thing, ...ADJECTIVES.animate]);
const SG_DET = new Set(["a", "an", "this", "that"]);
const PL_DET = new Set(["these", "those", "two", "three", "many"]);
const S_FORMS = new Set(VERBS.map((v) => v.s).concat(["is", "does"]));
const BASE_FORMS = new Set(VERBS.filter((v) => v.base !== v.past).map((v) => v.base).concat(["are", "do"]));

/** Lowercase words without punctuation or speaker labels. */
function words(line: string): string[] {
  return line.replace(/^\S+:\t/, "").toLowerCase().replace(/[.,?!]/g, " ").split(/\s+/).filter(Boolean);
}

/** The agreement faults of one sentence, by rules written independently of the generator. */
function faults(line: string): string[] {
  const w = words(line);
  const out: string[] = [];
  for (let i = 0; i < w.length; i++) {
    const det = w[i];
    if (!SG_DET.has(det) && !PL_DET.has(det)) continue;
    let j = i + 1;
    if (ADJ.has(w[j]) && (SG_NOUNS.has(w[j + 1]) || PL_NOUNS.has(w[j + 1]))) j++;
    const noun = w[j];
    if (det === "a" || det === "an") {
      const vowel = /^[aeiou]/.test(w[i + 1] ?? "");
      if ((det === "an") !== vowel) out.push(`"${det} ${w[i + 1]}"`);
    }
    if (SG_DET.has(det) && PL_NOUNS.has(noun)) out.push(`"${det} ... ${noun}"`);
    if (PL_DET.has(det) && SG_NOUNS.has(noun)) out.push(`"${det} ... ${noun}"`);
  }
  // Subject-verb: a sentence that starts with determiner (+ adjective) + noun, then a verb.
  const s = w[0] === "all" && w[1] === "the" ? w.slice(1) : w;
  const POSSESSIVE = ["the", "my", "your", "our", "his", "her", "some"];
  if (s.length >= 3 && (SG_DET.has(s[0]) || PL_DET.has(s[0]) || POSSESSIVE.includes(s[0]))) {
    const k = ADJ.has(s[1]) && (SG_NOUNS.has(s[2]) || PL_NOUNS.has(s[2])) ? 2 : 1;
    const noun = s[k], verb = s[k + 1];
    if (SG_NOUNS.has(noun) && BASE_FORMS.has(verb)) out.push(`"${noun} ${verb}"`);
    if (PL_NOUNS.has(noun) && S_FORMS.has(verb)) out.push(`"${noun} ${verb}"`);
  }
  const m = /^(there|where) (is|are) (\S+)(?: (\S+))?(?: (\S+))?/.exec(w.join(" "));
  if (m) {
    const np = [m[3], m[4], m[5]];
    const noun = np.find((x) => SG_NOUNS.has(x) || PL_NOUNS.has(x));
    if (noun && (m[2] === "is") !== SG_NOUNS.has(noun)) out.push(`"${m[1]} ${m[2]} ... ${noun}"`);
  }
  return out;
}

Deno.test("generator: deterministic per seed, labelled lines, small vocabulary", () => {
  const a = generateText(5000, { seed: 11, style: "childes" });
  assert.equal(generateText(5000, { seed: 11, style: "childes" }), a);
  assert.notEqual(generateText(5000, { seed: 12, style: "childes" }), a);
  const lines = a.split("\n");
  for (const l of lines) assert.match(l, /^\*(MOT|FAT|CHI):\t\S.* [.?!]$/);
  assert.ok(lines.some((l) => l.startsWith("*CHI:")) && lines.some((l) => l.startsWith("*MOT:")));
  const plain = generateText(3000, { seed: 11, style: "plain" }).split("\n");
  for (const l of plain) assert.match(l, /^(A|B):\t[A-Z0-9].*[.?!]$/);
  assert.ok(countWords(a) >= 5000 && countWords(a) < 5100);
  const vocab = new Set([...lines, ...plain].flatMap(words));
  console.log(`vocabulary: ${vocab.size} word types in ${lines.length + plain.length} lines`);
  assert.ok(vocab.size > 200 && vocab.size < 600, `vocabulary ${vocab.size}`);
});

Deno.test("generator: agreement holds and the constructions occur", () => {
  const lines = generateText(20000, { seed: 3, style: "childes" }).split("\n");
  const bad = lines.flatMap((l) => faults(l).map((f) => `${f} in: ${l}`));
  assert.deepEqual(bad.slice(0, 5), []);
  const has = (re: RegExp) => assert.ok(lines.some((l) => re.test(l)), `no line matches ${re}`);
  has(/\t(do|does|did) .* \?$/); // do-support questions
  has(/\t(what|where|who) /); // wh-questions
  has(/(n't|not) /); // negation
  has(/\b(children|mice|men|women|feet|geese|people|teeth|leaves)\b/); // irregular plurals
  has(/\ban [aeiou]/); // a/an
  has(/\b(ran|slept|saw|took|found|ate|went)\b/); // irregular past
  has(/\b(on|under|behind|next to) (the|a|my|your|this|that|these|those)\b/); // prepositional phrases
  has(/\bthere (is|are)\b/);
  const [childes, dialogue] = embeddedSources(5, 3000);
  assert.equal(childes.name, "embedded_childes");
  assert.ok(countWords(childes.text) >= 2000 && countWords(dialogue.text) >= 1000);
});

Deno.test("minimal pairs: one word differs, good passes the checker, bad fails it", () => {
  const pairs = minimalPairs(300, 7);
  assert.deepEqual(minimalPairs(300, 7), pairs);
  const kinds = new Map<string, number>();
  for (const p of pairs) {
    kinds.set(p.kind, (kinds.get(p.kind) ?? 0) + 1);
    const g = words(p.good), b = words(p.bad);
    assert.equal(g.length, b.length, `${p.good} / ${p.bad}`);
    assert.equal(g.filter((x, i) => x !== b[i]).length, 1, `${p.good} / ${p.bad}`);
    assert.deepEqual(faults(p.good), [], p.good);
    if (p.kind === "irregular plural") {
      assert.ok(b.some((x) => /s$/.test(x) && !PL_NOUNS.has(x) && SG_NOUNS.has(x.slice(0, -1))), p.bad);
    } else assert.notDeepEqual(faults(p.bad), [], p.bad);
  }
  assert.deepEqual([...kinds.values()], [100, 100, 100]);
  // Each generated "good" sentence is a sentence the corpus grammar itself can produce in form.
  assert.match(pairs[0].good, /^[A-Z].*\.$/);
});

Deno.test("countWords splits on any whitespace like Python's str.split()", () => {
  assert.equal(countWords(""), 0);
  assert.equal(countWords("  a b\tc\n\nd  "), 4);
  assert.equal(countWords("*MOT:\tlook !"), 3);
});

Deno.test("generateLines is an endless stream", () => {
  let n = 0;
  for (const _ of generateLines({ seed: 0, style: "plain" })) if (++n === 1000) break;
  assert.equal(n, 1000);
});
