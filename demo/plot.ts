/**
 * Small SVG line plots drawn by hand (no chart library): one or more series against an x axis (steps or
 * words seen), axis titles with units, "nice" ticks whose labels fit at any range, dashed lines where a
 * new round starts (labelled only where the labels do not collide), the latest values in the legend and
 * the values under the pointer on hover. Points are added as they come; drawing is batched to one
 * redraw per animation frame.
 * @module
 */
/// <reference lib="dom" />
import { el, fmt, replace, svg } from "./dom.ts";

/** One line of a plot. */
export interface SeriesSpec {
  key: string;
  label: string;
  /** A CSS colour (the stylesheet's series colours are var(--c1) ... var(--c5)). */
  color: string;
}

/** Plot options. */
export interface PlotOptions {
  /** Fix the y range instead of fitting it (e.g. [0, 1] for a win rate). */
  yRange?: [number, number];
  /** Text shown while there are no points. */
  empty?: string;
  /** The y axis title, with its unit. */
  yLabel: string;
  /** The x axis title, with its unit (can be changed with {@link LinePlot.setXLabel}). */
  xLabel: string;
  /** Show y values as percentages (values are fractions). */
  percent?: boolean;
}

// Drawing area in SVG user units; the SVG scales to its container keeping this aspect.
const W = 360, H = 210;
const TICK_FONT = 11;
/** Width of one character of tick text, in user units (a conservative estimate for the page's sans). */
const CHAR_W = 6.6;
/** Above this many points, consecutive points are averaged in buckets before drawing. */
const MAX_DRAWN = 600;
/** Least room between two round labels' left edges, in user units. */
const ROUND_LABEL_GAP = 26;

/**
 * Ticks for [lo, hi]: about `n` round values (1, 2 or 5 times a power of ten apart) inside the range.
 */
export function niceTicks(lo: number, hi: number, n = 4): number[] {
  if (!(hi > lo)) return [lo];
  // Divided before subtracting: hi - lo overflows for ranges near the largest doubles.
  const raw = hi / n - lo / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/** `v` in the shortest exponent form: 2e-5, 1.5e+308 -> "1.5e308". */
function shortExp(v: number, digits: number): string {
  return v.toExponential(digits).replace(/\.?0+e/, "e").replace("e+", "e");
}

/**
 * Tick labels with just enough digits to tell neighbouring ticks apart: plain decimals for moderate
 * values, k/M/G suffixes for large ones, short exponents for tiny or huge ones.
 */
export function tickLabels(ticks: number[]): string[] {
  if (ticks.length < 2) {
    return ticks.map((
      t,
    ) => (Math.abs(t) >= 1e4 || (t !== 0 && Math.abs(t) < 1e-3) ? shortExp(t, 2) : fmt(t)));
  }
  const step = Math.abs(ticks[1] - ticks[0]);
  const big = Math.max(...ticks.map(Math.abs));
  if (big >= 1e13 || big < 1e-3) {
    const digits = Math.max(0, Math.min(6, Math.ceil(Math.log10(big / step))));
    return ticks.map((t) => (t === 0 ? "0" : shortExp(t, digits)));
  }
  if (big >= 1e4) {
    const [div, suffix] = big >= 1e9 ? [1e9, "G"] : big >= 1e6 ? [1e6, "M"] : [1e3, "k"];
    const decimals = Math.max(0, -Math.floor(Math.log10(step / div) + 1e-9));
    return ticks.map((t) => (t === 0 ? "0" : `${(t / div).toFixed(decimals)}${suffix}`));
  }
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return ticks.map((t) => t.toFixed(decimals));
}

/** Average consecutive points in buckets so at most about `max` remain (x and y averaged alike). */
export function downsample(xs: number[], ys: number[], max: number): [number[], number[]] {
  if (xs.length <= max) return [xs, ys];
  const k = Math.ceil(xs.length / max);
  const ox: number[] = [], oy: number[] = [];
  for (let i = 0; i < xs.length; i += k) {
    let sx = 0, sy = 0, n = 0;
    for (let j = i; j < Math.min(i + k, xs.length); j++) {
      if (Number.isNaN(ys[j])) continue;
      sx += xs[j];
      sy += ys[j];
      n++;
    }
    if (n > 0) {
      ox.push(sx / n);
      oy.push(sy / n);
    }
  }
  return [ox, oy];
}

/**
 * The rounds to label, from [x position, round] boundaries: every k-th round (k = 1, 2, 5, 10, ...)
 * so that labels stand at least `gap` apart at their positions `px`.
 */
export function roundLabelStep(px: number[], gap: number): number {
  for (const k of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]) {
    let last = -Infinity, ok = true;
    for (let i = 0; i < px.length; i += k) {
      if (px[i] - last < gap) {
        ok = false;
        break;
      }
      last = px[i];
    }
    if (ok) return k;
  }
  return Math.max(1, px.length);
}

