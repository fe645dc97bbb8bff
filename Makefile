# The project's commands. `make test` is what CI runs on a fresh clone.
SHELL := /bin/bash

.PHONY: tools test lint unit tables

tools:
	@./scripts/install-tools.sh

## Everything: lints, the template check, unit tests and the DynamoDB Local suites.
test: tools lint
	cargo test --all-targets

lint: tools
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cfn-lint template.yaml

## Unit tests only (no DynamoDB Local).
unit:
	cargo test --lib

## Create both tables (idempotent) at the endpoint the environment names, e.g.
## AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000 AWS_REGION=us-east-1 make tables
tables:
	cargo run --quiet --bin kv-tables
