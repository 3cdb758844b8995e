/**
 * The loss scaler's rule on its own (model/scaler.ts), against GradScaler's: start at init_scale, x0.5 and
 * the clean count reset on an overflow, x2 after growth_interval clean steps in a row; bad settings and
 * states are errors naming the field.
 */
import { deepStrictEqual as assertEquals, throws } from "node:assert/strict";
import { LossScaler, SCALER_DEFAULTS } from "../model/scaler.ts";

Deno.test("loss scaler: GradScaler's defaults, back-off on overflow, growth after the interval", () => {
  assertEquals(SCALER_DEFAULTS, {
    initScale: 65536,
    growthFactor: 2,
    backoffFactor: 0.5,
    growthInterval: 2000,
  });
  const s = new LossScaler({ growthInterval: 3 });
  const seen: number[] = [];
  // clean, clean, overflow (resets the count), clean x3 (grows), clean x3 (grows), overflow.
  for (const finite of [true, true, false, true, true, true, true, true, true, false]) {
    s.update(finite);
    seen.push(s.scale);
  }
  assertEquals(seen, [65536, 65536, 32768, 32768, 32768, 65536, 65536, 65536, 131072, 65536]);
  assertEquals(s.getState(), { scale: 65536, growthTracker: 0, skipped: 2 });
  assertEquals(s.skipped, 2);
  // 2000 clean steps double the default scaler once.
  const d = new LossScaler();
  for (let i = 0; i < 1999; i++) d.update(true);
  assertEquals(d.scale, 65536);
  d.update(true);
  assertEquals(d.getState(), { scale: 131072, growthTracker: 0, skipped: 0 });
});

Deno.test("loss scaler: a restored state continues as the original would", () => {
  const a = new LossScaler({ growthInterval: 4 }), b = new LossScaler({ growthInterval: 4 });
  const outcomes = [true, false, true, true, true, true, true, false, true];
  outcomes.slice(0, 5).forEach((f) => a.update(f));
  b.setState(JSON.parse(JSON.stringify(a.getState())));
  outcomes.slice(5).forEach((f) => {
    a.update(f);
    b.update(f);
  });
  assertEquals(b.getState(), a.getState());
});

Deno.test("loss scaler: bad settings and states are errors naming the field", () => {
  throws(() => new LossScaler({ initScale: 0 }), /initScale must be a positive finite number, got 0/);
  throws(() => new LossScaler({ growthFactor: 1 }), /growthFactor must be > 1, got 1/);
  throws(() => new LossScaler({ backoffFactor: 1 }), /backoffFactor must be in \(0, 1\), got 1/);
  throws(() => new LossScaler({ growthInterval: 1.5 }), /growthInterval must be a positive integer, got 1.5/);
  const s = new LossScaler();
  throws(
    () => s.setState({ scale: Infinity, growthTracker: 0, skipped: 0 }),
    /scale must be a positive finite/,
  );
  throws(
    () => s.setState({ scale: 1, growthTracker: -1, skipped: 0 }),
    /growthTracker must be a non-negative/,
  );
  throws(() => s.setState({ scale: 1, growthTracker: 0, skipped: 0.5 }), /skipped must be a non-negative/);
  assertEquals(s.scale, 65536, "a refused state changes nothing");
});
