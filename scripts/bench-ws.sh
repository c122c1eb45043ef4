#!/usr/bin/env bash
# `just bench-ws`: the ws driver against `planrun serve-demo`'s WebSocket, beside a Python
# asyncio client (the `websockets` library, the usual way such tests are written by hand) doing
# the same work against the same server in the same run. Prints one table:
#   - HOLD connections (10,000) opened and held by one process: how many opened, and resident
#     memory per connection of the client process (planrun: its `ws_memory` row, (after −
#     before) / open; the peer: the same two readings of /proc/self/statm);
#   - CONNS connections (1000) x RATE messages/s (10) for DURATION seconds: per-message echo latency p50
#     and p99 and messages echoed per second.
# Every figure is computed here from planrun's events.jsonl (and the peer's own timings), not
# taken from planrun's report. Installs `websockets` (pip) when missing.
# Environment: HOLD (10000), CONNS (1000), RATE (10), DURATION seconds (20).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/planrun-target}"
HOLD="${HOLD:-10000}"
CONNS="${CONNS:-1000}"
RATE="${RATE:-10}"
SECS="${DURATION:-20}"

python3 -c 'import websockets' 2>/dev/null || pip install -q websockets
cargo build --release --bins --locked
planrun="$CARGO_TARGET_DIR/release/planrun"
ulimit -n "$(ulimit -Hn)"

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
addr="$(sed -n 's/^listening on http:\/\///p' "$work/demo.out")"

plan() { # name body
  printf '[plan]\nname = "%s"\n[[phase]]\nname = "bench"\n[[phase.stage]]\nname = "%s"\ndriver = "ws"\nurl = "ws://%s/ws"\n%s\n' \
    "$1" "$1" "$addr" "$2" >"$work/$1.toml"
  "$planrun" run "$work/$1.toml" --quiet --no-analyze --out "$work/results"
}

echo "holding $HOLD connections with planrun..." >&2
hold_dir="$(plan hold "connections = $HOLD
connect_rate = 2000
duration = \"$(( HOLD / 2000 + 8 ))s\"
connect_timeout = \"20s\"")"
echo "echoing $CONNS x $RATE/s for ${SECS} s with planrun..." >&2
echo_dir="$(plan echo "connections = $CONNS
connect_rate = 1000
send_rate = $RATE
duration = \"${SECS}s\"")"

python3 - "$hold_dir/events.jsonl" "$echo_dir/events.jsonl" "$addr" "$HOLD" "$CONNS" "$RATE" "$SECS" <<'PY'
import asyncio, json, os, sys, time
import websockets

hold_events, echo_events, addr, HOLD, CONNS, RATE, SECS = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])
url = f"ws://{addr}/ws"

def pct(xs, q):
    xs = sorted(xs)
    if not xs: return float("nan")
    pos = q * (len(xs) - 1); lo = int(pos); hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

def rows(path):
    return [json.loads(l) for l in open(path)]

# planrun's figures, from its events.
h = rows(hold_events)
p_opened = next(e["value"] for e in h if e["kind"] == "ws_summary" and e["name"] == "opened")
p_mem = next((e["value"] for e in h if e["kind"] == "ws_memory" and e["name"] == "client"), float("nan"))
ev = rows(echo_events)
lat = [e["latency_ms"] for e in ev if e["kind"] == "ws_message" and e.get("name") == "echo" and e.get("ok")]
ts = [e["t_ms"] for e in ev if e["kind"] == "ws_message" and e.get("name") == "echo"]
p_rate = len(lat) / ((max(ts) - min(ts)) / 1000) if len(ts) > 1 else 0

# The peer: asyncio + websockets, the same work.
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

async def hold():
    before = rss()
    sem = asyncio.Semaphore(200)
    async def one():
        async with sem:
            try:
                return await websockets.connect(url, max_size=None, ping_interval=None, open_timeout=20)
            except Exception:
                return None
    conns = [c for c in await asyncio.gather(*(one() for _ in range(HOLD))) if c]
    await asyncio.sleep(1)
    after = rss()
    for c in conns:
        await c.close()
    return len(conns), (after - before) / max(len(conns), 1)

async def echo():
    lats = []; arrivals = []; start = time.monotonic()
    async def client(i):
        async with websockets.connect(url, ping_interval=None) as ws:
            async def reader():
                async for m in ws:
                    d = json.loads(m)
                    now = time.monotonic()
                    lats.append((now - d["t"]) * 1000); arrivals.append(now)
            r = asyncio.create_task(reader())
            # Sends on a fixed schedule (as planrun's ticker), each connection at its own phase.
            first = time.monotonic() + (i % 1000) / 1000 / RATE
            n = 0
            while True:
                at = first + n / RATE
                if at - start >= SECS: break
                await asyncio.sleep(max(0, at - time.monotonic()))
                n += 1
                await ws.send(json.dumps({"seq": n, "t": time.monotonic(), "c": i}))
            await asyncio.sleep(0.5)
            r.cancel()
    await asyncio.gather(*(client(i) for i in range(CONNS)), return_exceptions=True)
    # Echoes per second over first-to-last echo, as planrun's figure.
    span = (max(arrivals) - min(arrivals)) if len(arrivals) > 1 else float("nan")
    return lats, span

print(f"peer: holding {HOLD} connections...", file=sys.stderr)
y_opened, y_mem = asyncio.run(hold())
print(f"peer: echoing {CONNS} x {RATE}/s...", file=sys.stderr)
y_lat, y_span = asyncio.run(echo())

print()
print(f"| figure | planrun ws | python websockets {websockets.__version__} |")
print("|---|---|---|")
print(f"| {HOLD} connections held by one process: opened | {p_opened:.0f} | {y_opened} |")
print(f"| resident memory per connection (client) | {p_mem / 1024:.1f} KiB | {y_mem / 1024:.1f} KiB |")
print(f"| {CONNS} conns x {RATE} msg/s: echo p50 | {pct(lat, 0.5):.2f} ms | {pct(y_lat, 0.5):.2f} ms |")
print(f"| echo p99 | {pct(lat, 0.99):.2f} ms | {pct(y_lat, 0.99):.2f} ms |")
print(f"| echoes per second | {p_rate:.0f} | {len(y_lat) / y_span:.0f} |")
PY
