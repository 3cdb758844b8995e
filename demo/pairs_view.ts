/**
 * The student/teacher pairs of a run, round by round, as both modes show them: a round picker (one
 * round or all), text search with the matches marked, sorting and a range filter on the pair
 * statistics and, where the run recorded them, the pairs' SimPO rewards, pages of cards, the filtered pairs exported as JSONL or CSV, and one datapoint position
 * compared across rounds. Rounds may be known before they are loaded (Inspect fetches them on demand).
 * @module
 */
/// <reference lib="dom" />
import { el, fmt, replace, untrustedText } from "./dom.ts";
import { interactionCard, matches } from "./interaction_view.ts";
import { pairsCsv, pairsJsonl, type PairStats, pairStats, type ShownInteraction } from "./records.ts";
import {
  emptyQuery,
  type FilterKey,
  FILTERS,
  type PairQuery,
  REWARD_KEYS,
  type SortKey,
  SORTS,
} from "./url_state.ts";

/** Cards per page. */
export const PAGE_SIZE = 20;

/** A pair with its statistics. */
export interface Entry {
  pair: ShownInteraction;
  stats: PairStats;
}

/** Options of {@link PairBrowser}. */
export interface PairBrowserOptions {
  /** Prefix of element ids (two browsers live on one page). */
  id: string;
  /** Fetch a round's pairs (Inspect); absent: rounds arrive through {@link PairBrowser.setRound}. */
  load?: (round: number) => Promise<ShownInteraction[]>;
  /** The query changed by the user; `push`: a step worth a history entry (not every key typed). */
  onQuery?: (q: PairQuery, push: boolean) => void;
  /** File name stem for exports. */
  exportName: () => string;
  /** What to say before any round exists. */
  empty: string;
  /** Why no pair has rewards, where the reward orders and filters say so. */
  noRewards: string;
}

/** The value a filter bounds; undefined for a reward the pair does not have. */
function statValue(e: Entry, key: FilterKey): number | undefined {
  switch (key) {
    case "overlap":
      return e.stats.overlap * 100;
    case "student-words":
      return e.stats.studentWords;
    case "teacher-words":
      return e.stats.teacherWords;
    default:
      return e.pair.reward?.[key];
  }
}

/** An order on one reward, pairs without rewards last. */
function byReward(key: "chosen" | "rejected" | "margin", dir: 1 | -1): (a: Entry, b: Entry) => number {
  return (a, b) => {
    const x = a.pair.reward?.[key], y = b.pair.reward?.[key];
    if (x === undefined || y === undefined) return (x === undefined ? 1 : 0) - (y === undefined ? 1 : 0);
    return dir * (x - y);
  };
}

const SORTERS: Record<SortKey, (a: Entry, b: Entry) => number> = {
  "index": () => 0,
  "overlap-asc": (a, b) => a.stats.overlap - b.stats.overlap,
  "overlap-desc": (a, b) => b.stats.overlap - a.stats.overlap,
  "student-words": (a, b) => b.stats.studentWords - a.stats.studentWords,
  "teacher-words": (a, b) => b.stats.teacherWords - a.stats.teacherWords,
  "len-diff": (a, b) =>
    Math.abs(b.stats.studentWords - b.stats.teacherWords) -
    Math.abs(a.stats.studentWords - a.stats.teacherWords),
  "margin-asc": byReward("margin", 1),
  "margin-desc": byReward("margin", -1),
  "chosen-desc": byReward("chosen", -1),
  "rejected-desc": byReward("rejected", -1),
};

/**
 * Pairs that pass `q` (round, text, range; a reward range leaves out pairs without rewards), sorted (ties
 * in round, then datapoint order; pairs without rewards last in a reward order).
 */
export function selectPairs(
  rounds: ReadonlyMap<number, Entry[] | null>,
  q: PairQuery,
  round: number | "all",
): Entry[] {
  const out: Entry[] = [];
  for (const [r, entries] of [...rounds].sort((a, b) => a[0] - b[0])) {
    if (!entries || (round !== "all" && r !== round)) continue;
    for (const e of entries) {
      if (!matches(e.pair, q.q)) continue;
      const f = q.filter;
      if (f) {
        const v = statValue(e, f.key);
        if (v === undefined || (f.min !== undefined && v < f.min) || (f.max !== undefined && v > f.max)) {
          continue;
        }
      }
      out.push(e);
    }
  }
  const by = SORTERS[q.sort];
  return out.sort((a, b) => by(a, b) || a.pair.round - b.pair.round || a.pair.index - b.pair.index);
}

