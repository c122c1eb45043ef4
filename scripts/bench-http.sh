#!/usr/bin/env bash
# `just bench-http`: planrun's http driver beside wrk, oha and Locust, in one run, against the
# same local nginx serving a small static response, with the same connection count and duration.
# Prints one table: requests/s of each tool; planrun's memory per virtual user at 10,000 users;
# and the honesty check, against a target that freezes for 1 s every 10 s: planrun's open-model
# p99 (from the intended send time) beside a closed-model run and wrk (which hide it).
#
# Installs its peers itself: nginx and wrk (apt), oha (cargo install), locust (pip).
# Environment: CONNS (64), DURATION seconds (10), ROUNDS of wrk/oha/planrun in turn (3), USERS
# for the memory run (10000).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/planrun-target}"
CONNS="${CONNS:-64}"
DURATION="${DURATION:-10}"
USERS="${USERS:-10000}"
ROUNDS="${ROUNDS:-3}"

need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v wrk >/dev/null || need_apt+=(wrk)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
command -v oha >/dev/null || cargo install oha --locked --quiet
python3 -c "import locust" 2>/dev/null || pip install --quiet locust

cargo build --release --bins --locked
planrun="$CARGO_TARGET_DIR/release/planrun"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
url="http://127.0.0.1:$port/"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
daemon off;
events { worker_connections 30000; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { default_type text/plain; return 200 "ok\n"; }
  }
}
EOF
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
for _ in $(seq 50); do curl -fs "$url" >/dev/null 2>&1 && break; sleep 0.1; done

# planrun: one stage, CONNS users with no think time, per-second HDR windows (record = summary;
# `RECORD=all` writes one event per request instead).
planrun_plan() { # users duration record extra-lines
  cat <<EOF
[plan]
name = "bench-http"
[[phase]]
name = "p"
[[phase.stage]]
name = "load"
driver = "http"
host = "$4"
users = $1
duration = "$2"
record = $3
$5
[[phase.stage.task]]
path = "/"
EOF
}
requests_of() { # run dir → requests recorded (windows' counts, or rows)
  python3 - "$1" <<'EOF'
import json, sys
n = 0
for line in open(sys.argv[1] + "/events.jsonl"):
    e = json.loads(line)
    if e["kind"] == "http_window":
        n += e["value"]
    elif e["kind"] == "http":
        n += 1
print(int(n))
EOF
}

# CPU seconds (user + system) a command used, from time(1), into $work/cpu-NAME.
timed() { local name="$1"; shift; /usr/bin/time -f "%U %S" -o "$work/cpu-$name" "$@"; }
cpu_of() { tail -n 1 "$work/cpu-$1" | awk '{print $1 + $2}'; }
echo "== throughput: $CONNS connections, ${DURATION}s, $url; wrk, oha, planrun in turn, $ROUNDS rounds" >&2
planrun_plan "$CONNS" "${DURATION}s" '"summary"' "$url" "" >"$work/tput.toml"
median() { python3 -c 'import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:])))' "$@"; }
wrk_all=(); oha_all=(); pr_all=(); wrk_cpu=(); oha_cpu=(); pr_cpu=()
for round in $(seq "$ROUNDS"); do
  wrk_all+=("$(timed wrk wrk -t2 -c"$CONNS" -d"${DURATION}s" "$url" | awk '/Requests\/sec/ {print $2}')"); wrk_cpu+=("$(cpu_of wrk)")
  oha_all+=("$(timed oha oha -c "$CONNS" -z "${DURATION}s" --no-tui --output-format json "$url" \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["summary"]["requestsPerSec"]))')"); oha_cpu+=("$(cpu_of oha)")
  dir="$(timed planrun "$planrun" run "$work/tput.toml" --out "$work/res" -q --no-analyze)"
  pr_all+=("$(( $(requests_of "$dir") / DURATION ))"); pr_cpu+=("$(cpu_of planrun)")
  echo "   round $round: wrk ${wrk_all[-1]}, oha ${oha_all[-1]}, planrun ${pr_all[-1]}" >&2
