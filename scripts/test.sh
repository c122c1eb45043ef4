#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, then runs
# `cargo fmt --check`, clippy with warnings as errors, and every test. .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds after the first are incremental: keep the target directory outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/planrun-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
# The Redis tests start their own redis-server (and use redis-cli) on loopback ports.
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
# The browser tests open report.html and the live dashboard in headless Chromium.
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
# Default targets: the library, binary and integration tests (benchmarks are run with `just bench`).
cargo test --locked
