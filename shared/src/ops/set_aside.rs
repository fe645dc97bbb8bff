//! What the stream consumers do with a record they can never process (SPEC "Nothing stalls
//! the stream"): it is kept with its reason (`store::set_aside`), logged, counted, and skipped.
//! Only a failure a retry can cure (`KvUnavailable`) holds the batch, to be delivered again
//! from that record.

use crate::api::function::Function;
use crate::model::error::KvError;
use crate::model::time;
use crate::ops::state::Kv;
use crate::store::set_aside::SetAside;
use crate::store::stream_images::{record_id, record_pk};
use serde_json::Value;

/// Where a skipped record was going, for the operator who reads why.
#[derive(Debug, Clone, Copy)]
pub struct Skipped<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub revision: Option<u64>,
    /// A bucket copying from `bucket`, `eventbridge`, `waiters`; empty for an unreadable record.
    pub target: &'a str,
}

impl Skipped<'_> {
    /// A record that could not be read: where it was going is not known.
    pub const UNREADABLE: Skipped<'static> = Skipped {
        bucket: "",
        key: "",
        revision: None,
        target: "",
    };
}

/// A batch's failures: the first record to deliver again, and how many were set aside.
#[derive(Debug, Default)]
pub struct Failures {
    pub first_retry: Option<usize>,
    pub set_aside: usize,
}

impl Failures {
    /// Lambda delivers the batch again from `index` on.
    pub fn retry_from(&mut self, index: usize, why: &str) {
        tracing::warn!(record = index, error = %why, "stream record to be delivered again");
        self.first_retry = Some(self.first_retry.map_or(index, |first| first.min(index)));
    }

    /// True when the record at `index` will come again anyway: its work waits for then.
    pub fn retried(&self, index: usize) -> bool {
        self.first_retry.is_some_and(|first| first <= index)
    }

    /// What `error` means for the record at `index`: delivered again when a retry can cure it,
    /// else set aside and skipped (delivered again only if setting it aside fails).
    pub async fn refused(
        &mut self,
        kv: &Kv,
        function: Function,
        (index, record): (usize, &Value),
        skipped: Skipped<'_>,
        error: &KvError,
    ) {
        if matches!(error, KvError::Unavailable(_)) {
            return self.retry_from(index, &error.to_string());
        }
        let pk = record_pk(record);
        let (bucket, key) = match skipped.bucket {
            "" => pk.split_once('/').unwrap_or((pk.as_str(), "")),
            bucket => (bucket, skipped.key),
        };
        let aside = SetAside {
            function: function.name().to_string(),
            record_id: record_id(record),
            bucket: bucket.to_string(),
            key: key.to_string(),
            revision: skipped.revision,
            target: skipped.target.to_string(),
            reason: error.to_string(),
            at_ms: time::ns_to_ms(time::now_ns()),
        };
        match kv.store.set_aside(&aside).await {
            Ok(()) => {
                tracing::warn!(
                    function = function.name(),
                    record = index,
                    target = skipped.target,
                    code = error.code(),
                    reason = %error,
                    "stream record set aside"
                );
                self.set_aside += 1;
                crate::model::metrics::add(|counts| &counts.records_set_aside, 1);
            }
            Err(failure) => self.retry_from(index, &format!("could not set it aside: {failure}")),
        }
    }
}