done
wrk_rps="$(median "${wrk_all[@]}")"; oha_rps="$(median "${oha_all[@]}")"; pr_rps="$(median "${pr_all[@]}")"
# Requests per CPU-second of each generator, median over the rounds.
eff() { python3 -c '
import statistics, sys
n = len(sys.argv) // 2; rps = sys.argv[1:1 + n]; cpu = sys.argv[1 + n:]
print(round(statistics.median(float(r) * '"$DURATION"' / max(float(c), 0.01) for r, c in zip(rps, cpu))))' "$@"; }
pr_eff="$(eff "${pr_all[@]}" "${pr_cpu[@]}")"; wrk_eff="$(eff "${wrk_all[@]}" "${wrk_cpu[@]}")"; oha_eff="$(eff "${oha_all[@]}" "${oha_cpu[@]}")"
planrun_plan "$CONNS" "${DURATION}s" '"all"' "$url" "" >"$work/tput-all.toml"
dir="$("$planrun" run "$work/tput-all.toml" --out "$work/res" -q --no-analyze)"
pr_all_rps="$(( $(requests_of "$dir") / DURATION ))"
cat >"$work/locustfile.py" <<'EOF'
from locust import FastHttpUser, task
class Static(FastHttpUser):
    @task
    def index(self):
        self.client.get("/")
EOF
(cd "$work" && timed locust locust -f locustfile.py --headless -u "$CONNS" -r "$CONNS" -t "${DURATION}s" --host "${url%/}" \
  --csv "$work/locust" --only-summary --loglevel ERROR >/dev/null 2>&1) || true
echo "   medians: wrk $wrk_rps, oha $oha_rps, planrun $pr_rps (record = all: $pr_all_rps)" >&2
locust_rps="$(python3 -c 'import csv,sys; print(round(float([r for r in csv.DictReader(open(sys.argv[1])) if r["Name"]=="Aggregated"][0]["Requests/s"])))' "$work/locust_stats.csv" 2>/dev/null || echo 0)"

echo "   locust $locust_rps" >&2
echo "== memory: $USERS users at one request a second each" >&2
rss_of() { # users → planrun's peak RSS in KiB for a 30 s run of that many users
  planrun_plan "$1" "30s" '"summary"' "$url" 'wait = { constant_pacing = "1s" }
spawn_rate = 5000
monitor = { name = ["nginx"], every = "1s" }
criteria = ['"'"'growth(value where name == "runner_rss_bytes") < 0.05'"'"']' >"$work/mem-$1.toml"
  /usr/bin/time -f "%M" -o "$work/rss-$1" "$planrun" run "$work/mem-$1.toml" --out "$work/res-$1" -q --format json >/dev/null || true
  # time(1) puts "Command exited with non-zero status N" first when the verdict is FAIL.
  tail -n 1 "$work/rss-$1"
}
rss_small="$(rss_of 100)"
rss_big="$(rss_of "$USERS")"
per_user_kib="$(python3 -c "print(round(($rss_big - $rss_small) / ($USERS - 100), 1))")"
# Does planrun's memory stay flat while 10,000 users run? growth() after its warm-up, from the run's own samples.
rss_growth="$(python3 -c 'import json,glob,sys; r=json.load(open(glob.glob(sys.argv[1]+"/*/report.json")[0])); print(round(100*r["criteria"][0]["observed"],2))' "$work/res-$USERS" 2>/dev/null || echo "?")"
mem_requests="$(requests_of "$(ls -d "$work/res-$USERS"/*/)")"

echo "== honesty: a target that freezes 1 s in every 10 s, 30 s runs" >&2
fport="$(free_port)"
furl="http://127.0.0.1:$fport/"
"$planrun" serve-demo --addr "127.0.0.1:$fport" --latency-scale 0 --freeze-every 10s --freeze-for 1s >/dev/null &
pids+=($!)
for _ in $(seq 50); do curl -fs "$furl" >/dev/null 2>&1 && break; sleep 0.1; done
p99_of() { # run dir, column → p99 of http rows (linear interpolation)
  python3 - "$1" "$2" <<'EOF'
import json, sys
xs = sorted(e[sys.argv[2]] for e in map(json.loads, open(sys.argv[1] + "/events.jsonl")) if e["kind"] == "http")
h = (len(xs) - 1) * 0.99; lo = int(h); hi = min(lo + 1, len(xs) - 1)
print(round(xs[lo] + (h - lo) * (xs[hi] - xs[lo]), 1))
EOF
}
cat >"$work/open.toml" <<EOF
[plan]
name = "bench-http-open"
[[phase]]
name = "p"
[[phase.stage]]
name = "open"
driver = "http"
host = "$furl"
duration = "30s"
arrival_rate = 1000
[[phase.stage.task]]
path = "/"
EOF
dir="$("$planrun" run "$work/open.toml" --out "$work/res" -q --no-analyze)"
open_p99="$(p99_of "$dir" latency_ms)"
open_p99_service="$(p99_of "$dir" service_ms)"
planrun_plan "$CONNS" "30s" '"all"' "$furl" "" >"$work/closed.toml"
dir="$("$planrun" run "$work/closed.toml" --out "$work/res" -q --no-analyze)"
closed_p99="$(p99_of "$dir" latency_ms)"
wrk_p99="$(wrk -t2 -c"$CONNS" -d30s --latency "$furl" | awk '$1 == "99%" {print $2}')"

ratio() { python3 -c "print(f'{$1 / max($2, 1):.2f}x')"; }
# Requests per CPU-second of the load generator: what it can do when the target is not the limit.
locust_eff="$(eff "$locust_rps" "$(cpu_of locust)")"
cat <<EOF

| figure | planrun | peer | ratio | target |
|---|---|---|---|---|
| requests/s, $CONNS connections, ${DURATION}s, median of $ROUNDS (record = summary) | $pr_rps | wrk $wrk_rps | $(ratio "$pr_rps" "$wrk_rps") of wrk | ≥ 0.8x wrk |
| requests/s, same | $pr_rps | oha $oha_rps | $(ratio "$pr_rps" "$oha_rps") of oha | ≥ 1x oha |
| requests/s, same | $pr_rps | Locust (FastHttpUser, 1 process) $locust_rps | $(ratio "$pr_rps" "$locust_rps") of Locust | ≥ 10x Locust |
| requests per CPU-second of the generator (same runs) | $pr_eff | wrk $wrk_eff · oha $oha_eff · Locust $locust_eff | $(ratio "$pr_eff" "$locust_eff") of Locust | ≥ 10x Locust |
| requests/s with one event per request (record = all) | $pr_all_rps | | | |
| memory per user at $USERS users (peak RSS, minus 100 users), $mem_requests requests in 30 s | ${per_user_kib} KiB | | | < 64 KiB |
| planrun's RSS growth over those 30 s after warm-up (growth of runner_rss_bytes) | ${rss_growth}% | | | flat |
| p99 against a 1 s freeze every 10 s: open model, 1000/s, from intended send | ${open_p99} ms | | | shows the freeze |
| same run, from actual send (uncorrected) | ${open_p99_service} ms | | | |
| p99, closed model, $CONNS users | ${closed_p99} ms | wrk $wrk_p99 | | hides it |
EOF
