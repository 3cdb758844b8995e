/**
 * Small SVG line plots drawn by hand (no chart library): one or more series against the optimiser
 * step, "nice" axis ticks, dashed lines where a new round starts, and the latest values in the legend.
 * Points are added as they come; drawing is batched to one redraw per animation frame.
 * @module
 */
/// <reference lib="dom" />
import { el, fmt, replace, svg } from "./dom.ts";

/** One line of a plot. */
export interface SeriesSpec {
  key: string;
  label: string;
  /** A CSS colour (the stylesheet's series colours are var(--c1) ... var(--c4)). */
  color: string;
}

/** Plot options. */
export interface PlotOptions {
  /** Fix the y range instead of fitting it (e.g. [0, 1] for a win rate). */
  yRange?: [number, number];
  /** Text shown while there are no points. */
  empty?: string;
}

// Drawing area in SVG user units; the SVG scales to its container keeping this aspect.
const W = 360, H = 170;
const M = { left: 46, right: 10, top: 8, bottom: 20 };
/** Above this many points, consecutive points are averaged in buckets before drawing. */
const MAX_DRAWN = 600;

/**
 * Ticks for [lo, hi]: about `n` round values (1, 2 or 5 times a power of ten apart) inside the range.
 */
export function niceTicks(lo: number, hi: number, n = 4): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/** Tick labels with just enough decimals to tell neighbouring ticks apart (exponents when tiny or huge). */
export function tickLabels(ticks: number[]): string[] {
  if (ticks.length < 2) return ticks.map((t) => fmt(t));
  const step = Math.abs(ticks[1] - ticks[0]);
  const big = Math.max(...ticks.map(Math.abs));
  if (big >= 1e6 || big < 1e-3) {
    const digits = Math.max(0, Math.ceil(Math.log10(big / step)));
    return ticks.map((t) => (t === 0 ? "0" : t.toExponential(digits)));
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
  #pending = false;

  constructor(title: string, series: SeriesSpec[], opts: PlotOptions = {}) {
    this.#series = series;
    this.#opts = opts;
    for (const s of series) this.#ys.set(s.key, []);
    this.#legend = el("div", { class: "plot-legend" });
    this.#svg = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    this.root = el(
      "figure",
      { class: "plot" },
      el("figcaption", {}, el("span", { class: "plot-title" }, title)),
      this.#legend,
      this.#svg,
    );
    this.#draw();
  }

  /** Number of x positions added. */
  get length(): number {
    return this.#xs.length;
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

  #draw(): void {
    const xs = this.#xs;
    // Legend: every series with its latest value.
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
        return el("span", { class: "legend-item" }, swatch, `${s.label} `, el("b", {}, fmt(last)));
      }),
    );
    const nodes: SVGElement[] = [];
    const x0 = M.left, x1 = W - M.right, y0 = H - M.bottom, y1 = M.top;
    nodes.push(svg("rect", { class: "plot-bg", x: x0, y: y1, width: x1 - x0, height: y0 - y1 }));
    let lo = Infinity, hi = -Infinity;
    for (const ys of this.#ys.values()) {
      for (const v of ys) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (lo > hi) {
      nodes.push(
        svg("text", { class: "plot-empty", x: (x0 + x1) / 2, y: (y0 + y1) / 2, "text-anchor": "middle" }),
      );
      nodes[nodes.length - 1].textContent = this.#opts.empty ?? "no data yet";
      this.#svg.replaceChildren(...nodes);
      return;
    }
    if (this.#opts.yRange) [lo, hi] = this.#opts.yRange;
    if (hi - lo < 1e-12) {
      const pad = Math.max(Math.abs(hi) * 0.05, 1e-6);
      lo -= pad;
      hi += pad;
    } else if (!this.#opts.yRange) {
      const pad = (hi - lo) * 0.06;
      lo -= pad;
      hi += pad;
    }
    const xmin = xs[0], xmax = xs.length > 1 ? xs[xs.length - 1] : xs[0] + 1;
    const sx = (x: number) => x0 + ((x - xmin) / (xmax - xmin || 1)) * (x1 - x0);
    const sy = (y: number) => y0 - ((y - lo) / (hi - lo)) * (y0 - y1);
    const yTicks = niceTicks(lo, hi, 4);
    tickLabels(yTicks).forEach((text, i) => {
      const y = sy(yTicks[i]);
      nodes.push(svg("line", { class: "grid", x1: x0, x2: x1, y1: y, y2: y }));
      const label = svg("text", { class: "tick", x: x0 - 4, y: y + 3, "text-anchor": "end" });
      label.textContent = text;
      nodes.push(label);
    });
    for (const t of niceTicks(xmin, xmax, 4)) {
      if (!Number.isInteger(t)) continue;
      const label = svg("text", { class: "tick", x: sx(t), y: y0 + 13, "text-anchor": "middle" });
      label.textContent = fmt(t, 3);
      nodes.push(label);
    }
    for (const [x, r] of this.#rounds.slice(1)) {
      nodes.push(svg("line", { class: "round-line", x1: sx(x), x2: sx(x), y1: y1, y2: y0 }));
      const label = svg("text", { class: "round-label", x: sx(x) + 2, y: y1 + 9 });
      label.textContent = `r${r + 1}`;
      nodes.push(label);
    }
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
      if (d) nodes.push(svg("path", { class: "series", d, stroke: s.color }));
      // A lone point has no line: draw a dot so the first step is visible.
      if (count === 1) nodes.push(svg("circle", { cx: lastX, cy: lastY, r: 2.5, fill: s.color }));
    }
    nodes.push(svg("line", { class: "axis", x1: x0, x2: x1, y1: y0, y2: y0 }));
    this.#svg.replaceChildren(...nodes);
  }
}
