/**
 * The demo page's entry point: starts the training worker (a module worker running the project's round
 * loop behind comlink), checks WebGPU, and switches between live mode and inspect mode by the URL hash
 * (`#live`, `#inspect`, `#inspect/<run>?<view>`; see url_state.ts).
 * @module
 */
/// <reference lib="dom" />
import * as Comlink from "comlink";
import { byId } from "./dom.ts";
import { InspectMode } from "./inspect.ts";
import { LiveMode } from "./live.ts";
import { probeWebGpu, type TrainerApi } from "./protocol.ts";
import { parseRoute } from "./url_state.ts";

function banner(text: string): void {
  const b = byId("banner");
  b.textContent = text;
  b.hidden = false;
}

async function main(): Promise<void> {
  const worker = new Worker("worker.js", { type: "module", name: "trainer" });
  const api = Comlink.wrap<TrainerApi>(worker);
  const live = new LiveMode(api);
  const inspect = new InspectMode();
  worker.addEventListener(
    "error",
    (e) => banner(`The training worker failed to load: ${e.message ?? "unknown error"}`),
  );

  // The Inspect tab returns to the run and view last shown there.
  let lastInspect = "inspect";
  const route = async () => {
    const r = parseRoute(location.hash);
    if (r.mode === "inspect") lastInspect = location.hash.replace(/^#/, "") || "inspect";
    const isInspect = r.mode === "inspect";
    byId("live").hidden = isInspect;
    byId("inspect").hidden = !isInspect;
    for (const [id, on] of [["tab-live", !isInspect], ["tab-inspect", isInspect]] as const) {
      byId(id).classList.toggle("active", on);
      byId(id).setAttribute("aria-selected", String(on));
    }
    if (r.problem) banner(`This link is partly unreadable: ${r.problem}. The rest of it is shown.`);
    else if (byId("banner").dataset.kind === "link") byId("banner").hidden = true;
    byId("banner").dataset.kind = r.problem ? "link" : "";
    if (isInspect) await inspect.show(r).catch((e) => banner(`Inspect: ${(e as Error).message}`));
    else inspect.hide();
  };
  byId("tab-live").addEventListener("click", () => (location.hash = "live"));
  byId("tab-inspect").addEventListener("click", () => (location.hash = lastInspect));
  addEventListener("hashchange", () => void route());
  void route();

  // WebGPU: first the page (is there any?), then the worker, where training runs (adapter and limits).
  const status = byId("gpu-status");
  const here = await probeWebGpu(navigator.gpu);
  const probe = here.ok ? await api.probe() : here;
  if (probe.ok) {
    status.textContent = `WebGPU · ${probe.adapter}`;
    status.classList.add("ok");
  } else {
    status.textContent = "no usable WebGPU";
    status.classList.add("bad");
    banner(`${probe.problem} Inspect mode still works.`);
    live.disable(probe.problem ?? "no WebGPU");
  }
}

main().catch((e) => banner(`The page failed to start: ${(e as Error).message}`));
