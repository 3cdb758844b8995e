/**
 * One student/teacher exchange on the page: the context, then the student's continuation and the
 * teacher's correction side by side with the words only one of them has highlighted. Every string is
 * inserted as text (see dom.ts), so model and teacher output can never become markup.
 * @module
 */
/// <reference lib="dom" />
import type { InteractionRecord } from "../interaction/loop.ts";
import { type DiffPiece, wordDiff } from "./diff.ts";
import { el } from "./dom.ts";

/** The fields of an interaction the page needs (the records' token arrays are not shown). */
export type ShownInteraction =
  & Pick<InteractionRecord, "round" | "index" | "context" | "student" | "teacher">
  & {
    source?: string;
  };

function pieces(ps: DiffPiece[], changedClass: string): HTMLElement[] {
  return ps.map((p) => el("span", p.same ? {} : { class: changedClass }, p.text));
}

/** The card of one interaction. */
export function interactionCard(r: ShownInteraction): HTMLElement {
  const d = wordDiff(r.student, r.teacher);
  const words = (s: string) => s.split(/\s+/).filter((w) => w).length;
  const nStudent = words(r.student), nTeacher = words(r.teacher);
  const head = el(
    "header",
    { class: "card-head" },
    el("span", { class: "card-id" }, `round ${r.round + 1} · #${r.index}`),
    r.source ? el("span", { class: "tag" }, r.source) : null,
    el(
      "span",
      {
        class: "card-stat",
        title: "words the two continuations share, in order (longest common subsequence)",
      },
      `${d.common} shared words · student ${nStudent} · teacher ${nTeacher}`,
    ),
  );
  return el(
    "article",
    { class: "interaction", "data-round": r.round, "data-index": r.index },
    head,
    el(
      "div",
      { class: "context" },
      el("span", { class: "label" }, "Context"),
      el("p", { class: "text" }, r.context),
    ),
    el(
      "div",
      { class: "pair" },
      el(
        "div",
        { class: "side student" },
        el("span", { class: "label" }, "Student"),
        el("p", { class: "text" }, ...pieces(d.a, "del")),
      ),
      el(
        "div",
        { class: "side teacher" },
        el("span", { class: "label" }, "Teacher"),
        el("p", { class: "text" }, ...pieces(d.b, "ins")),
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
