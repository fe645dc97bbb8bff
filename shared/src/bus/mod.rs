//! Amazon EventBridge, where a bucket's `republish` sends its revisions: one `PutEvents` per
//! ten events (the API's limit), each entry's failure reported on its own.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;

/// The `source` of every event the functions put on the bus; rules match on it.
pub const EVENT_SOURCE: &str = "kv.republish";
/// What one `PutEvents` call takes.
const ENTRIES_PER_CALL: usize = 10;
/// EventBridge's limit on one entry (source, detail-type and detail together).
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

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

    /// Puts every event; the answer has one outcome per event, in order: `Err` says why that
    /// event did not reach the bus (a retry may).
    pub async fn publish(&self, events: &[Event]) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::with_capacity(events.len());
        for chunk in events.chunks(ENTRIES_PER_CALL) {
            let entries: Vec<PutEventsRequestEntry> = chunk
                .iter()
                .map(|event| {
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
                    outcomes.extend((0..chunk.len()).map(|index| {
                        let result = results.get(index);
                        match result.and_then(|result| result.error_code()) {
                            None => Ok(()),
                            Some(code) => Err(format!(
                                "EventBridge refused the event: {code} {}",
                                result
                                    .and_then(|result| result.error_message())
                                    .unwrap_or_default()
                            )),
                        }
                    }));
                }
                Err(error) => {
                    let why = format!(
                        "EventBridge PutEvents failed: {}",
                        aws_sdk_eventbridge::error::DisplayErrorContext(&error)
                    );
                    outcomes.extend(chunk.iter().map(|_| Err(why.clone())));
                }
            }
        }
        outcomes
    }
}
