//! The two tables, as `make tables` creates them and `template.yaml` declares them (a test
//! checks that the two agree).

use super::errors::storage_error;
use super::items::{
    BUCKET, BY_BUCKET_INDEX, BY_EXPIRY_INDEX, BY_SEQUENCE_INDEX, COMPRESSED, CREATED_MS, EXPIRY_NS,
    EXPIRY_SECONDS, EXPIRY_SHARD, HEAD_BUCKET, HEAD_REVISION, LATEST_IN_BUCKET, LIST_VALUE, PK,
    REVISION, TTL,
};
use crate::model::config::Settings;
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use std::time::Duration;

/// Attribute name and type of one key element.
pub type KeyAttr = (&'static str, ScalarAttributeType);

#[derive(Debug, Clone)]
pub struct IndexSpec {
    pub name: &'static str,
    pub hash: KeyAttr,
    pub range: Option<KeyAttr>,
    pub projection: ProjectionType,
    /// With `ProjectionType::Include`: the attributes the index copies besides the keys.
    pub non_key: &'static [&'static str],
}

#[derive(Debug, Clone)]
pub struct TableSpec {
    pub hash: KeyAttr,
    pub range: Option<KeyAttr>,
    pub indexes: Vec<IndexSpec>,
    pub ttl_attribute: Option<&'static str>,
    pub stream: Option<StreamViewType>,
}

pub fn buckets_table() -> TableSpec {
    TableSpec {
        hash: (BUCKET, ScalarAttributeType::S),
        range: None,
        indexes: Vec::new(),
        ttl_attribute: None,
        // kv-bucket-delete's purger is invoked from this stream until a deleted bucket is empty.
        stream: Some(StreamViewType::NewImage),
    }
}

pub fn items_table() -> TableSpec {
    TableSpec {
        hash: (PK, ScalarAttributeType::S),
        range: Some((REVISION, ScalarAttributeType::N)),
        // Only a head whose latest revision is a value carries `gb`, so the index holds one
        // entry per live key, ordered by revision: kv-key-list pages it without reading old
        // revisions. An entry carries the value only when it is small (`lv`), so a put moves
        // at most two small index entries whatever the value's size.
        indexes: vec![
            IndexSpec {
                name: BY_SEQUENCE_INDEX,
                hash: (LATEST_IN_BUCKET, ScalarAttributeType::S),
                range: Some((HEAD_REVISION, ScalarAttributeType::N)),
                projection: ProjectionType::Include,
                non_key: &[LIST_VALUE, COMPRESSED, CREATED_MS, EXPIRY_NS],
            },
            // Heads whose latest value expires, keys only, by when: the expiry sweeper finds
            // what has expired without a scan, however late DynamoDB's own TTL sweep is.
            IndexSpec {
                name: BY_EXPIRY_INDEX,
                hash: (EXPIRY_SHARD, ScalarAttributeType::S),
                range: Some((EXPIRY_SECONDS, ScalarAttributeType::N)),
                projection: ProjectionType::KeysOnly,
                non_key: &[],
            },
            // Heads only, keys only: written once per key (a head's keys never change), read
            // only when a bucket is deleted. No sort key: `pk` (bucket/key, up to 1280 bytes)
            // is longer than an index sort key may be (1024), and paging needs none.
            IndexSpec {
                name: BY_BUCKET_INDEX,
                hash: (HEAD_BUCKET, ScalarAttributeType::S),
                range: None,
                projection: ProjectionType::KeysOnly,
                non_key: &[],
            },
        ],
        ttl_attribute: Some(TTL),
        // Reserved for mirrors, sources and republish, which replay the items table's changes.
        stream: Some(StreamViewType::NewAndOldImages),
    }
}

fn key_element(name: &str, key_type: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(|error| StoreError::Internal(error.to_string()))
}

fn key_schema(
    hash: &KeyAttr,
    range: Option<&KeyAttr>,
) -> Result<Vec<KeySchemaElement>, StoreError> {
    let mut schema = vec![key_element(hash.0, KeyType::Hash)?];
    if let Some(range) = range {
        schema.push(key_element(range.0, KeyType::Range)?);
    }
    Ok(schema)
}

/// Creates the table unless it exists, waits until it is active, and turns TTL on.
pub async fn ensure_table(client: &Client, name: &str, spec: &TableSpec) -> Result<(), StoreError> {
    let build_error =
        |error: aws_sdk_dynamodb::error::BuildError| StoreError::Internal(error.to_string());
    let mut attributes: Vec<KeyAttr> = vec![spec.hash.clone()];
    attributes.extend(spec.range.clone());
    for index in &spec.indexes {
        attributes.push(index.hash.clone());
        attributes.extend(index.range.clone());
    }
    attributes.sort_by(|a, b| a.0.cmp(b.0));
    attributes.dedup_by(|a, b| a.0 == b.0);
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&spec.hash, spec.range.as_ref())?));
    for (attribute, kind) in attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(kind)
                .build()
                .map_err(build_error)?,
        );
    }
    for index in &spec.indexes {
        request =
            request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .set_key_schema(Some(key_schema(&index.hash, index.range.as_ref())?))
                    .projection(
                        Projection::builder()
                            .projection_type(index.projection.clone())
                            .set_non_key_attributes((!index.non_key.is_empty()).then(|| {
                                index.non_key.iter().map(|name| name.to_string()).collect()
                            }))
                            .build(),
                    )
                    .build()
                    .map_err(build_error)?,
            );
    }
    if let Some(view) = &spec.stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view.clone())
                .build()
                .map_err(build_error)?,
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(error) => return Err(storage_error("CreateTable", error)),
    }
    for _ in 0..600 {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|error| storage_error("DescribeTable", error))?;
        if described.table().and_then(|table| table.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(attribute) = spec.ttl_attribute {
        let current = client
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .map_err(|error| storage_error("DescribeTimeToLive", error))?;
        let enabled = current
            .time_to_live_description()
            .and_then(|ttl| ttl.attribute_name())
            == Some(attribute);
        if !enabled {
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()
                        .map_err(build_error)?,
                )
                .send()
                .await
                .map_err(|error| storage_error("UpdateTimeToLive", error))?;
        }
    }
    Ok(())
}

pub async fn ensure_tables(client: &Client, settings: &Settings) -> Result<(), StoreError> {
    ensure_table(client, &settings.buckets_table, &buckets_table()).await?;
    ensure_table(client, &settings.items_table, &items_table()).await
}
