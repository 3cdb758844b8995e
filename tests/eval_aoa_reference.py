"""Reference AoA numbers for tests/eval_aoa_test.ts, computed with scipy as the BabyLM 2026 pipeline does.

Reads JSON from stdin: {"child": [{"ages": [...], "props": [...]}], "model": [{"steps": [...],
"surprisals": [...], "vocab": V, "nsub": n}], "pairs": [[x...], [y...]]} and prints
{"child": [aoa or null], "model": [log10 aoa or null], "pearson": [r, p]}. The fits use
scipy.optimize.curve_fit with the pipeline's starting points, bounds and evaluation limits
(eval/aoa.ts documents them); nothing here is the pipeline's code.
"""
import json
import sys

import numpy as np
from scipy.optimize import curve_fit
from scipy.stats import pearsonr


def sig(x, a, b, c, d):
    return a / (1 + np.exp(-b * (x - c))) + d


def level_x(p, level):
    a, b, c, d = p
    if b <= 1e-6 or a <= 1e-6 or level <= d or level >= a + d:
        return None
    return c - np.log(a / (level - d) - 1) / b


def child(ages, props):
    ages = np.array(ages, float)
    props = np.array(props, float)
    ok = ~np.isnan(props)
    x, y = ages[ok], props[ok]
    if len(x) < 3:
        return None
    try:
        p, _ = curve_fit(sig, x, y, p0=[1.0, 0.1, x.mean(), 0.0],
                         bounds=([0, 0, x[0], -0.5], [2.0, 1.0, x[-1], 0.5]), maxfev=1000)
    except Exception:
        return None
    if p[1] <= 0 or p[0] <= 0:
        return None
    v = level_x(p, 0.5)
    if v is None or v < x[0] or v > x[-1]:
        return None
    return float(v)


def model(steps, surprisals, vocab, nsub):
    steps = np.array(steps, float)
    s = np.array(surprisals, float)
    ok = ~np.isnan(s)
    steps, s = steps[ok], s[ok]
    if len(steps) < 3:
        return None
    chance = nsub * np.log(vocab)
    threshold = chance - 0.5 * (chance - s.min())
    y = -s
    x = np.log10(steps + 1)
    r = y.max() - y.min()
    try:
        p, _ = curve_fit(sig, x, y, p0=[r, 1.0, x.mean(), y.min()],
                         bounds=([0.0, 0.0, x.min() - 1, y.min() - 2 * r - 1],
                                 [10 * r + 1, 100.0, x.max() + 1, y.max() + 1]), maxfev=20000)
    except Exception:
        return None
    v = level_x(p, -threshold)
    if v is None:
        return None
    step = 10 ** v - 1
    if step < steps[0] or step > steps[-1]:
        return None
    return float(v)


def main():
    q = json.load(sys.stdin)
    out = {
        "child": [child(c["ages"], c["props"]) for c in q.get("child", [])],
        "model": [model(m["steps"], m["surprisals"], m["vocab"], m["nsub"]) for m in q.get("model", [])],
    }
    if q.get("pairs"):
        r, p = pearsonr(q["pairs"][0], q["pairs"][1])
        out["pearson"] = [float(r), float(p)]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