/** A titled plot with a legend; `root` is the element to put on the page. */
export class LinePlot {
  readonly root: HTMLElement;
  #series: SeriesSpec[];
  #opts: PlotOptions;
  #xs: number[] = [];
  #ys: Map<string, number[]> = new Map();
  /** [x, round] where each round's first point is. */
  #rounds: Array<[number, number]> = [];
  #svg: SVGSVGElement;
  #legend: HTMLElement;
  #hover: SVGGElement;
  #pending = false;
  /** The last drawing's scales, for hover. */
  #view: { sx: (x: number) => number; sy: (y: number) => number; x0: number; x1: number } | undefined;

  constructor(title: string, series: SeriesSpec[], opts: PlotOptions) {
    this.#series = series;
    this.#opts = opts;
    for (const s of series) this.#ys.set(s.key, []);
    this.#legend = el("div", { class: "plot-legend" });
    this.#svg = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    this.#hover = svg("g", { class: "hover" });
    this.root = el(
      "figure",
      { class: "plot" },
      el("figcaption", {}, el("span", { class: "plot-title" }, title)),
      this.#legend,
      this.#svg,
    );
    this.#svg.addEventListener("pointermove", (e) => this.#showHover(e));
    this.#svg.addEventListener("pointerleave", () => replace(this.#hover));
    this.#draw();
  }

  /** Change the x axis title (e.g. when the x values change from steps to words seen). */
  setXLabel(label: string): void {
    this.#opts.xLabel = label;
    this.#schedule();
  }

  /** Add one x position with a value per series key (missing or undefined: a gap). */
  add(x: number, values: Record<string, number | undefined>, round?: number): void {
    this.#xs.push(x);
    for (const s of this.#series) {
      const v = values[s.key];
      this.#ys.get(s.key)!.push(typeof v === "number" && Number.isFinite(v) ? v : NaN);
    }
    if (
      round !== undefined && (this.#rounds.length === 0 || this.#rounds[this.#rounds.length - 1][1] !== round)
    ) {
      this.#rounds.push([x, round]);
    }
    this.#schedule();
  }

  /** Remove every point. */
  clear(): void {
    this.#xs = [];
    for (const s of this.#series) this.#ys.set(s.key, []);
    this.#rounds = [];
    this.#schedule();
  }

  #schedule(): void {
    if (this.#pending) return;
    this.#pending = true;
    requestAnimationFrame(() => {
      this.#pending = false;
      this.#draw();
    });
  }

  #label(v: number): string {
    return this.#opts.percent ? `${fmt(v * 100)}%` : fmt(v);
  }

  #text(cls: string, x: number, y: number, text: string, attrs: Record<string, string | number> = {}) {
    const t = svg("text", { class: cls, x, y, ...attrs });
    t.textContent = text;
    return t;
  }

