# planrun tasks. `just --list` shows them.

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/planrun-target")

planrun := "cargo run --quiet --release --"

# Run a plan (e.g. `just run plans/demo.toml --profile quick`)
run PLAN *ARGS:
    {{planrun}} run {{PLAN}} {{ARGS}}

# Check a plan and print its summary
validate PLAN *ARGS:
    {{planrun}} validate {{PLAN}} {{ARGS}}

# Show a plan's resolved schedule
show PLAN *ARGS:
    {{planrun}} plan show {{PLAN}} {{ARGS}}

# Continue an interrupted run
resume DIR:
    {{planrun}} resume {{DIR}}

# Analyze a run directory (or a directory of runs)
analyze DIR *ARGS:
    {{planrun}} analyze {{DIR}} {{ARGS}}

# The whole test suite: fmt, clippy, tests (what CI runs)
test:
    bash scripts/test.sh

# Formatting and lints only
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Every benchmark
bench: bench-sink bench-analyze bench-llm bench-fleet

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
