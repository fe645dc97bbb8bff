//! Stream records set aside (items table): a change the stream consumers can never process (a
//! copy its target refuses, an event EventBridge refuses, a record that cannot be read) is kept
//! here with its reason and skipped, so it never holds up the records after it.
//!
//! All of them share one partition, `~set-aside` (no bucket name contains `~`), each under a
//! `rev` drawn from the revision and its target: a batch delivered again sets the same
//! revision aside once. No stream consumer reads them (they read `rev` 0 of heads only); an
//! operator lists them (`make set-aside` locally; a `Query` of the partition on AWS) and
//! DynamoDB's TTL removes them after `SET_ASIDE_TTL_NS`.

use super::errors::{is_condition_failure, storage_error, StoreError};
use super::items::{get_str, get_u64, n, s, Item, PK, REVISION, TTL};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// The partition every set-aside record lives in.
pub const SET_ASIDE_PK: &str = "~set-aside";
/// How long a set-aside record is kept: as long as the longest SQS retention, for an operator
/// back from a holiday.
pub const SET_ASIDE_TTL_NS: u64 = 14 * 24 * 3600 * 1_000_000_000;

const FUNCTION: &str = "fn";
const BUCKET: &str = "b";
const KEY: &str = "k";
const RECORD_REVISION: &str = "r";
const TARGET: &str = "t";
const REASON: &str = "why";
const RECORD_ID: &str = "id";
const AT_MS: &str = "c";

/// One record that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The consumer that set it aside (`kv-items-replicate`, `kv-items-stream`).
    pub function: String,
    /// The stream record's `eventID` (or sequence number).
    pub record_id: String,
    pub bucket: String,
    pub key: String,
    /// The revision the record commits, when it could be read.
    pub revision: Option<u64>,
    /// Where it was going: a bucket copying from `bucket`, `eventbridge`, `waiters`, or empty
    /// when the record itself could not be read.
    pub target: String,
    pub reason: String,
    pub at_ms: u64,
}

impl SetAside {
    /// Its place in the partition: the same for the same revision and target (or, for a
    /// record that could not be read, the same record), so a redelivered batch, or a backfill
    /// meeting the stream, sets it aside once (FNV-1a, 53 bits: a number an SDK reads exactly).
    fn slot(&self) -> i64 {
        let revision = self.revision.map(|revision| revision.to_string());
        let what = match &revision {
            Some(revision) => [self.bucket.as_str(), &self.key, revision],
            None => [self.record_id.as_str(), "", ""],
        };
        let hash = [self.function.as_str(), &self.target]
            .iter()
            .chain(what.iter())
            .flat_map(|part| part.bytes().chain(std::iter::once(0)))
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        i64::try_from(hash >> 11).unwrap_or(1).max(1)
    }
}

fn decode(item: &Item) -> Option<SetAside> {
    Some(SetAside {
        function: get_str(item, FUNCTION)?.to_string(),
        record_id: get_str(item, RECORD_ID).unwrap_or_default().to_string(),
        bucket: get_str(item, BUCKET).unwrap_or_default().to_string(),
        key: get_str(item, KEY).unwrap_or_default().to_string(),
        revision: get_u64(item, RECORD_REVISION),
        target: get_str(item, TARGET).unwrap_or_default().to_string(),
        reason: get_str(item, REASON)?.to_string(),
        at_ms: get_u64(item, AT_MS).unwrap_or(0),
    })
}

impl super::Store {
    /// Keeps a record that will not be processed.
    pub async fn set_aside(&self, record: &SetAside) -> Result<(), StoreError> {
        let expires_ns = record
            .at_ms
            .saturating_mul(1_000_000)
            .saturating_add(SET_ASIDE_TTL_NS);
        let mut request = self
            .client
            .put_item()
            .table_name(&self.items)
            .item(PK, s(SET_ASIDE_PK))
            .item(REVISION, n(record.slot()))
            .item(FUNCTION, s(&record.function))
            .item(RECORD_ID, s(&record.record_id))
            .item(BUCKET, s(&record.bucket))
            .item(KEY, s(&record.key))
            .item(TARGET, s(&record.target))
            .item(REASON, s(&record.reason))
            .item(AT_MS, n(record.at_ms))
            .item(TTL, n(expires_ns.div_ceil(1_000_000_000)));
        if let Some(revision) = record.revision {
            request = request.item(RECORD_REVISION, n(revision));
        }
        // The first time it was set aside is the one kept.
        match request
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(error) => Err(storage_error("PutItem", error)),
        }
    }

    /// Every record set aside and not yet expired, oldest first.
    pub async fn set_aside_records(&self) -> Result<Vec<SetAside>, StoreError> {
        let mut records = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.items)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(SET_ASIDE_PK))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|error| storage_error("Query", error))?;
            records.extend(output.items().iter().filter_map(decode));
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        records.sort_by_key(|record| (record.at_ms, record.revision));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_and_target_have_one_slot() {
        let record = SetAside {
            function: "kv-items-replicate".into(),
            record_id: "id-1".into(),
            bucket: "o".into(),
            key: "k".into(),
            revision: Some(3),
            target: "q".into(),
            reason: "too large".into(),
            at_ms: 1,
        };
        let later = SetAside {
            at_ms: 2,
            record_id: "id-2".into(),
            reason: "other words".into(),
            ..record.clone()
        };
        let elsewhere = SetAside {
            target: "m".into(),
            ..record.clone()
        };
        assert_eq!(record.slot(), later.slot());
        assert_ne!(record.slot(), elsewhere.slot());
        assert!(record.slot() > 0 && record.slot() < (1 << 53));
    }
}
