//! What replication keeps in DynamoDB: which buckets copy from a bucket (`feeds` on its usage
//! item, written when a mirror or source target is created), read with its count of waiters as
//! its `Activity`, a backfill's cursors (`bf` on the target's usage item), and a mirror's last
//! revision, raised to the origin's.

use super::errors::{is_condition_failure, storage_error};
use super::items::*;
use super::Store;
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::BTreeMap;

/// A bucket's incarnation, the buckets that mirror or source it, and how many flows wait on
/// its keys (at least as many as there are: the count rises before a waiter is written and
/// falls after it is removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub incarnation: u64,
    pub feeds: Vec<String>,
    pub waiting: i64,
}

impl Store {
    /// What the stream's replication must know of a bucket beyond its configuration, from its
    /// usage item in one strongly consistent read: None when the bucket is gone (its usage
    /// item goes with the delete's first steps).
    pub async fn activity(&self, bucket: &str) -> Result<Option<Activity>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(bucket)))
            .key(REVISION, n(0))
            .projection_expression("#inc, #feeds, #waiting")
            .expression_attribute_names("#inc", INCARNATION)
            .expression_attribute_names("#feeds", FEEDS)
            .expression_attribute_names("#waiting", WAITING)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        Ok(output.item().map(|item| Activity {
            incarnation: get_u64(item, INCARNATION).unwrap_or(0),
            feeds: item
                .get(FEEDS)
                .and_then(|feeds| feeds.as_ss().ok())
                .cloned()
                .unwrap_or_default(),
            waiting: get_i64(item, WAITING).unwrap_or(0),
        }))
    }

    /// Raises the bucket's last revision to `revision` if it is lower: a mirror's last
    /// revision is its origin's.
    pub async fn raise_last_revision(&self, bucket: &str, revision: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.buckets)
            .key(BUCKET, s(bucket))
            .update_expression("SET #seq = :revision")
            .condition_expression("attribute_exists(#bucket) AND #seq < :revision")
            .expression_attribute_names("#seq", LAST_REVISION)
            .expression_attribute_names("#bucket", BUCKET)
            .expression_attribute_values(":revision", n(revision))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(error) => Err(storage_error("UpdateItem", error)),
        }
    }

    /// Moves `target`'s backfill from `origin` on to after `cursor`, or ends it (None). The
    /// change reaches the stream, which continues the backfill from there.
    pub async fn set_backfill(
        &self,
        target: &str,
        origin: &str,
        cursor: Option<&str>,
    ) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(target)))
            .key(REVISION, n(0))
            .condition_expression("attribute_exists(#bf.#origin)")
            .expression_attribute_names("#bf", BACKFILL)
            .expression_attribute_names("#origin", origin);
        let update = match cursor {
            Some(cursor) => update
                .update_expression("SET #bf.#origin = :cursor")
                .expression_attribute_values(":cursor", s(cursor)),
            None => update.update_expression("REMOVE #bf.#origin"),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            // Already ended, or the target was deleted: nothing left to carry on.
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(error) => Err(storage_error("UpdateItem", error)),
        }
    }
}

/// A usage item's backfill cursors, per origin.
pub fn backfill_cursors(item: &Item) -> BTreeMap<String, String> {
    match item.get(BACKFILL) {
        Some(AttributeValue::M(cursors)) => cursors
            .iter()
            .filter_map(|(origin, cursor)| Some((origin.clone(), cursor.as_s().ok()?.clone())))
            .collect(),
        _ => BTreeMap::new(),
    }
}
