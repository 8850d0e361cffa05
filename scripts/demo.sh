#!/usr/bin/env bash
# The README's demo command: installs the pinned chain tooling when missing, then runs the
# demo (anvil as Base, a demo API behind tollgate on embedded SQLite, an agent paying per
# call with a budget, and a ledger-vs-chain summary).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ ! -x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ]; then
  echo "==> npm ci (pinned anvil)"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "==> building (the first run compiles the workspace: a few minutes on 2 cores)"
exec cargo run -q -p tollgate-cli --example demo
