"""The metrics `planrun analyze` computes, done with pandas, for `just bench-analyze`.

Reads events.parquet from a run directory and computes, as planrun does: per-plan, per-phase,
per-stage and per-(kind, name) aggregates (counts, ok/failed/timeouts, success rate, latency
min/mean/p50/p90/p95/p99/p99.9/max/stddev, cost and tokens, first/last t_ms), the error
breakdown, per-agent latency, per-stage time series, and the bench plan's criteria. Prints the
number of result rows so the work cannot be skipped.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

run = Path(sys.argv[1])
ev = pd.read_parquet(run / "events.parquet")
manifest = json.loads((run / "manifest.json").read_text())
data = ev[ev["kind"] != "stage"].copy()
data["ok_f"] = data["ok"].astype("float64")
err = data["error"].str.lower()
data["is_timeout"] = (err.str.contains("timeout", na=False) | err.str.contains("timed out", na=False))
data["is_ok"] = data["ok"].eq(True)
data["is_failed"] = data["ok"].eq(False)


def aggs(g):
    lat = g["latency_ms"]
    return g.agg(
        count=("seq", "size"),
        ok=("is_ok", "sum"),
        failed=("is_failed", "sum"),
        timeouts=("is_timeout", "sum"),
        success_rate=("ok_f", "mean"),
        latency_min=("latency_ms", "min"),
        latency_mean=("latency_ms", "mean"),
        latency_p50=("latency_ms", lambda s: s.quantile(0.50)),
        latency_p90=("latency_ms", lambda s: s.quantile(0.90)),
        latency_p95=("latency_ms", lambda s: s.quantile(0.95)),
        latency_p99=("latency_ms", lambda s: s.quantile(0.99)),
        latency_p999=("latency_ms", lambda s: s.quantile(0.999)),
        latency_max=("latency_ms", "max"),
        latency_stddev=("latency_ms", "std"),
        cost_usd=("cost_usd", "sum"),
        tokens_in=("tokens_in", "sum"),
        tokens_out=("tokens_out", "sum"),
        t_first_ms=("t_ms", "min"),
        t_last_ms=("t_ms", "max"),
    )


results = []
results.append(aggs(data.assign(_all=1).groupby("_all")))
results.append(aggs(data.groupby("phase", sort=False)))
results.append(aggs(data.groupby(["phase", "stage"], sort=False)))
results.append(aggs(data.groupby(["phase", "stage", "kind", "name"], sort=False)))
errors = data[data["error"].notna()].groupby(["phase", "stage", "error"]).size().sort_values(ascending=False).head(100)
results.append(errors)
agents = data[data["agent"].notna() & data["latency_ms"].notna()].groupby(["phase", "stage", "agent"], sort=False).agg(
    count=("seq", "size"),
    latency_mean=("latency_ms", "mean"),
    latency_p95=("latency_ms", lambda s: s.quantile(0.95)),
    failed=("is_failed", "sum"),
)
results.append(agents)

# Time series: windows of about 1/60 of each stage.
stages = pd.DataFrame(manifest["stages"])
stages["w"] = [max(10.0, (b - a) / 60.0) for a, b in zip(stages["t_start_ms"], stages["t_end_ms"])]
ts = data.merge(stages[["phase", "stage", "t_start_ms", "w"]], on=["phase", "stage"])
ts["bucket"] = np.floor((ts["t_ms"] - ts["t_start_ms"]) / ts["w"]).astype("int64")
series = ts.groupby(["phase", "stage", "bucket"]).agg(
    count=("seq", "size"),
    failed=("is_failed", "sum"),
    latency_p50=("latency_ms", lambda s: s.quantile(0.50)),
    latency_p95=("latency_ms", lambda s: s.quantile(0.95)),
)
results.append(series)

# The bench plan's criteria.
def in_stage(df, p, s):
    return df[(df["phase"] == p) & (df["stage"] == s)]

measured = data[data["ok"].notna()]
crit = {
    "success_rate": measured["ok_f"].mean(),
    "error_rate": 1 - measured["ok_f"].mean(),
    "timeout_rate": measured["is_timeout"].mean(),
    "cost": data["cost_usd"].sum(),
    "crashes": int((data["kind"] == "crash").sum()),
    "p99_baseline": data[(data["phase"] == "baseline") & data["kind"].isin(["response", "spawn"])]["latency_ms"].quantile(0.99),
    "p99_call": data[(data["phase"] == "load") & (data["kind"] == "call")]["latency_ms"].quantile(0.99),
}
sp = in_stage(data, "baseline", "spawn")
crit["p95_spawn"] = sp[sp["name"] == "spawn"]["latency_ms"].quantile(0.95)
crit["mean_spawn"] = sp[sp["name"] == "spawn"]["latency_ms"].mean()
so = in_stage(data, "baseline", "soak")
rss = so[so["name"] == "rss_bytes"]
x = rss["t_ms"] - rss["t_ms"].mean()
slope = (x * (rss["value"] - rss["value"].mean())).sum() / (x * x).sum()
start = rss["value"].mean() + slope * (rss["t_ms"].min() - rss["t_ms"].mean())
crit["growth"] = slope * (rss["t_ms"].max() - rss["t_ms"].min()) / start
cyc = so[so["kind"] == "cycle"]["latency_ms"]
crit["cov"] = cyc.std() / cyc.mean()
crit["rate_response"] = (so["kind"] == "response").sum() / 3600.0
bu = in_stage(data, "load", "burst")
crit["p999_burst"] = bu[(bu["kind"] == "response") & bu["agent"].isin(["agent-1", "agent-2"])]["latency_ms"].quantile(0.999)
crit["throughput_burst"] = bu["ok"].notna().sum() / 3600.0
ll = in_stage(data, "load", "llm")
crit["p995_llm"] = ll[(ll["kind"] == "call") & ll["is_ok"]]["latency_ms"].quantile(0.995)
crit["tokens_out"] = ll["tokens_out"].sum()

print(f"{sum(len(r) for r in results)} result rows, {len(crit)} criteria")
