#!/usr/bin/env bash
# `just bench-bench`: planrun's `bench` driver beside hyperfine on the same commands in the same
# benchmark run. Both time the commands without a shell (hyperfine -N; planrun `cmd` + `args`),
# with the same warm-up and run counts, alternating hyperfine, planrun, hyperfine, planrun so
# drift on the machine affects both. For each command it prints each tool's mean and standard
# deviation (planrun's from its own events.jsonl, computed here; hyperfine's from
# --export-json) and the difference of the means in percent. The yardstick for "within noise" is
# hyperfine against itself: how far its own mean moved between the two rounds. Installs
# hyperfine (apt) when missing.
# Environment: RUNS (40), WARMUP (3).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/planrun-target}"
RUNS="${RUNS:-40}"
WARMUP="${WARMUP:-3}"

command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
cargo build --release --bins --locked
planrun="$CARGO_TARGET_DIR/release/planrun"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Three commands of different lengths: a process start, a sleep, and CPU work.
cat >"$work/b.toml" <<PLAN
[plan]
name = "bench-vs-hyperfine"
[[phase]]
name = "p"
[[phase.stage]]
name = "s"
driver = "bench"
warmup = $WARMUP
runs = $RUNS
commands = [
  { name = "true", cmd = "true" },
  { name = "sleep", cmd = "sleep", args = ["0.02"] },
  { name = "cpu", cmd = "sh", args = ["-c", "i=0; while [ \$i -lt 20000 ]; do i=\$((i+1)); done"] },
]
PLAN

for round in 1 2; do
  hyperfine -N --style none --warmup "$WARMUP" --runs "$RUNS" --export-json "$work/h$round.json" \
    -n true 'true' -n sleep 'sleep 0.02' -n cpu "sh -c 'i=0; while [ \$i -lt 20000 ]; do i=\$((i+1)); done'" >/dev/null
  (cd "$work" && "$planrun" run b.toml --quiet --no-analyze >"$work/p$round.out")
done

python3 - "$work" <<'PY'
import json, statistics, sys, os
w = sys.argv[1]
res = {}
for rnd in (1, 2):
    h = {r["command"]: r for r in json.load(open(f"{w}/h{rnd}.json"))["results"]}
    run_dir = os.path.join(w, open(f"{w}/p{rnd}.out").read().split()[-1])
    rows = [json.loads(l) for l in open(run_dir + "/events.jsonl")]
    for name in ("true", "sleep", "cpu"):
        hs = [t * 1000 for t in h[name]["times"]]
        ps = [r["latency_ms"] for r in rows if r["kind"] == "bench_run" and r["name"] == name and r["ok"]]
        res[(name, rnd)] = (statistics.mean(hs), statistics.stdev(hs), statistics.mean(ps), statistics.stdev(ps))
print(f"{'command':8} {'round':>5} {'hyperfine mean ± σ ms':>22} {'planrun mean ± σ ms':>22} {'planrun vs hyperfine':>21} {'hyperfine round 1 vs 2':>23}")
for name in ("true", "sleep", "cpu"):
    h1, h2 = res[(name, 1)][0], res[(name, 2)][0]
    for rnd in (1, 2):
        hm, hsd, pm, psd = res[(name, rnd)]
        print(f"{name:8} {rnd:>5} {hm:>12.3f} ± {hsd:<7.3f} {pm:>12.3f} ± {psd:<7.3f} {100 * (pm - hm) / hm:>+20.1f}% {100 * (h2 - h1) / h1:>+22.1f}%")
PY
