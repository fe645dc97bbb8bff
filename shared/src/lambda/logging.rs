//! Logging as Lambda's advanced logging controls expect it: JSON lines when
//! `AWS_LAMBDA_LOG_FORMAT=JSON`, each carrying the invocation's request id (the runtime's span),
//! at the level of `AWS_LAMBDA_LOG_LEVEL`, then `RUST_LOG`, then INFO.
//!
//! Values are never logged: the two places that would print them at TRACE (the runtime's raw
//! event and the SDK's raw HTTP responses) are held at DEBUG whatever the level asked for.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

const NEVER_BELOW_DEBUG: &[&str] = &[
    "lambda_runtime::layers::api_response=debug",
    "aws_smithy_runtime::client::orchestrator::http=debug",
];

pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|level| level.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let mut filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    for quiet in NEVER_BELOW_DEBUG {
        if let Ok(directive) = quiet.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_env_filter(filter);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    // try_init: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
