//! What the functions send elsewhere: the `detail` of a republished revision's EventBridge
//! event (its `source` is `bus::EVENT_SOURCE`, its `detail-type` the mapped subject).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct RepublishedRevision {
    pub bucket: String,
    pub key: String,
    pub revision: u64,
    /// `PUT`, `DEL`, `PURGE` or `EXPIRED`.
    pub operation: &'static str,
    /// When the revision was written (epoch ms).
    pub created: u64,
    /// The value's size in bytes (0 for markers), as NATS's `Nats-Msg-Size` header says.
    pub size: usize,
    /// True when the event carries no value: the bucket asked for headers only, or the value
    /// was too large for an event (then `too_large` is true as well).
    pub headers_only: bool,
    pub too_large: bool,
    /// The stored text, for a PUT that carries its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}
