//! The KV functions' library, in layers that depend downwards only:
//! `lambda` (runtime, dispatch, envelope, logging) → `ops` (one module per function, with the
//! per-container state) → `api` (function names, requests, responses), `store` (DynamoDB),
//! `bus` (EventBridge) and `tokens` (Step Functions' task tokens) → `model` (configuration, revisions, rules, subjects, codec, cache, time,
//! errors).

pub mod api;
pub mod bus;
pub mod lambda;
pub mod model;
pub mod ops;
pub mod store;
pub mod tokens;

pub use api::function::Function;
pub use lambda::dispatch::handle;
pub use lambda::error::FunctionError;
pub use model::error::KvError;
pub use ops::state::Kv;
