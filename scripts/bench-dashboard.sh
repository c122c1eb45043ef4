#!/usr/bin/env bash
# `just bench-dashboard`: what watching a run costs it. The same http stage (USERS users for
# DURATION seconds against `planrun serve-demo`, one event per request) runs without and with
# `--dashboard` — the latter with a client reading the dashboard's event stream the whole time —
# ROUNDS times in turn; the run's events per second are computed here from each run's
# events.jsonl, and the medians compared. Prints one table.
# Environment: USERS (64), DURATION seconds (20), ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/planrun-target}"
USERS="${USERS:-64}"
DURATION="${DURATION:-20}"
ROUNDS="${ROUNDS:-3}"

cargo build --release --bins --locked
planrun="$CARGO_TARGET_DIR/release/planrun"
work="$(mktemp -d)"
demo_pid=""
cleanup() {
  [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$planrun" serve-demo --addr 127.0.0.1:0 --latency-scale 0 >"$work/demo.out" 2>/dev/null &
demo_pid=$!
until grep -q listening "$work/demo.out" 2>/dev/null; do sleep 0.05; done
host="$(sed -n 's/^listening on //p' "$work/demo.out")"
printf '[plan]\nname = "load"\n[[phase]]\nname = "bench"\n[[phase.stage]]\nname = "load"\ndriver = "http"\nhost = "%s"\nusers = %s\nduration = "%ss"\n[[phase.stage.task]]\npath = "/"\n' \
  "$host" "$USERS" "$DURATION" >"$work/load.toml"

rate() { # events.jsonl → http events per second over first-to-last
  python3 - "$1" <<'PY'
import json, sys
t = [json.loads(l)["t_ms"] for l in open(sys.argv[1]) if '"kind":"http"' in l]
print(f"{len(t) / ((max(t) - min(t)) / 1000):.0f}")
PY
}

plain=(); watched=(); updates=()
for i in $(seq "$ROUNDS"); do
  echo "round $i: without the dashboard" >&2
  dir="$("$planrun" run "$work/load.toml" --quiet --no-analyze --out "$work/results")"
  plain+=("$(rate "$dir/events.jsonl")")
  echo "round $i: with the dashboard and a client on its event stream" >&2
  "$planrun" run "$work/load.toml" --quiet --no-analyze --out "$work/results" --dashboard=127.0.0.1:0 \
    >"$work/run.out" 2>"$work/run.err" &
  run_pid=$!
  until grep -q "dashboard: http://" "$work/run.err" 2>/dev/null; do sleep 0.05; done
  addr="$(sed -n 's/^dashboard: http:\/\/\([^/]*\)\/.*/\1/p' "$work/run.err")"
  curl -sN "http://$addr/events" >"$work/sse.out" 2>/dev/null &
  curl_pid=$!
  wait "$run_pid"
  kill "$curl_pid" 2>/dev/null || true
  wait "$curl_pid" 2>/dev/null || true
  watched+=("$(rate "$(tail -1 "$work/run.out")/events.jsonl")")
  updates+=("$(grep -c '^data: ' "$work/sse.out" || true)")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p="$(median "${plain[@]}")"; w="$(median "${watched[@]}")"; u="$(median "${updates[@]}")"
echo
echo "| figure | without --dashboard | with --dashboard (and a client) |"
echo "|---|---|---|"
echo "| events/s, median of $ROUNDS (${plain[*]} / ${watched[*]}) | $p | $w |"
echo "| run with dashboard / without | | $(python3 -c "print(f'{$w / $p:.3f}')") |"
echo "| updates the client received in ${DURATION} s (median) | | $u |"
