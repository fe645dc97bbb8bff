//! What the KV functions are developed with, kept out of the functions' package: the test
//! harness (DynamoDB Local, the stream pump, the fault proxy, reading `template.yaml`), the
//! request meter the bench and the policy test count with, and `moto` (EventBridge and SQS). The suite itself is `tests/it`, the
//! bench `bench/`, and `kv-tables` creates the tables for `make tables`.

pub mod dynamodb_local;
pub mod emf;
pub mod fault_proxy;
pub mod meter;
pub mod moto;
pub mod sam;
pub mod support;

use std::path::PathBuf;

/// The repository's root: this package lives in `dev/`.
pub fn root() -> PathBuf {
    let dev = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dev.parent().map(PathBuf::from).unwrap_or(dev)
}
