//! The KV model shared by every function binary: parameters and validation, the KV semantics
//! over DynamoDB, the response envelope and the error types.

pub mod cache;
pub mod codec;
pub mod config;
pub mod dynamo;
pub mod envelope;
pub mod error;
pub mod function;
pub mod handler;
pub mod logging;
pub mod ops;
pub mod params;
pub mod runtime;
pub mod subject;
pub mod time;
pub mod validate;

pub use error::{FunctionError, KvError};
pub use function::Function;
pub use handler::{handle, Kv};
