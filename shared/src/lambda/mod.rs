//! The Lambda glue: the runtime loop and init, dispatching an event to its operation, the
//! response envelope, logging.

pub mod dispatch;
pub mod envelope;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod runtime;
