#!/usr/bin/env bash
# The one test command (README, and .ci/run): installs the pinned npm tooling when missing,
# checks the committed contract artifacts and runs the forge tests, then runs every Rust test
# in the workspace against real anvil nodes (and PostgreSQL where the tests need it).
#
# PostgreSQL: tests use TOLLGATE_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# With CI=true an unreachable server is a failure; elsewhere the Postgres half of the ledger
# tests is skipped with a visible message.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

for tool in cargo node npm; do
  command -v "$tool" >/dev/null || { echo "test.sh: '$tool' is required (Rust and Node.js)" >&2; exit 1; }
done

# Pinned chain tooling (anvil/forge/cast, solc wasm), the official x402 clients and playwright-core.
if [ ! -x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] || [ ! -d node_modules/solc ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "npm ci (chain tooling, pinned)"
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ ! -d tests/node_modules/@x402/fetch ] || [ ! -d tests/node_modules/playwright-core ] || [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; then
  step "npm ci --prefix tests (official x402 clients, pinned)"
  npm ci --prefix tests --no-audit --no-fund --loglevel=error
fi
# The console's browser test (crates/cli/tests/it/console.rs) drives Debian's Chromium through
# playwright-core (which downloads no browser).
if [ ! -x /usr/bin/chromium ]; then
  step "apt-get install chromium (the console's browser test)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

export TOLLGATE_TEST_PG_URL="${TOLLGATE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_hostport="${TOLLGATE_TEST_PG_URL#*@}"; pg_hostport="${pg_hostport%%/*}"
pg_host="${pg_hostport%%:*}"; pg_port="${pg_hostport##*:}"
if (exec 3<>"/dev/tcp/$pg_host/$pg_port") 2>/dev/null; then
  echo "PostgreSQL reachable at $pg_host:$pg_port"
elif [ "${CI:-}" = "true" ]; then
  echo "test.sh: PostgreSQL is mandatory in CI and is not reachable at $pg_host:$pg_port" >&2
  exit 1
else
  echo "!! PostgreSQL not reachable at $pg_host:$pg_port: SKIPPING the Postgres ledger tests (they run in CI)"
  export TOLLGATE_SKIP_POSTGRES=1
fi

step "contracts: committed artifacts match the sources; forge tests"
scripts/check-contracts.sh --forge

step "Rust tests (workspace)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
