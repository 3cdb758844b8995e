/**
 * The training plots both modes show: LM loss, SimPO loss, chosen vs rejected reward, margin, win rate
 * and learning rate, each against the optimiser step, fed one metrics record at a time.
 * @module
 */
/// <reference lib="dom" />
import type { MetricsRecord } from "../interaction/loop.ts";
import { el } from "./dom.ts";
import { LinePlot } from "./plot.ts";

const PO_ONLY = "appears in the preference (SimPO) phase";

/** The grid of plots; `root` goes on the page. */
export class MetricsView {
  readonly root: HTMLElement;
  #plots: LinePlot[];
  #count = 0;

  constructor() {
    this.#plots = [
      new LinePlot("LM loss", [{ key: "lmLoss", label: "winning seq.", color: "var(--c1)" }]),
      new LinePlot("SimPO loss", [{ key: "simpoLoss", label: "loss", color: "var(--c2)" }], {
        empty: PO_ONLY,
      }),
      new LinePlot("Reward: teacher vs student", [
        { key: "chosenReward", label: "chosen", color: "var(--c3)" },
        { key: "rejectedReward", label: "rejected", color: "var(--c4)" },
      ], { empty: PO_ONLY }),
      new LinePlot("Margin (chosen - rejected)", [{ key: "margin", label: "margin", color: "var(--c2)" }], {
        empty: PO_ONLY,
      }),
      new LinePlot("Win rate", [{ key: "winRate", label: "chosen > rejected", color: "var(--c3)" }], {
        yRange: [0, 1],
        empty: PO_ONLY,
      }),
      new LinePlot("Learning rate", [{ key: "lr", label: "lr", color: "var(--c5)" }]),
    ];
    this.root = el("div", { class: "plots" }, ...this.#plots.map((p) => p.root));
  }

  /** Records added so far. */
  get count(): number {
    return this.#count;
  }

  /** Add one step's metrics to every plot. */
  add(m: MetricsRecord): void {
    this.#count++;
    const values = m as unknown as Record<string, number | undefined>;
    for (const p of this.#plots) p.add(m.step, values, m.round);
  }

  /** Remove every point. */
  clear(): void {
    this.#count = 0;
    for (const p of this.#plots) p.clear();
  }
}
