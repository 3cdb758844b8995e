/**
 * The training plots both modes show: LM loss, SimPO loss, chosen vs rejected reward, margin, win rate
 * and learning rate, fed one metrics record at a time. The x axis is either steps (the optimiser's step
 * for the LM loss and the learning rate, the SimPO phase's own step count for the preference curves,
 * which exist only in that phase) or words seen, for every plot.
 * @module
 */
/// <reference lib="dom" />
import type { MetricsRecord } from "../interaction/loop.ts";
import { el } from "./dom.ts";
import { LinePlot } from "./plot.ts";

const PO_ONLY = "appears in the SimPO phase";

/** What the x axis counts. */
export type XAxis = "steps" | "words";

interface PlotSpec {
  plot: LinePlot;
  /** The step axis this plot uses in "steps" mode. */
  steps: "global" | "po";
}

/** The grid of plots with its x-axis choice; `root` goes on the page. */
export class MetricsView {
  readonly root: HTMLElement;
  #specs: PlotSpec[];
  #records: MetricsRecord[] = [];
  #poSteps = 0;
  #axis: XAxis = "steps";
  #select: HTMLSelectElement;

  constructor() {
    const step = "optimiser step";
    this.#specs = [
      {
        steps: "global",
        plot: new LinePlot(
          "LM loss",
          [{ key: "lmLoss", label: "on the teacher's text", color: "var(--c1)" }],
          {
            yLabel: "nats / token",
            xLabel: step,
          },
        ),
      },
      {
        steps: "po",
        plot: new LinePlot("SimPO loss", [{ key: "simpoLoss", label: "loss", color: "var(--c2)" }], {
          empty: PO_ONLY,
          yLabel: "nats / pair",
          xLabel: "SimPO step",
        }),
      },
      {
        steps: "po",
        plot: new LinePlot("Reward", [
          { key: "chosenReward", label: "chosen (teacher)", color: "var(--c3)" },
          { key: "rejectedReward", label: "rejected (student)", color: "var(--c4)" },
        ], { empty: PO_ONLY, yLabel: "β · mean log-prob", xLabel: "SimPO step" }),
      },
      {
        steps: "po",
        plot: new LinePlot("Margin", [{ key: "margin", label: "chosen − rejected", color: "var(--c2)" }], {
          empty: PO_ONLY,
          yLabel: "reward difference",
          xLabel: "SimPO step",
        }),
      },
      {
        steps: "po",
        plot: new LinePlot("Win rate", [{ key: "winRate", label: "chosen > rejected", color: "var(--c3)" }], {
          yRange: [0, 1],
          percent: true,
          empty: PO_ONLY,
          yLabel: "% of pairs",
          xLabel: "SimPO step",
        }),
      },
      {
        steps: "global",
        plot: new LinePlot("Learning rate", [{ key: "lr", label: "lr", color: "var(--c5)" }], {
          yLabel: "learning rate",
          xLabel: step,
        }),
      },
    ];
    this.#select = el(
      "select",
      { class: "x-axis", "aria-label": "x axis" },
      el("option", { value: "steps" }, "steps"),
      el("option", { value: "words" }, "words seen"),
    );
    this.#select.addEventListener("change", () => this.setAxis(this.#select.value as XAxis));
    this.root = el(
      "div",
      { class: "metrics-view" },
      el(
        "div",
        { class: "plots-head" },
        el(
          "p",
          { class: "hint vocab" },
          "Chosen = the teacher's continuation, rejected = the student's. A reward is β times the mean " +
            "log-probability the student gives a continuation's tokens; dashed lines start rounds (r2, r3, …).",
        ),
        el("label", { class: "inline" }, "x axis ", this.#select),
      ),
      el("div", { class: "plots" }, ...this.#specs.map((s) => s.plot.root)),
    );
  }

  /** Plot against steps or words seen. */
  setAxis(axis: XAxis): void {
    this.#axis = axis;
    this.#select.value = axis;
    for (const s of this.#specs) {
      s.plot.clear();
      s.plot.setXLabel(axis === "words" ? "words seen" : s.steps === "po" ? "SimPO step" : "optimiser step");
    }
    this.#poSteps = 0;
    for (const m of this.#records) this.#plot(m);
  }

  /** Add one step's metrics to every plot. */
  add(m: MetricsRecord): void {
    this.#records.push(m);
    this.#plot(m);
  }

  #plot(m: MetricsRecord): void {
    if (m.phase === "po") this.#poSteps++;
    const values = m as unknown as Record<string, number | undefined>;
    for (const s of this.#specs) {
      if (s.steps === "po" && m.phase !== "po") continue;
      const x = this.#axis === "words" ? m.wordsSeen : s.steps === "po" ? this.#poSteps : m.step;
      s.plot.add(x, values, m.round);
    }
  }

  /** Remove every point. */
  clear(): void {
    this.#records = [];
    this.#poSteps = 0;
    for (const s of this.#specs) s.plot.clear();
  }
}