/** The pair browser; `root` goes on the page. */
export class PairBrowser {
  readonly root: HTMLElement;
  #opts: PairBrowserOptions;
  /** round -> its entries, or null while not loaded. */
  #rounds = new Map<number, Entry[] | null>();
  #loading = new Map<number, Promise<void>>();
  /** Rounds whose file could not be read, with why. */
  #failed = new Map<number, string>();
  #query: PairQuery = emptyQuery();
  #page = 0;
  #picker: HTMLElement;
  #search: HTMLInputElement;
  #sort: HTMLSelectElement;
  #filterKey: HTMLSelectElement;
  #min: HTMLInputElement;
  #max: HTMLInputElement;
  #count: HTMLElement;
  /** What the reward orders and filters could not use. */
  #rewardNote: HTMLElement;
  #list: HTMLElement;
  #pager: HTMLElement;
  #compare: HTMLElement;
  #token = 0;

  constructor(opts: PairBrowserOptions) {
    this.#opts = opts;
    const id = (s: string) => `${opts.id}-${s}`;
    this.#picker = el("div", { class: "round-picker", role: "tablist", id: id("picker") });
    this.#search = el("input", {
      id: id("search"),
      type: "search",
      placeholder: "Search context, student, teacher",
      "aria-label": "search the pairs",
    });
    this.#sort = el(
      "select",
      { id: id("sort"), "aria-label": "order" },
      ...SORTS.map(([k, label]) => el("option", { value: k }, label)),
    );
    this.#filterKey = el(
      "select",
      { id: id("filter-key"), "aria-label": "filter on" },
      ...FILTERS.map(([k, label]) => el("option", { value: k }, label)),
    );
    const num = (name: string, label: string) =>
      el("input", {
        id: id(name),
        type: "number",
        step: "any",
        placeholder: label,
        "aria-label": label,
        class: "range",
      });
    this.#min = num("min", "from");
    this.#max = num("max", "to");
    const jsonl = el("button", { type: "button", class: "small", id: id("export-jsonl") }, "JSONL");
    const csv = el("button", { type: "button", class: "small", id: id("export-csv") }, "CSV");
    jsonl.addEventListener("click", () => this.#export("jsonl"));
    csv.addEventListener("click", () => this.#export("csv"));
    this.#count = el("p", { class: "muted pair-count", id: id("count"), "aria-live": "polite" });
    this.#rewardNote = el("p", { class: "muted reward-note", id: id("reward-note"), hidden: true });
    this.#list = el(
      "div",
      { class: "interactions", id: id("list") },
      el("p", { class: "empty" }, opts.empty),
    );
    this.#pager = el("nav", { class: "pager", id: id("pager"), "aria-label": "pages" });
    this.#compare = el("section", { class: "compare", id: id("compare"), hidden: true });
    this.root = el(
      "div",
      { class: "pair-browser" },
      el(
        "div",
        { class: "inter-tools" },
        this.#picker,
        this.#search,
        el("label", { class: "inline" }, "Sort ", this.#sort),
        el(
          "span",
          { class: "inline filter" },
          el("label", { class: "inline" }, "Filter ", this.#filterKey),
          this.#min,
          "–",
          this.#max,
        ),
        el("span", { class: "inline" }, "Export shown ", jsonl, csv),
      ),
      this.#count,
      this.#rewardNote,
      this.#compare,
      this.#list,
      this.#pager,
    );
    // A search is one step in the history: its first change pushes an entry, the rest replace it.
    let debounce: ReturnType<typeof setTimeout> | undefined, typing = false;
    const search = () => {
      clearTimeout(debounce);
      if (this.#search.value === this.#query.q) return;
      this.#change({ q: this.#search.value }, !typing);
      typing = true;
    };
    this.#search.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(search, 150);
    });
    this.#search.addEventListener("change", () => {
      search();
      typing = false;
    });
    this.#sort.addEventListener("change", () => this.#change({ sort: this.#sort.value as SortKey }, true));
    const range = () => {
      const v = (
        i: HTMLInputElement,
      ) => (i.value.trim() === "" || !Number.isFinite(Number(i.value)) ? undefined : Number(i.value));
      const min = v(this.#min), max = v(this.#max);
      this.#change(
        {
          filter: min === undefined && max === undefined
            ? undefined
            : { key: this.#filterKey.value as FilterKey, min, max },
        },
        true,
      );
    };
    for (const i of [this.#filterKey, this.#min, this.#max]) i.addEventListener("change", range);
  }

  /** The current query. */
  get query(): PairQuery {
    return this.#query;
  }

  /** Every loaded entry by round. */
  get loaded(): ReadonlyMap<number, Entry[] | null> {
    return this.#rounds;
  }

  /** Forget every round (a new run). */
  reset(): void {
    this.#rounds.clear();
    this.#loading.clear();
    this.#failed.clear();
    this.#token++;
    this.#page = 0;
    this.#query = emptyQuery();
    this.#syncControls();
    this.render();
  }

  /** Rounds that exist (not loaded yet unless {@link setRound} gave them). */
  setAvailable(rounds: number[]): void {
    for (const r of rounds) if (!this.#rounds.has(r)) this.#rounds.set(r, null);
    this.render();
  }

  /** A round's pairs (replacing what was there). */
  setRound(round: number, pairs: ShownInteraction[]): void {
    this.#rounds.set(round, pairs.map((pair) => ({ pair, stats: pairStats(pair) })));
    this.render();
  }

  /** Add one pair to its round (live mode, as they arrive). */
  addPair(pair: ShownInteraction): void {
    const list = this.#rounds.get(pair.round) ?? [];
    list.push({ pair, stats: pairStats(pair) });
    this.#rounds.set(pair.round, list);
    this.render();
  }

  /**
   * Read again those of `rounds` that are loaded with pairs lacking rewards (a run in its last SimPO epoch
   * appends them step by step); the old entries stay on show until the new ones are in.
   */
  async refreshRewards(rounds: readonly number[]): Promise<void> {
    const load = this.#opts.load;
    if (!load) return;
    const token = this.#token;
    for (const r of rounds) {
      const entries = this.#rounds.get(r);
      if (!entries || entries.every((e) => e.pair.reward)) continue;
      const pairs = await load(r);
      if (token !== this.#token) return;
      this.#rounds.set(r, pairs.map((pair) => ({ pair, stats: pairStats(pair) })));
    }
    this.render();
  }

  /** Apply a query (from the address); `page` 0. */
  setQuery(q: PairQuery): void {
    this.#query = { ...q };
    this.#page = 0;
    this.#syncControls();
    this.render();
  }

  /** Load every known round that is not loaded yet, one after another. */
  async loadAll(onProgress?: (loaded: number, total: number) => void): Promise<void> {
    const all = [...this.#rounds.keys()];
    let done = all.filter((r) => this.#rounds.get(r)).length;
    for (const r of all) {
      if (this.#rounds.get(r)) continue;
      await this.#ensure(r);
      onProgress?.(++done, all.length);
    }
  }

  /** The round shown: the query's, else the latest known. */
  #shownRound(): number | "all" | undefined {
    if (this.#query.round !== undefined) return this.#query.round;
    const keys = [...this.#rounds.keys()];
    return keys.length ? Math.max(...keys) : undefined;
  }

  #change(part: Partial<PairQuery>, push: boolean): void {
    this.#query = { ...this.#query, ...part };
    this.#page = 0;
    this.#opts.onQuery?.(this.#query, push);
    this.render();
  }

  #syncControls(): void {
    if (this.#search.value !== this.#query.q) this.#search.value = this.#query.q;
    this.#sort.value = this.#query.sort;
    const f = this.#query.filter;
    if (f) this.#filterKey.value = f.key;
    this.#min.value = f?.min === undefined ? "" : String(f.min);
    this.#max.value = f?.max === undefined ? "" : String(f.max);
  }

  async #ensure(round: number): Promise<void> {
    if (this.#rounds.get(round) || !this.#opts.load) return;
    let p = this.#loading.get(round);
    if (!p) {
      const token = this.#token;
      p = this.#opts.load(round).then((pairs) => {
        if (token === this.#token) {
          this.#rounds.set(round, pairs.map((pair) => ({ pair, stats: pairStats(pair) })));
        }
      }).finally(() => this.#loading.delete(round));
      this.#loading.set(round, p);
    }
    await p;
  }

  /** Draw the picker, the count, the page of cards and the comparison. */
  render(): void {
    const shown = this.#shownRound();
    const keys = [...this.#rounds.keys()].sort((a, b) => a - b);
    const button = (label: string, value: number | "all") => {
      const on = shown === value;
      const b = el(
        "button",
        {
          type: "button",
          class: `round-btn${on ? " active" : ""}`,
          role: "tab",
          "aria-selected": String(on),
          "data-round": value,
        },
        label,
      );
      b.addEventListener("click", () => this.#change({ round: value, pair: undefined }, true));
      return b;
    };
    replace(
      this.#picker,
      ...(keys.length > 1 ? [button("All", "all")] : []),
      ...keys.map((r) => button(`Round ${r + 1}`, r)),
    );
    if (shown === undefined) {
      replace(this.#list, el("p", { class: "empty" }, this.#opts.empty));
      replace(this.#pager);
      this.#count.textContent = "";
      this.#rewardNote.hidden = true;
      this.#compare.hidden = true;
      return;
    }
    const want = shown === "all" ? keys : [shown];
    const missing = want.filter((r) => !this.#rounds.get(r));
    if (missing.length > 0 && this.#opts.load) {
      const loaded = want.length - missing.length;
      replace(
        this.#list,
        el(
          "p",
          { class: "empty loading" },
          shown === "all"
            ? `Loading rounds… ${loaded} of ${want.length} loaded`
            : `Loading round ${shown + 1}…`,
        ),
      );
      replace(this.#pager);
      this.#count.textContent = "";
      this.#rewardNote.hidden = true;
      const token = this.#token;
      Promise.all(missing.map((r) => this.#ensure(r))).then(
        () => token === this.#token && this.render(),
        (e) =>
          token === this.#token &&
          replace(this.#list, el("p", { class: "form-error" }, (e as Error).message)),
      );
      return;
    }
    const picked = selectPairs(this.#rounds, this.#query, shown);
    this.#renderRewards(want);
    const total = want.reduce((n, r) => n + (this.#rounds.get(r)?.length ?? 0), 0);
    const pages = Math.max(1, Math.ceil(picked.length / PAGE_SIZE));
    this.#page = Math.min(this.#page, pages - 1);
    const page = picked.slice(this.#page * PAGE_SIZE, (this.#page + 1) * PAGE_SIZE);
    const where = shown === "all" ? "all rounds" : `round ${shown + 1}`;
    const count: Array<Node | string> = [`${picked.length} of ${total} pairs · ${where}`];
    if (this.#query.q.trim() && shown !== "all") {
      const everywhere = selectPairs(this.#rounds, this.#query, "all").length - picked.length;
      if (everywhere > 0) {
        const all = el("button", { type: "button", class: "link" }, `${everywhere} more in other rounds`);
        all.addEventListener("click", () => this.#change({ round: "all" }, true));
        count.push(" · ", all);
      }
    }
    replace(this.#count, ...count);
    if (page.length === 0) {
      replace(
        this.#list,
        el("p", { class: "empty" }, total === 0 ? "No pairs in this round yet." : "Nothing matches."),
      );
    } else {
      replace(
        this.#list,
        ...page.map((e) =>
          interactionCard(e.pair, {
            query: this.#query.q,
            stats: e.stats,
            onCompare: () => {
              this.#change({ pair: { round: e.pair.round, index: e.pair.index } }, true);
              this.#compare.scrollIntoView({ block: "nearest" });
            },
          })
        ),
      );
    }
    this.#renderPager(pages);
    this.#renderCompare();
  }

  /**
   * The reward orders and filters: while the loaded pairs have no rewards at all they are disabled and a
   * note under the controls says why; when the chosen one meets pairs without rewards in the rounds shown,
   * the note says how many and what became of them.
   */
  #renderRewards(want: readonly number[]): void {
    const loaded = [...this.#rounds.values()].flatMap((entries) => entries ?? []);
    const none = loaded.length > 0 && !loaded.some((e) => e.pair.reward);
    for (const select of [this.#sort, this.#filterKey]) {
      for (const o of select.options) if (REWARD_KEYS.has(o.value as SortKey)) o.disabled = none;
      select.title = none ? `Reward orders and filters are off: ${this.#opts.noRewards}` : "";
    }
    const q = this.#query;
    const filtered = q.filter !== undefined && REWARD_KEYS.has(q.filter.key);
    const shown = want.flatMap((r) => this.#rounds.get(r) ?? []);
    const without = shown.filter((e) => !e.pair.reward).length;
    const used = REWARD_KEYS.has(q.sort) || filtered;
    this.#rewardNote.hidden = !none && !(used && without > 0);
    this.#rewardNote.textContent = none
      ? `No per-pair SimPO rewards, so the reward orders and filters are off: ${this.#opts.noRewards}`
      : without === shown.length
      ? `No pair here has SimPO rewards: ${this.#opts.noRewards}`
      : `${without} of ${shown.length} pairs here have no SimPO rewards (${
        filtered ? "left out by the filter" : "listed last"
      }).`;
  }

  #renderPager(pages: number): void {
    if (pages <= 1) {
      replace(this.#pager);
      return;
    }
    const go = (p: number) => {
      this.#page = p;
      this.render();
      this.#list.scrollIntoView({ block: "start" });
    };
    const prev = el("button", { type: "button", class: "small", disabled: this.#page === 0 }, "‹ Previous");
    const next = el(
      "button",
      { type: "button", class: "small", disabled: this.#page >= pages - 1 },
      "Next ›",
    );
    prev.addEventListener("click", () => go(this.#page - 1));
    next.addEventListener("click", () => go(this.#page + 1));
    replace(
      this.#pager,
      prev,
      el("span", { class: "muted page-of" }, `page ${this.#page + 1} of ${pages}`),
      next,
    );
  }

  /**
   * The opened pair's datapoint position in every loaded round. Rounds draw new datapoints, so the
   * same context rarely recurs: a round's pair with the same context is shown when there is one, else
   * the pair at the same position, and the card says which.
   */
  #renderCompare(): void {
    const p = this.#query.pair;
    const base = p && this.#rounds.get(p.round)?.find((e) => e.pair.index === p.index);
    if (!p || !base) {
      this.#compare.hidden = true;
      return;
    }
    for (const [r, entries] of this.#rounds) {
      if (entries || !this.#opts.load) continue;
      this.#ensure(r).then(
        () => this.#query.pair === p && this.#renderCompareNow(base),
        (e) => {
          this.#failed.set(r, (e as Error).message);
          if (this.#query.pair === p) this.#renderCompareNow(base);
        },
      );
    }
    this.#renderCompareNow(base);
  }

  #renderCompareNow(base: Entry): void {
    const cols: HTMLElement[] = [];
    for (const [r, entries] of [...this.#rounds].sort((a, b) => a[0] - b[0])) {
      if (!entries) {
        cols.push(
          el(
            "div",
            { class: "compare-col" },
            el("b", {}, `Round ${r + 1}`),
            this.#failed.has(r)
              ? el("p", { class: "form-error" }, this.#failed.get(r)!)
              : el("p", { class: "muted loading" }, "loading…"),
          ),
        );
        continue;
      }
      const same = entries.find((e) => e.pair.context === base.pair.context);
      const e = same ?? entries.find((x) => x.pair.index === base.pair.index);
      if (!e) {
        cols.push(
          el(
            "div",
            { class: "compare-col" },
            el("b", {}, `Round ${r + 1}`),
            el("p", { class: "muted" }, `no #${base.pair.index}`),
          ),
        );
        continue;
      }
      const text = (label: string, s: string) =>
        el(
          "div",
          {},
          el("span", { class: "label" }, label),
          el("p", { class: "text", dir: "auto" }, ...untrustedText(s)),
        );
      cols.push(
        el(
          "div",
          { class: `compare-col${e === base ? " base" : ""}`, "data-round": r },
          el("b", {}, `Round ${r + 1} · #${e.pair.index}`),
          el("span", { class: "muted" }, same ? " same context" : " same position, other context"),
          el(
            "p",
            { class: "muted small" },
            `overlap ${
              fmt(e.stats.overlap * 100)
            }% · student ${e.stats.studentWords} · teacher ${e.stats.teacherWords} words${
              e.pair.reward ? ` · margin ${fmt(e.pair.reward.margin)}` : ""
            }`,
          ),
          text("Context", e.pair.context),
          text("Student (rejected)", e.pair.student),
          text("Teacher (chosen)", e.pair.teacher),
        ),
      );
    }
    const close = el("button", { type: "button", class: "small" }, "Close");
    close.addEventListener("click", () => this.#change({ pair: undefined }, true));
    replace(
      this.#compare,
      el(
        "div",
        { class: "section-head" },
        el("h3", {}, `Datapoint #${base.pair.index} across rounds`),
        close,
      ),
      el("div", { class: "compare-strip" }, ...cols),
    );
    this.#compare.hidden = false;
  }

  /** Download the pairs the filters select (every page), as JSON lines or CSV. */
  #export(kind: "jsonl" | "csv"): void {
    const shown = this.#shownRound();
    if (shown === undefined) return;
    const picked = selectPairs(this.#rounds, this.#query, shown);
    const body = kind === "jsonl" ? pairsJsonl(picked) : pairsCsv(picked);
    const type = kind === "jsonl" ? "application/x-ndjson" : "text/csv";
    saveFile(`${this.#opts.exportName()}.${kind}`, new Blob([body], { type }));
  }
}

/** Offer `blob` as a download named `name`. */
export function saveFile(name: string, blob: Blob): void {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
