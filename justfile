# planrun tasks. `just --list` shows them.

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/planrun-target")

# Two builds. `dev` compiles in a few minutes; `release` takes ~20 minutes once and is what
# measurements need. `just run` picks for the plan: the debug build when every stage is
# simulated (the KSI campaign: its results do not depend on planrun's speed), the release build
# when a stage drives real processes or the network (fleets, load tests), and says which. planrun
# records the build it ran in manifest.json and the report.
dev := CARGO_TARGET_DIR + "/debug/planrun"
release := CARGO_TARGET_DIR + "/release/planrun"

# Build every binary a run needs (planrun and planrun-agent), with cargo's progress shown
build PROFILE="dev":
    cargo build --bins --locked --profile {{PROFILE}}

# Run a plan on the build it needs (e.g. `just run plans/demo.toml --profile quick`)
run PLAN *ARGS: (build "dev")
    #!/usr/bin/env bash
    set -euo pipefail
    # A plan that does not load gets its diagnostics from the debug build below.
    if [ "$({{dev}} plan build {{PLAN}} 2>/dev/null || echo debug)" = release ]; then
        echo "just: {{PLAN}} drives real processes, so it runs on the release build (built once, then incremental)" >&2
        cargo build --bins --locked --release
        exec {{release}} run {{PLAN}} {{ARGS}}
    fi
    echo "just: every stage of {{PLAN}} is simulated, so the quick-to-build debug build runs it" >&2
    exec {{dev}} run {{PLAN}} {{ARGS}}

# Run a plan on the release binary (load tests, fleets, anything whose timing matters)
run-release PLAN *ARGS: (build "release")
    {{release}} run {{PLAN}} {{ARGS}}

# Check a plan and print its summary
validate PLAN *ARGS: (build "dev")
    {{dev}} validate {{PLAN}} {{ARGS}}

# Show a plan's resolved schedule
show PLAN *ARGS: (build "dev")
    {{dev}} plan show {{PLAN}} {{ARGS}}

# Continue an interrupted run (with the build that started it: `just resume-release DIR` for release)
resume DIR *ARGS: (build "dev")
    {{dev}} resume {{DIR}} {{ARGS}}

# Continue an interrupted run on the release binary
resume-release DIR *ARGS: (build "release")
    {{release}} resume {{DIR}} {{ARGS}}

# Analyze a run directory (or a directory of runs)
analyze DIR *ARGS: (build "dev")
    {{dev}} analyze {{DIR}} {{ARGS}}

# Analyze on the release binary (runs of millions of events)
analyze-release DIR *ARGS: (build "release")
    {{release}} analyze {{DIR}} {{ARGS}}

# The whole test suite: fmt, clippy, tests (what CI runs)
test:
    bash scripts/test.sh

# Formatting and lints only
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Every benchmark
bench: bench-sink bench-analyze bench-llm bench-fleet bench-http bench-redis bench-ws bench-dashboard bench-bench

# Event sink: 10M events into events.jsonl, events/s and peak RSS
bench-sink EVENTS="10000000":
    cargo bench --bench sink -- {{EVENTS}}

# Analysis: a 10M-event run analyzed by planrun and, side by side, the same metrics by pandas
bench-analyze EVENTS="10000000":
    python3 -c "import pandas, pyarrow" 2>/dev/null || pip install --quiet pandas pyarrow
    cargo bench --bench analyze -- {{EVENTS}}

# LLM driver at scale: 10,000 simulated agents, 1,000,000 calls in virtual time
bench-llm AGENTS="10000" ROUNDS="100":
    cargo bench --bench llm -- {{AGENTS}} {{ROUNDS}}

# Fleet: 50-agent ping cycle latency, runner CPU between cycles, 1000-agent spawn latency
bench-fleet AGENTS="1000":
    cargo bench --bench fleet -- {{AGENTS}}

# HTTP load: planrun beside wrk, oha and Locust against one nginx; memory per user; the stall honesty check
bench-http:
    bash scripts/bench-http.sh

# Redis: swarm messages/s beside redis-benchmark's XADD; a 1000-agent cycle over files and over Redis
bench-redis:
    bash scripts/bench-redis.sh

# WebSocket: 10,000 connections held (memory per connection) and echo latency at 1000 x 10/s, beside Python's websockets
bench-ws:
    bash scripts/bench-ws.sh

# The bench driver beside hyperfine on the same commands: means and standard deviations side by side
bench-bench:
    bash scripts/bench-bench.sh

# The live dashboard's cost to the run it watches: one http stage with and without --dashboard
bench-dashboard:
    bash scripts/bench-dashboard.sh
