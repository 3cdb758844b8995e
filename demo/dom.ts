/**
 * Building DOM nodes without HTML parsing: every string becomes a text node, so model and teacher text
 * can never turn into markup. The page uses these helpers instead of innerHTML everywhere.
 * @module
 */
/// <reference lib="dom" />

/** A child: a node, or a string that becomes a text node; null and false are skipped. */
export type Child = Node | string | null | undefined | false;

/** Attributes: `class`, `data-*`, `aria-*` and the like; values are set with setAttribute (never parsed). */
export type Attrs = Record<string, string | number | boolean | undefined>;

/** `<tag attrs>children</tag>`; strings become text nodes. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, ...children);
  return node;
}

/** An SVG element (for the plots). */
export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
): SVGElementTagNameMap[K] {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(node, attrs);
  return node;
}

function setAttrs(node: Element, attrs: Attrs): void {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    // Event-handler attributes would be code; they are never set from data.
    if (/^on/i.test(k)) throw new Error(`el: attribute ${k} is not allowed (use addEventListener)`);
    node.setAttribute(k, v === true ? "" : String(v));
  }
}

/** Append children, strings as text nodes. */
export function append(parent: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
}

/** Replace all children of `parent`. */
export function replace(parent: Node, ...children: Child[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, ...children);
}

/** The element with `id`, typed; throws naming the id when the page lacks it. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`page: no element #${id} in index.html`);
  return node as T;
}

/** Bidirectional formatting characters (embeddings, overrides, isolates, marks) and their short names. */
const BIDI_CONTROLS: Record<string, string> = {
  "\u202A": "LRE",
  "\u202B": "RLE",
  "\u202C": "PDF",
  "\u202D": "LRO",
  "\u202E": "RLO",
  "\u2066": "LRI",
  "\u2067": "RLI",
  "\u2068": "FSI",
  "\u2069": "PDI",
  "\u200E": "LRM",
  "\u200F": "RLM",
  "\u061C": "ALM",
};
const BIDI_RE = /[\u202A-\u202E\u2066-\u2069\u200E\u200F\u061C]/;

/**
 * Text from a run (model output, file contents) as nodes with every bidirectional control character
 * shown as a labelled mark instead of applied, so an override in model text cannot reverse what
 * follows it. Callers also isolate the element (`dir="auto"`, CSS `unicode-bidi: plaintext`) so
 * right-to-left text reads correctly without reordering its neighbours.
 */
export function untrustedText(s: string): Array<Node | string> {
  if (!BIDI_RE.test(s)) return [s];
  const out: Array<Node | string> = [];
  let run = "";
  for (const ch of s) {
    const name = BIDI_CONTROLS[ch];
    if (name === undefined) {
      run += ch;
      continue;
    }
    if (run) out.push(run);
    run = "";
    const code = `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
    out.push(el("span", { class: "ctrl", title: `${code} ${name}: shown, not applied` }, name));
  }
  if (run) out.push(run);
  return out;
}

/** A number for display: 3 significant digits, thousands grouped, tiny/huge values in exponent form. */
export function fmt(v: number | undefined, digits = 3): string {
  if (v === undefined || Number.isNaN(v)) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "-∞";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e7)) return v.toExponential(digits - 1);
  if (a >= 1000) return Math.round(v).toLocaleString("en-US");
  return Number(v.toPrecision(digits)).toString();
}

/** Seconds as "1h02m", "3m05s" or "12.3s". */
export function fmtSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "–";
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${s.toFixed(1)}s`;
}
