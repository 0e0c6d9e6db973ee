#!/usr/bin/env bash
# Build and run the kernel-choice benchmark in release mode.
# The target dir lives in /tmp so nothing big lands in the repo.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/kernel_choice_target}"
cargo build --release
exec "$CARGO_TARGET_DIR/release/kernel_choice" "$@"
