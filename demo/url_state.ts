/**
 * The page's address: `#live`, `#inspect`, or `#inspect/<run>?round=R&q=TEXT&sort=KEY&f=KEY:MIN:MAX&pair=R.I`
 * (rounds 1-based as the page shows them), so a link opens the same view and Back undoes a step. Links
 * come from anywhere: a malformed one is reported, never thrown.
 * Pure: strings in, objects out.
 * @module
 */

/** How pairs are ordered. */
export type SortKey =
  | "index"
  | "overlap-asc"
  | "overlap-desc"
  | "student-words"
  | "teacher-words"
  | "len-diff"
  | "margin-asc"
  | "margin-desc"
  | "chosen-desc"
  | "rejected-desc";
/** Sort keys with their labels, in menu order. */
export const SORTS: ReadonlyArray<[SortKey, string]> = [
  ["index", "datapoint order"],
  ["overlap-asc", "word overlap, lowest first"],
  ["overlap-desc", "word overlap, highest first"],
  ["student-words", "student length, longest first"],
  ["teacher-words", "teacher length, longest first"],
  ["len-diff", "length difference, largest first"],
  ["margin-asc", "margin, smallest first"],
  ["margin-desc", "margin, largest first"],
  ["chosen-desc", "chosen reward, highest first"],
  ["rejected-desc", "rejected reward, highest first"],
];

/** The orders and filters that need the pairs' SimPO rewards. */
export const REWARD_KEYS: ReadonlySet<SortKey | FilterKey> = new Set([
  "margin-asc",
  "margin-desc",
  "chosen-desc",
  "rejected-desc",
  "margin",
  "chosen",
  "rejected",
]);

/** Which pair statistic a range filter bounds. */
export type FilterKey = "overlap" | "student-words" | "teacher-words" | "margin" | "chosen" | "rejected";
/** Filter keys with their labels and units. */
export const FILTERS: ReadonlyArray<[FilterKey, string]> = [
  ["overlap", "word overlap, %"],
  ["student-words", "student words"],
  ["teacher-words", "teacher words"],
  ["margin", "reward margin"],
  ["chosen", "chosen reward"],
  ["rejected", "rejected reward"],
];

/** A range filter on one statistic; an absent bound is open. */
export interface RangeFilter {
  key: FilterKey;
  min?: number;
  max?: number;
}

/** What the pair list shows. `round`: 0-based, or "all". */
export interface PairQuery {
  round?: number | "all";
  q: string;
  sort: SortKey;
  filter?: RangeFilter;
  /** The pair opened for comparison across rounds (0-based round). */
  pair?: { round: number; index: number };
}

/** The parsed address. */
export interface Route {
  mode: "live" | "inspect";
  run?: string;
  query: PairQuery;
  /** What was wrong with the address, when something was (the rest is still used). */
  problem?: string;
}

/** The default pair query. */
export function emptyQuery(): PairQuery {
  return { q: "", sort: "index" };
}

const count = (s: string | null): number | undefined =>
  s !== null && /^[0-9]{1,7}$/.test(s) ? Number(s) : undefined;

function finite(s: string | undefined): number | undefined {
  if (s === undefined || s.trim() === "") return undefined;
  const v = Number(s);
  return Number.isFinite(v) ? v : undefined;
}

/** Read `location.hash` (with or without the `#`). */
export function parseRoute(hash: string): Route {
  const h = hash.replace(/^#/, "");
  const q = h.indexOf("?");
  const path = q < 0 ? h : h.slice(0, q);
  const [mode, ...rest] = path.split("/");
  const route: Route = { mode: mode === "inspect" ? "inspect" : "live", query: emptyQuery() };
  if (route.mode === "live") return route;
  const problems: string[] = [];
  if (rest.length > 0 && rest.join("/") !== "") {
    try {
      route.run = decodeURIComponent(rest.join("/"));
    } catch {
      problems.push(`the run name in the link (${rest.join("/").slice(0, 80)}) has a malformed %-escape`);
    }
  }
  // URLSearchParams never throws: a bad %-escape stays as the literal text.
  const params = new URLSearchParams(q < 0 ? "" : h.slice(q + 1));
  const round = params.get("round");
  if (round === "all") route.query.round = "all";
  else if (round !== null) {
    const r = count(round);
    if (r === undefined || r < 1) problems.push(`round=${round.slice(0, 20)} is not a round number`);
    else route.query.round = r - 1;
  }
  route.query.q = params.get("q") ?? "";
  const sort = params.get("sort");
  if (sort !== null) {
    if (SORTS.some(([k]) => k === sort)) route.query.sort = sort as SortKey;
    else problems.push(`sort=${sort.slice(0, 20)} is not a known order`);
  }
  const f = params.get("f");
  if (f !== null) {
    const [key, min, max] = f.split(":");
    if (FILTERS.some(([k]) => k === key)) {
      route.query.filter = { key: key as FilterKey, min: finite(min), max: finite(max) };
    } else problems.push(`f=${f.slice(0, 20)} is not a known filter`);
  }
  const pair = params.get("pair");
  if (pair !== null) {
    const [r, i] = pair.split(".").map(count);
    if (r === undefined || r < 1 || i === undefined || pair.split(".").length !== 2) {
      problems.push(`pair=${pair.slice(0, 20)} is not ROUND.INDEX`);
    } else route.query.pair = { round: r - 1, index: i };
  }
  if (problems.length) route.problem = problems.join("; ");
  return route;
}

/** The address of inspect mode on `run` with `query` (defaults left out). */
export function inspectHash(run: string | undefined, query: PairQuery = emptyQuery()): string {
  if (run === undefined) return "#inspect";
  const p = new URLSearchParams();
  if (query.round !== undefined) p.set("round", query.round === "all" ? "all" : String(query.round + 1));
  if (query.q) p.set("q", query.q);
  if (query.sort !== "index") p.set("sort", query.sort);
  if (query.filter && (query.filter.min !== undefined || query.filter.max !== undefined)) {
    p.set("f", `${query.filter.key}:${query.filter.min ?? ""}:${query.filter.max ?? ""}`);
  }
  if (query.pair) p.set("pair", `${query.pair.round + 1}.${query.pair.index}`);
  const s = p.toString();
  return `#inspect/${encodeURIComponent(run)}${s ? `?${s}` : ""}`;
}
