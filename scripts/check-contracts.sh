#!/usr/bin/env bash
# CI check: the committed contracts/artifacts/*.json must be exactly what
# scripts/build-contracts.mjs produces from contracts/src today. Rebuilds into a temporary
# directory and compares. Offline; needs node and the root node_modules (npm ci).
#
#   scripts/check-contracts.sh            # artifacts only (~3 s)
#   scripts/check-contracts.sh --forge    # also run the forge tests in contracts/ (~10 s)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
committed="$root/contracts/artifacts"

run_forge=0
for arg in "$@"; do
  case "$arg" in
    --forge) run_forge=1 ;;
    *) echo "usage: $0 [--forge]" >&2; exit 2 ;;
  esac
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

node "$root/scripts/build-contracts.mjs" --out "$tmp/artifacts" >/dev/null

if [ ! -d "$committed" ]; then
  echo "check-contracts: $committed is missing." >&2
  echo "  Run: node scripts/build-contracts.mjs   and commit contracts/artifacts/." >&2
  exit 1
fi

if ! diff -r -u "$committed" "$tmp/artifacts" >"$tmp/diff.txt"; then
  echo "check-contracts: contracts/artifacts/ is out of date with contracts/src/ (or the compiler)." >&2
  echo "  Run: node scripts/build-contracts.mjs   and commit contracts/artifacts/." >&2
  echo "  Differences (committed -> rebuilt), first 40 lines:" >&2
  head -n 40 "$tmp/diff.txt" | cut -c1-200 >&2
  exit 1
fi
echo "check-contracts: contracts/artifacts/ matches a fresh build ($(ls "$committed" | tr '\n' ' '))"

if [ "$run_forge" = 1 ]; then
  forge="$root/node_modules/@foundry-rs/forge-linux-amd64/bin/forge"
  if [ ! -x "$forge" ]; then
    echo "check-contracts: $forge not found (run npm ci at the repo root)" >&2
    exit 1
  fi
  (cd "$root/contracts" && "$forge" test)
fi
