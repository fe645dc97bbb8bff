#!/usr/bin/env bash
# `make asl` (part of `make lint`): validates every Step Functions definition of statemachines/
# with asl-validator, installed from npm into .tools at a pinned version on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.0.0
BIN=.tools/node_modules/.bin/asl-validator

if [ "$("$BIN" --version 2>/dev/null)" != "$VERSION" ]; then
  echo "[tools] installing asl-validator $VERSION"
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --save-exact --prefix .tools "asl-validator@$VERSION" >/dev/null
fi

args=()
for definition in statemachines/*.asl.json; do
  args+=(--json-path "$definition")
done
"$BIN" "${args[@]}"
