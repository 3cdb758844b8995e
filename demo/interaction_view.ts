/**
 * One student/teacher exchange on the page: the context, then the student's continuation and the
 * teacher's correction side by side with the words only one of them has highlighted and the search
 * matches marked. Every string is inserted as text (see dom.ts), bidirectional controls shown rather
 * than applied, so model and teacher output can never become markup or reorder the page.
 * @module
 */
/// <reference lib="dom" />
import { type DiffPiece, wordDiff } from "./diff.ts";
import { type Child, el, fmt, untrustedText } from "./dom.ts";
import { countWords } from "../interaction/words.ts";
import type { PairStats, ShownInteraction } from "./records.ts";

export type { ShownInteraction } from "./records.ts";

/** Where `query` (case-insensitive) occurs in `text`: [start, end) ranges, not overlapping. */
export function matchRanges(text: string, query: string): Array<[number, number]> {
  const q = query.trim().toLowerCase();
  if (!q) return [];
  const t = text.toLowerCase();
  const out: Array<[number, number]> = [];
  // Lower-casing can change lengths (e.g. "İ"); then ranges would drift, so mark nothing.
  if (t.length !== text.length) return out;
  for (let at = t.indexOf(q); at >= 0; at = t.indexOf(q, at + q.length)) out.push([at, at + q.length]);
  return out;
}

/** `text` (which starts at `offset` of the whole) with the parts inside `ranges` in <mark>. */
function marked(text: string, offset: number, ranges: Array<[number, number]>): Child[] {
  const out: Child[] = [];
  let at = 0;
  for (const [s, e] of ranges) {
    const a = Math.max(0, s - offset), b = Math.min(text.length, e - offset);
    if (b <= a) continue;
    if (a > at) out.push(...untrustedText(text.slice(at, a)));
    out.push(el("mark", {}, ...untrustedText(text.slice(a, b))));
    at = b;
  }
  if (at < text.length) out.push(...untrustedText(text.slice(at)));
  return out;
}

function pieces(ps: DiffPiece[], changedClass: string, query: string): HTMLElement[] {
  const ranges = matchRanges(ps.map((p) => p.text).join(""), query);
  let offset = 0;
  return ps.map((p) => {
    const node = el("span", p.same ? {} : { class: changedClass }, ...marked(p.text, offset, ranges));
    offset += p.text.length;
    return node;
  });
}

/** A paragraph of run text, direction isolated. */
function textBlock(children: Child[]): HTMLElement {
  return el("p", { class: "text", dir: "auto" }, ...children);
}

/** Options of {@link interactionCard}. */
export interface CardOptions {
  /** Mark this text in the three texts. */
  query?: string;
  /** Statistics computed already (else computed here from the diff). */
  stats?: PairStats;
  /** Adds a "compare across rounds" button calling this. */
  onCompare?: () => void;
}

/** The card of one interaction. */
export function interactionCard(r: ShownInteraction, opts: CardOptions = {}): HTMLElement {
  const d = wordDiff(r.student, r.teacher);
  const q = opts.query ?? "";
  const nStudent = opts.stats?.studentWords ?? countWords(r.student);
  const nTeacher = opts.stats?.teacherWords ?? countWords(r.teacher);
  const longer = Math.max(nStudent, nTeacher);
  const overlap = longer === 0 ? 100 : Math.round((100 * d.common) / longer);
  let compare: HTMLElement | null = null;
  if (opts.onCompare) {
    compare = el(
      "button",
      { type: "button", class: "small compare-btn", title: "this datapoint's position in every round" },
      "Across rounds",
    );
    compare.addEventListener("click", opts.onCompare);
  }
  const head = el(
    "header",
    { class: "card-head" },
    el("span", { class: "card-id" }, `round ${r.round + 1} · #${r.index}`),
    r.source ? el("bdi", { class: "tag" }, ...untrustedText(r.source)) : null,
    el(
      "span",
      {
        class: "card-stat",
        title: "words the two continuations share, in order (longest common subsequence), " +
          "as a share of the longer one",
      },
      `${d.common} shared words (${overlap}%) · student ${nStudent} · teacher ${nTeacher}`,
    ),
    r.reward
      ? el(
        "span",
        {
          class: "card-reward",
          title: "SimPO rewards (beta × mean log-prob of the continuation) in the round's last SimPO epoch",
        },
        `reward chosen ${fmt(r.reward.chosen)} · rejected ${fmt(r.reward.rejected)} · margin ${
          fmt(r.reward.margin)
        }`,
      )
      : null,
    compare,
  );
  return el(
    "article",
    { class: "interaction", "data-round": r.round, "data-index": r.index },
    head,
    el(
      "div",
      { class: "context" },
      el("span", { class: "label" }, "Context"),
      textBlock(marked(r.context, 0, matchRanges(r.context, q))),
    ),
    el(
      "div",
      { class: "pair" },
      el(
        "div",
        { class: "side student" },
        el("span", { class: "label" }, "Student (rejected)"),
        textBlock(pieces(d.a, "del", q)),
      ),
      el(
        "div",
        { class: "side teacher" },
        el("span", { class: "label" }, "Teacher (chosen)"),
        textBlock(pieces(d.b, "ins", q)),
      ),
    ),
  );
}

/** Whether an interaction contains `query` (case-insensitive) in its context, student or teacher text. */
export function matches(r: ShownInteraction, query: string): boolean {
  const q = query.trim().toLowerCase();
  if (!q) return true;
  return [r.context, r.student, r.teacher, r.source ?? ""].some((s) => s.toLowerCase().includes(q));
}
