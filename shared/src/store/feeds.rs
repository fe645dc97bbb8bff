//! What replication keeps in DynamoDB: which buckets copy from a bucket (`feeds` on its usage
//! item, written when a mirror or source target is created), a backfill's cursors (`bf` on the
//! target's usage item), and a mirror's last revision, raised to the origin's.

use super::errors::{is_condition_failure, storage_error};
use super::items::*;
use super::Store;
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::BTreeMap;

impl Store {
    /// The buckets that copy from `origin`.
    pub async fn feeds(&self, origin: &str) -> Result<Vec<String>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(origin)))
            .key(REVISION, n(0))
            .projection_expression("#feeds")
            .expression_attribute_names("#feeds", FEEDS)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        Ok(output
            .item()
            .and_then(|item| item.get(FEEDS))
            .and_then(|feeds| feeds.as_ss().ok())
            .cloned()
            .unwrap_or_default())
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
