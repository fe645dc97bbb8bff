//! Idempotency claims (items table): the first outcome of a write that carried an
//! `idempotency_key`, kept for ten minutes so a repeat returns it and writes nothing.
//!
//! A claim is written in the same transaction as the head it reports on, so it exists exactly
//! when that write landed: a repeat after a lost response, a timeout or a crash finds it, in
//! any container. Its key is `BUCKET/~idempotency/KEY` (no key may contain `~`) with `rev` -1,
//! an item no stream consumer reads (they read `rev` 0 only) and DynamoDB's TTL removes.

use super::items::{get_i64, get_str, get_u64, n, s, Item, INCARNATION, PK, REVISION, TTL};
use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure};

/// How long a claim answers repeats.
pub const CLAIM_TTL_NS: u64 = 10 * 60 * 1_000_000_000;
const CLAIM_MARK: &str = "~idempotency/";
const CLAIM_REVISION: i64 = -1;

const FUNCTION: &str = "fn";
const KEY: &str = "k";
const CLAIMED_REVISION: &str = "rv";
const COUNTER: &str = "cv";
const CREATED: &str = "c";
const EXPIRES_NS: &str = "x";

/// The outcome a claim keeps: what the first call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The function that made it (`kv-key-put`...): a repeat by another is refused.
    pub function: String,
    pub key: String,
    pub revision: u64,
    /// kv-key-increment's new value.
    pub counter: Option<i64>,
    pub created_ms: u64,
}

pub fn claim_pk(bucket: &str, idempotency_key: &str) -> String {
    format!("{bucket}/{CLAIM_MARK}{idempotency_key}")
}

fn decode(item: &Item) -> Option<Claim> {
    Some(Claim {
        function: get_str(item, FUNCTION)?.to_string(),
        key: get_str(item, KEY)?.to_string(),
        revision: get_u64(item, CLAIMED_REVISION)?,
        counter: get_i64(item, COUNTER),
        created_ms: get_u64(item, CREATED).unwrap_or(0),
    })
}

/// A claim to write beside a head.
#[derive(Debug, Clone)]
pub struct ClaimWrite<'a> {
    pub bucket: &'a str,
    pub idempotency_key: &'a str,
    pub incarnation: u64,
    pub claim: Claim,
    pub now_ns: u64,
}

impl ClaimWrite<'_> {
    /// The claim's `Put`: refused while an earlier claim of the same key lives (not expired,
    /// same incarnation of the bucket), returning it.
    pub(super) fn put(&self, table: &str) -> Result<Put, aws_sdk_dynamodb::error::BuildError> {
        let expires_ns = self.now_ns.saturating_add(CLAIM_TTL_NS);
        let mut put = Put::builder()
            .table_name(table)
            .item(PK, s(claim_pk(self.bucket, self.idempotency_key)))
            .item(REVISION, n(CLAIM_REVISION))
            .item(FUNCTION, s(&self.claim.function))
            .item(KEY, s(&self.claim.key))
            .item(CLAIMED_REVISION, n(self.claim.revision))
            .item(CREATED, n(self.claim.created_ms))
            .item(EXPIRES_NS, n(expires_ns))
            .item(TTL, n(expires_ns.div_ceil(1_000_000_000)))
            .item(INCARNATION, n(self.incarnation))
            .condition_expression("attribute_not_exists(#pk) OR #x < :now OR #inc <> :inc")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#x", EXPIRES_NS)
            .expression_attribute_names("#inc", INCARNATION)
            .expression_attribute_values(":now", n(self.now_ns))
            .expression_attribute_values(":inc", n(self.incarnation))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(counter) = self.claim.counter {
            put = put.item(COUNTER, n(counter));
        }
        put.build()
    }
}

/// The claim a refused claim `Put` returned, if it is one.
pub(super) fn refused_claim(item: Option<&Item>) -> Option<Claim> {
    decode(item?)
}

impl super::Store {
    /// The live claim of `idempotency_key` in this incarnation of the bucket, read consistently.
    pub async fn read_claim(
        &self,
        bucket: &str,
        idempotency_key: &str,
        incarnation: u64,
        now_ns: u64,
    ) -> Result<Option<Claim>, super::errors::StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.items)
            .key(PK, s(claim_pk(bucket, idempotency_key)))
            .key(REVISION, n(CLAIM_REVISION))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| super::errors::storage_error("GetItem", error))?;
        Ok(output.item().and_then(|item| {
            let live = get_u64(item, EXPIRES_NS).is_some_and(|expires| expires >= now_ns)
                && get_u64(item, INCARNATION) == Some(incarnation);
            live.then(|| decode(item)).flatten()
        }))
    }
}
