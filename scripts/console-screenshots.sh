#!/usr/bin/env bash
# Regenerates the console's screenshots in docs/console/ by running its browser test
# (crates/cli/tests/it/console.rs) with CONSOLE_SCREENSHOTS_DIR pointing there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CONSOLE_SCREENSHOTS_DIR="$root/docs/console"
cargo nextest run --workspace -E 'test(console_in_a_real_browser)'
ls -l docs/console/*.png
