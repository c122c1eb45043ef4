#!/usr/bin/env bash
# `just bench-redis`: planrun over Redis, beside redis-benchmark, against the same redis-server
# in the same run. Prints one table:
#   - messages/s relayed by the swarm driver (100 swarms x 5 members, every message one XADD by
#     its sender, read by its swarm's leader and committed with a fenced script, and recorded as
#     an event), beside redis-benchmark's XADD rate (50 clients, unpipelined and -P 16);
#   - a coordination cycle across 1000 agents (one ping to each, every response collected),
#     p50 over files and over Redis.
# Figures are computed here from each run's events.jsonl, not taken from planrun's report.
#
# Installs redis-server and redis-benchmark (apt) when missing.
# Environment: ROUNDS (3), DURATION seconds of each swarm run (10), RATE per member (400),
# AGENTS (1000), CYCLES per fleet run (5).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/planrun-target}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
RATE="${RATE:-400}"
AGENTS="${AGENTS:-1000}"
CYCLES="${CYCLES:-5}"

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
cargo build --release --bins --locked
planrun="$CARGO_TARGET_DIR/release/planrun"

work="$(mktemp -d)"
redis_pid=""
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >/dev/null 2>&1 &
redis_pid=$!
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
url="redis://127.0.0.1:$port/0"

plan() { # name driver body
  printf '[plan]\nname = "%s"\n[[phase]]\nname = "bench"\n[[phase.stage]]\nname = "%s"\ndriver = "%s"\n%s\n' "$1" "$1" "$2" "$3" >"$work/$1.toml"
  "$planrun" run "$work/$1.toml" --quiet --no-analyze --out "$work/results"
}

swarm_rate() { # events.jsonl → relayed messages/s over the stage's span, mean latency
  python3 - "$1" <<'PY'
import json, sys
n = 0; lat = 0.0; lo = hi = None
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("stage") != "swarm": continue
    t = e["t_ms"]; lo = t if lo is None else min(lo, t); hi = t if hi is None else max(hi, t)
    if e["kind"] == "message" and e.get("ok"): n += 1; lat += e["latency_ms"]
print(f"{n / ((hi - lo) / 1000):.0f} {lat / max(n, 1):.2f}")
PY
}

cycle_p50() { # events.jsonl → p50 of cycle durations (ms), cycles where every agent answered
  python3 - "$1" <<'PY'
import json, sys, statistics
c = [json.loads(l) for l in open(sys.argv[1])]
c = [e for e in c if e["kind"] == "cycle"]
full = [e["latency_ms"] for e in c if e.get("value") == 1.0]
print(f"{statistics.median(full):.1f} {len(full)}/{len(c)}")
PY
}

bench_xadd() { # pipeline → requests/s
  redis-cli -p "$port" del bench >/dev/null
  redis-benchmark -p "$port" -c 50 -n 500000 -P "$1" -q XADD bench MAXLEN '~' 100000 '*' from swarm-001/agent-1 sent_us 1733500000000000 \
    | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | awk '{print $1}'
}

declare -a sw lat rb rb16 files redis
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  rb+=("$(bench_xadd 1)")
  rb16+=("$(bench_xadd 16)")
  dir="$(plan swarm swarm "duration = \"${DURATION}s\"
swarms = 100
agents_per_swarm = 5
message_rate = $RATE
server = \"$url\"")"
  read -r rate mean < <(swarm_rate "$dir/events.jsonl")
  sw+=("$rate"); lat+=("$mean")
  fleet="agents = $AGENTS
batch_size = 50
cycles = $CYCLES
interval = \"2s\"
heartbeat = \"2s\"
response_timeout = \"30s\"
startup_timeout = \"30s\""
  dir="$(plan files fleet "$fleet")"; files+=("$(cycle_p50 "$dir/events.jsonl")")
  dir="$(plan redis fleet "$fleet
transport = \"$url\"")"; redis+=("$(cycle_p50 "$dir/events.jsonl")")
done

median() { printf '%s\n' "$@" | awk '{print $1}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_sw="$(median "${sw[@]}")"; m_rb="$(median "${rb[@]}")"; m_rb16="$(median "${rb16[@]}")"
echo
echo "planrun over Redis, $ROUNDS rounds in turn against one redis-server on loopback (medians; each round's figures in brackets)"
printf '%-58s %12s   %s\n' "" "median" "rounds"
printf '%-58s %12s   [%s]\n' "swarm messages relayed/s (100 x 5, ${RATE}/s each offered)" "$m_sw" "${sw[*]}"
printf '%-58s %12s   [%s]\n' "  mean message latency, ms" "$(median "${lat[@]}")" "${lat[*]}"
printf '%-58s %12s   [%s]\n' "redis-benchmark XADD/s (-c 50, unpipelined)" "$m_rb" "${rb[*]}"
printf '%-58s %12s   [%s]\n' "redis-benchmark XADD/s (-c 50 -P 16)" "$m_rb16" "${rb16[*]}"
printf '%-58s %12s\n' "planrun / redis-benchmark unpipelined" "$(python3 -c "print(f'{$m_sw/$m_rb:.2f}x')")"
printf '%-58s %12s\n' "planrun / redis-benchmark -P 16" "$(python3 -c "print(f'{$m_sw/$m_rb16:.2f}x')")"
printf '%-58s %12s   [%s]\n' "$AGENTS-agent cycle p50 over files, ms (full cycles)" "$(median "${files[@]}")" "${files[*]}"
printf '%-58s %12s   [%s]\n' "$AGENTS-agent cycle p50 over Redis, ms (full cycles)" "$(median "${redis[@]}")" "${redis[*]}"
