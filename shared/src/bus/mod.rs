//! Amazon EventBridge, where a bucket's `republish` sends its revisions: one `PutEvents` per
//! ten events or 256 KB (the API's limits), each entry's failure reported on its own, as one a
//! retry can cure or one it cannot.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;

/// The `source` of every event the functions put on the bus; rules match on it.
pub const EVENT_SOURCE: &str = "kv.republish";
/// What one `PutEvents` call takes.
const ENTRIES_PER_CALL: usize = 10;
/// EventBridge's limit on one entry (source, detail-type and detail together).
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// EventBridge's limit on one `PutEvents` call, its entries' sizes added up.
const MAX_CALL_BYTES: usize = 256 * 1024;
/// EventBridge's limit on a `detail-type`.
pub const MAX_DETAIL_TYPE_CHARS: usize = 128;
/// Entry error codes a later `PutEvents` can cure; any other refusal is final.
const RETRYABLE_ENTRY_CODES: &[&str] = &["InternalFailure", "ThrottlingException"];

/// Why an event did not reach the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A later attempt may succeed (throttling, a failing or unreachable service).
    Retry(String),
    /// It never will (a detail-type or entry over EventBridge's limits, a refused entry).
    Never(String),
}

/// One event: its `detail-type` and its `detail` (JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub detail_type: String,
    pub detail: String,
}

impl Event {
    /// EventBridge's measure of an entry: the UTF-8 bytes of its source, detail-type, detail.
    pub fn size(&self) -> usize {
        EVENT_SOURCE.len() + self.detail_type.len() + self.detail.len()
    }
}

#[derive(Debug, Clone)]
pub struct EventBus {
    client: Client,
    name: String,
}

impl EventBus {
    pub fn new(client: Client, name: &str) -> EventBus {
        EventBus {
            client,
            name: name.to_string(),
        }
    }

    /// The client from the shared configuration (`AWS_ENDPOINT_URL_EVENTBRIDGE` for a local
    /// emulator).
    pub fn from_config(config: &aws_config::SdkConfig, name: &str) -> EventBus {
        EventBus::new(Client::new(config), name)
    }

    /// Puts every event; the answer has one outcome per event, in order.
    pub async fn publish(&self, events: &[Event]) -> Vec<Result<(), Refusal>> {
        let mut outcomes: Vec<Result<(), Refusal>> = events
            .iter()
            .map(|event| match event.detail_type.chars().count() {
                length if length > MAX_DETAIL_TYPE_CHARS => Err(Refusal::Never(format!(
                    "EventBridge takes a detail-type of at most {MAX_DETAIL_TYPE_CHARS} characters; the mapped subject has {length}"
                ))),
                _ if event.size() > MAX_ENTRY_BYTES => Err(Refusal::Never(format!(
                    "EventBridge takes an entry of at most {MAX_ENTRY_BYTES} bytes; this one has {}",
                    event.size()
                ))),
                _ => Ok(()),
            })
            .collect();
        let sendable: Vec<usize> = (0..events.len())
            .filter(|index| outcomes[*index].is_ok())
            .collect();
        for call in calls(events, &sendable) {
            let entries: Vec<PutEventsRequestEntry> = call
                .iter()
                .map(|index| {
                    let event = &events[*index];
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.name)
                        .source(EVENT_SOURCE)
                        .detail_type(&event.detail_type)
                        .detail(&event.detail)
                        .build()
                })
                .collect();
            match self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(output) => {
                    let results = output.entries();
                    for (position, index) in call.iter().enumerate() {
                        let result = results.get(position);
                        if let Some(code) = result.and_then(|result| result.error_code()) {
                            let why = format!(
                                "EventBridge refused the event: {code} {}",
                                result
                                    .and_then(|result| result.error_message())
                                    .unwrap_or_default()
                            );
                            outcomes[*index] = Err(if RETRYABLE_ENTRY_CODES.contains(&code) {
                                Refusal::Retry(why)
                            } else {
                                Refusal::Never(why)
                            });
                        }
                    }
                }
                Err(error) => {
                    let why = format!(
                        "EventBridge PutEvents failed: {}",
                        aws_sdk_eventbridge::error::DisplayErrorContext(&error)
                    );
                    let permanent = crate::store::errors::classify(&error)
                        == crate::store::errors::Failure::Permanent;
                    for index in call {
                        outcomes[index] = Err(if permanent {
                            Refusal::Never(why.clone())
                        } else {
                            Refusal::Retry(why.clone())
                        });
                    }
                }
            }
        }
        outcomes
    }
}

/// The events of `sendable` (indexes, in order) grouped into calls EventBridge takes: at most
/// ten entries and `MAX_CALL_BYTES` each.
fn calls(events: &[Event], sendable: &[usize]) -> Vec<Vec<usize>> {
    let mut calls: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for index in sendable {
        let size = events[*index].size();
        match calls.last_mut() {
            Some(call) if call.len() < ENTRIES_PER_CALL && bytes + size <= MAX_CALL_BYTES => {
                call.push(*index);
                bytes += size;
            }
            _ => {
                calls.push(vec![*index]);
                bytes = size;
            }
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_hold_ten_entries_and_256_kb_at_most() {
        let event = |bytes: usize| Event {
            detail_type: "t".into(),
            detail: "x".repeat(bytes),
        };
        let mut events: Vec<Event> = (0..12).map(|_| event(10)).collect();
        events.extend((0..3).map(|_| event(100 * 1024)));
        let sendable: Vec<usize> = (0..events.len()).collect();
        let sizes: Vec<usize> = calls(&events, &sendable).iter().map(Vec::len).collect();
        // 10 small; 2 small and 2 of 100 KB; the last 100 KB alone.
        assert_eq!(sizes, [10, 4, 1]);
    }
}