  #draw(): void {
    const xs = this.#xs;
    replace(
      this.#legend,
      ...this.#series.map((s) => {
        const ys = this.#ys.get(s.key)!;
        let last: number | undefined;
        for (let i = ys.length - 1; i >= 0; i--) {
          if (!Number.isNaN(ys[i])) {
            last = ys[i];
            break;
          }
        }
        const swatch = el("span", { class: "swatch" });
        // Through the CSSOM: the page's CSP forbids style attributes.
        swatch.style.background = s.color;
        const value = last === undefined ? "–" : this.#label(last);
        return el(
          "span",
          { class: "legend-item", "data-key": s.key },
          swatch,
          `${s.label} `,
          el("b", {}, value),
        );
      }),
    );
    let lo = Infinity, hi = -Infinity;
    for (const ys of this.#ys.values()) {
      for (const v of ys) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    const nodes: SVGElement[] = [];
    if (lo > hi) {
      nodes.push(
        this.#text("plot-empty", W / 2, H / 2, this.#opts.empty ?? "no data yet", {
          "text-anchor": "middle",
        }),
      );
      this.#view = undefined;
      this.#svg.replaceChildren(...nodes);
      return;
    }
    if (this.#opts.yRange) [lo, hi] = this.#opts.yRange;
    if (hi - lo < 1e-12 * Math.max(1, Math.abs(hi))) {
      const pad = Math.max(Math.abs(hi) * 0.05, 1e-6);
      lo -= pad;
      hi += pad;
    } else if (!this.#opts.yRange) {
      const pad = (hi - lo) * 0.06;
      lo -= pad;
      hi += pad;
    }
    const yTicks = niceTicks(lo, hi, 4).filter((t) => t >= lo && t <= hi);
    const yText = tickLabels(yTicks.map((t) => (this.#opts.percent ? t * 100 : t)));
    const longest = Math.max(1, ...yText.map((s) => s.length));
    // Left margin: the y title, then the widest tick label.
    const x0 = 18 + longest * CHAR_W + 6, x1 = W - 12, y1 = 10, y0 = H - 38;
    const xmin = xs[0], xmax = xs.length > 1 ? xs[xs.length - 1] : xs[0] + 1;
    const sx = (x: number) => x0 + ((x - xmin) / (xmax - xmin || 1)) * (x1 - x0);
    const sy = (y: number) => y0 - ((y - lo) / (hi - lo)) * (y0 - y1);
    this.#view = { sx, sy, x0, x1 };
    nodes.push(svg("rect", { class: "plot-bg", x: x0, y: y1, width: x1 - x0, height: y0 - y1 }));
    yText.forEach((text, i) => {
      const y = sy(yTicks[i]);
      nodes.push(svg("line", { class: "grid", x1: x0, x2: x1, y1: y, y2: y }));
      nodes.push(this.#text("tick", x0 - 4, y + TICK_FONT / 3, text, { "text-anchor": "end" }));
    });
    // x ticks: integers only while x is a step count; labels kept inside the drawing.
    const intX = xs.every(Number.isInteger);
    const xTicks = niceTicks(xmin, xmax, 4).filter((t) =>
      t >= xmin && t <= xmax && (!intX || Number.isInteger(t))
    );
    const xText = tickLabels(xTicks);
    xTicks.forEach((t, i) => {
      const x = sx(t), half = (xText[i].length * CHAR_W) / 2;
      const anchor = x + half > W - 2 ? "end" : x - half < 2 ? "start" : "middle";
      nodes.push(svg("line", { class: "tick-mark", x1: x, x2: x, y1: y0, y2: y0 + 3 }));
      nodes.push(this.#text("tick", x, y0 + 15, xText[i], { "text-anchor": anchor }));
    });
    nodes.push(
      this.#text("axis-title", (x0 + x1) / 2, H - 6, this.#opts.xLabel, { "text-anchor": "middle" }),
    );
    nodes.push(
      this.#text("axis-title", 11, (y0 + y1) / 2, this.#opts.yLabel, {
        "text-anchor": "middle",
        transform: `rotate(-90 11 ${(y0 + y1) / 2})`,
      }),
    );
    const bounds = this.#rounds.slice(1);
    const px = bounds.map(([x]) => sx(x));
    const k = roundLabelStep(px, ROUND_LABEL_GAP);
    bounds.forEach(([, r], i) => {
      nodes.push(svg("line", { class: "round-line", x1: px[i], x2: px[i], y1: y1, y2: y0 }));
      if (i % k === 0 && px[i] + 14 < x1) {
        nodes.push(this.#text("round-label", px[i] + 2, y1 + 10, `r${r + 1}`));
      }
    });
    for (const s of this.#series) {
      const [dx, dy] = downsample(xs, this.#ys.get(s.key)!, MAX_DRAWN);
      let d = "", pen = false, count = 0, lastX = 0, lastY = 0;
      for (let i = 0; i < dx.length; i++) {
        if (Number.isNaN(dy[i])) {
          pen = false;
          continue;
        }
        const px = sx(dx[i]).toFixed(1), py = sy(Math.min(hi, Math.max(lo, dy[i]))).toFixed(1);
        d += `${pen ? "L" : "M"}${px},${py}`;
        pen = true;
        count++;
        lastX = Number(px);
        lastY = Number(py);
      }
      if (d) nodes.push(svg("path", { class: "series", d, stroke: s.color, "data-key": s.key }));
      // A lone point has no line: draw a dot so the first step is visible.
      if (count === 1) nodes.push(svg("circle", { cx: lastX, cy: lastY, r: 2.5, fill: s.color }));
    }
    nodes.push(svg("line", { class: "axis", x1: x0, x2: x1, y1: y0, y2: y0 }));
    replace(this.#hover);
    nodes.push(this.#hover);
    this.#svg.replaceChildren(...nodes);
  }

  /** The point nearest the pointer: a guide line and a box with x and every series' value there. */
  #showHover(e: PointerEvent): void {
    const v = this.#view;
    if (!v || this.#xs.length === 0) return;
    const box = this.#svg.getBoundingClientRect();
    const ux = ((e.clientX - box.left) / box.width) * W;
    let best = 0;
    for (let i = 1; i < this.#xs.length; i++) {
      if (Math.abs(v.sx(this.#xs[i]) - ux) < Math.abs(v.sx(this.#xs[best]) - ux)) best = i;
    }
    const x = v.sx(this.#xs[best]);
    const lines = [`${this.#opts.xLabel.replace(/ \(.*\)$/, "")} ${fmt(this.#xs[best])}`];
    for (const s of this.#series) {
      const y = this.#ys.get(s.key)![best];
      if (!Number.isNaN(y)) lines.push(`${s.label} ${this.#label(y)}`);
    }
    const width = Math.max(...lines.map((l) => l.length)) * CHAR_W + 10, height = lines.length * 13 + 6;
    const bx = x + 8 + width > W ? x - 8 - width : x + 8;
    const nodes: SVGElement[] = [
      svg("line", { class: "hover-line", x1: x, x2: x, y1: 10, y2: H - 38 }),
      svg("rect", { class: "hover-box", x: bx, y: 12, width, height, rx: 3 }),
    ];
    lines.forEach((l, i) => nodes.push(this.#text("hover-text", bx + 5, 12 + 14 + i * 13, l)));
    this.#hover.replaceChildren(...nodes);
  }
}
