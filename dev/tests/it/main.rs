//! The test suite, as one binary: one link of the SDK and one DynamoDB Local (started by
//! `kv_dev::support` on first use) serve every module. Each module is one part of the contract
//! or of the deployment, as its own documentation says.

mod concurrency;
mod counters;
mod e2e;
mod faults;
mod fuzz;
mod idempotency;
mod lifecycle;
mod limits;
mod metrics;
mod nats_differential;
mod nats_replication;
mod operations;
mod placement;
mod policy;
mod replication;
mod spec;
mod streams;
mod template;
mod watch;
