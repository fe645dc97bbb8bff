//! Capacity units by AWS's pricing model, for every write a call sends.
//!
//! DynamoDB Local reports plain requests as AWS bills them, index units included, but bills a
//! multi-item `TransactWriteItems` at plain-write rates. So the benchmark records the key of
//! every item each write request writes (the `Capture` interceptor) and prices it from the item
//! as it was before and after the call (read back by `snapshot`), the same way for plain and
//! transactional writes; beside it, what DynamoDB Local reported for the plain ones:
//!
//! - an item written outside a transaction: 1 WCU per started KB of the larger of its size
//!   before and after (a delete: its size before; at least 1 KB); inside one: 2 WCU per KB;
//! - each global secondary index whose entry for the item changes: 1 WCU per started KB of the
//!   index entry (the whole item for `ALL`; the table and index keys for `KEYS_ONLY`, plus the
//!   listed attributes for `INCLUDE`); an entry that moves to another index key is a delete
//!   plus an insert, 2 writes;
//! - item size: attribute names plus values (strings and binaries their bytes, numbers
//!   1 byte per 2 significant digits plus 1, booleans and nulls 1, lists and maps 3 bytes plus
//!   1 per element plus the elements).

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::{
    batch_write_item::BatchWriteItemInput, delete_item::DeleteItemInput, put_item::PutItemInput,
    transact_write_items::TransactWriteItemsInput, update_item::UpdateItemInput,
};
use aws_sdk_dynamodb::types::{AttributeValue, ProjectionType, ReturnConsumedCapacity};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's size of one attribute value, in bytes.
pub fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => number_size(number),
        AttributeValue::B(blob) => blob.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(list) => 3 + list.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(name, v)| name.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

fn number_size(number: &str) -> usize {
    let mantissa = number.split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.max(1).div_ceil(2) + 1
}

/// DynamoDB's size of an item: every attribute's name and value.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn kb(bytes: usize) -> f64 {
    bytes.max(1).div_ceil(1024) as f64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Put,
    Update,
    Delete,
    Check,
}

/// One item a write request writes (or, in a transaction, checks).
#[derive(Debug, Clone)]
pub struct WrittenItem {
    pub table: String,
    pub key: Item,
    pub action: Action,
    /// The item a `Put` writes.
    pub put: Option<Item>,
}

/// One write request as sent: `PutItem`, `UpdateItem`, `DeleteItem`, `BatchWriteItem` or
/// `TransactWriteItems`, and the items it writes.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub operation: &'static str,
    pub transactional: bool,
    pub items: Vec<WrittenItem>,
}

/// What the `Capture` interceptor saw since the last `take`.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub writes: Vec<WriteRequest>,
    /// Capacity DynamoDB Local reported, per operation name: (requests, read, write).
    pub reported: BTreeMap<String, (usize, f64, f64)>,
    /// +1 when a request starts, -1 when it ends: the sequential round trips show in it.
    pub edges: Vec<(Instant, i32)>,
}

impl Captured {
    /// Groups of requests in flight together, one after another: the round trips.
    pub fn round_trips(&self) -> usize {
        let mut edges = self.edges.clone();
        edges.sort_by_key(|(at, step)| (*at, *step));
        let mut in_flight = 0;
        let mut trips = 0;
        for (_, step) in edges {
            if in_flight == 0 && step > 0 {
                trips += 1;
            }
            in_flight += step;
        }
        trips
    }

    /// Every item the call's requests wrote, by table and key (condition checks left out).
    pub fn written_keys(&self) -> BTreeSet<String> {
        self.writes
            .iter()
            .flat_map(|request| request.items.iter())
            .filter(|item| item.action != Action::Check)
            .map(|item| describe_key(&item.table, &item.key))
            .collect()
    }
}

/// A readable name for an item: `table[pk, rev]` or `table[bucket]`.
pub fn describe_key(table: &str, key: &Item) -> String {
    let show = |value: &AttributeValue| match value {
        AttributeValue::S(text) => text.clone(),
        AttributeValue::N(number) => number.clone(),
        other => format!("{other:?}"),
    };
    let parts: Vec<String> = KEY_NAMES
        .iter()
        .filter_map(|name| key.get(*name).map(show))
        .collect();
    format!("{table}[{}]", parts.join(", "))
}

/// Records the items of every write request, and each response's reported capacity; asks
/// DynamoDB for capacity with the index units broken out.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    log: Arc<Mutex<Captured>>,
}

impl Capture {
    pub fn take(&self) -> Captured {
        self.log
            .lock()
            .map(|mut log| std::mem::take(&mut *log))
            .unwrap_or_default()
    }
}

fn keys_of(item: &Item) -> Item {
    item.iter()
        .filter(|(name, _)| KEY_NAMES.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

fn put_of(table: &str, item: &Item) -> WrittenItem {
    WrittenItem {
        table: table.to_string(),
        key: keys_of(item),
        action: Action::Put,
        put: Some(item.clone()),
    }
}

fn keyed(table: &str, key: &Item, action: Action) -> WrittenItem {
    WrittenItem {
        table: table.to_string(),
        key: key.clone(),
        action,
        put: None,
    }
}

/// The write request an input is, if it is one.
fn write_request(
    input: &aws_smithy_runtime_api::client::interceptors::context::Input,
) -> Option<WriteRequest> {
    let plain = |operation, item| {
        Some(WriteRequest {
            operation,
            transactional: false,
            items: vec![item],
        })
    };
    if let Some(put) = input.downcast_ref::<PutItemInput>() {
        let table = put.table_name().unwrap_or("?");
        return plain("PutItem", put_of(table, put.item().unwrap_or(&Item::new())));
    }
    if let Some(update) = input.downcast_ref::<UpdateItemInput>() {
        let table = update.table_name().unwrap_or("?");
        let key = update.key().cloned().unwrap_or_default();
        return plain("UpdateItem", keyed(table, &key, Action::Update));
    }
    if let Some(delete) = input.downcast_ref::<DeleteItemInput>() {
        let table = delete.table_name().unwrap_or("?");
        let key = delete.key().cloned().unwrap_or_default();
        return plain("DeleteItem", keyed(table, &key, Action::Delete));
    }
    if let Some(batch) = input.downcast_ref::<BatchWriteItemInput>() {
        let mut items = Vec::new();
        for (table, writes) in batch.request_items().into_iter().flatten() {
            for write in writes {
                if let Some(put) = write.put_request() {
                    items.push(put_of(table, put.item()));
                } else if let Some(delete) = write.delete_request() {
                    items.push(keyed(table, delete.key(), Action::Delete));
                }
            }
        }
        return Some(WriteRequest {
            operation: "BatchWriteItem",
            transactional: false,
            items,
        });
    }
    let transaction = input.downcast_ref::<TransactWriteItemsInput>()?;
    let items = transaction
        .transact_items()
        .iter()
        .filter_map(|item| {
            if let Some(put) = item.put() {
                Some(put_of(put.table_name(), put.item()))
            } else if let Some(update) = item.update() {
                Some(keyed(update.table_name(), update.key(), Action::Update))
            } else if let Some(delete) = item.delete() {
                Some(keyed(delete.table_name(), delete.key(), Action::Delete))
            } else {
                item.condition_check()
                    .map(|check| keyed(check.table_name(), check.key(), Action::Check))
            }
        })
        .collect();
    Some(WriteRequest {
        operation: "TransactWriteItems",
        transactional: true,
        items,
    })
}

impl Intercept for Capture {
    fn name(&self) -> &'static str {
        "KvBenchCapture"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let write = write_request(context.input());
        if let Ok(mut log) = self.log.lock() {
            log.edges.push((Instant::now(), 1));
            log.writes.extend(write);
        }
        Ok(())
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The meter asks for TOTAL; INDEXES reports the same total with index units included.
        let indexes = Some(ReturnConsumedCapacity::Indexes);
        let input = context.input_mut();
        if let Some(input) = input.downcast_mut::<PutItemInput>() {
            input.return_consumed_capacity = indexes;
        } else if let Some(input) = input.downcast_mut::<UpdateItemInput>() {
            input.return_consumed_capacity = indexes;
        } else if let Some(input) = input.downcast_mut::<DeleteItemInput>() {
            input.return_consumed_capacity = indexes;
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map(Metadata::name);
        if let (Ok(output), Some(operation)) = (context.output_or_error(), operation) {
            let (read, write) = kv_dev::meter::capacity(output);
            if let Ok(mut log) = self.log.lock() {
                let entry = log.reported.entry(operation.to_string()).or_default();
                entry.0 += 1;
                entry.1 += read;
                entry.2 += write;
            }
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Ok(mut log) = self.log.lock() {
            log.edges.push((Instant::now(), -1));
        }
        Ok(())
    }
}

/// The key attributes of both KV tables (items: `pk` + `rev`; buckets: `bucket`).
const KEY_NAMES: [&str; 3] = [kv::store::items::PK, kv::store::items::REVISION, "bucket"];

/// A stable name for an item's key.
pub fn key_id(table: &str, key: &Item) -> String {
    let mut parts: Vec<String> = key
        .iter()
        .filter(|(name, _)| KEY_NAMES.contains(&name.as_str()))
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    parts.sort();
    format!("{table}|{}", parts.join("|"))
}

/// Items as they were at one moment, by `key_id`, and which key partitions were read whole.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub items: HashMap<String, Item>,
    pub partitions: Vec<(String, String)>,
    pub singles: Vec<String>,
}

impl Snapshot {
    fn covers(&self, table: &str, key: &Item) -> bool {
        let pk = key
            .get(kv::store::items::PK)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str);
        self.singles.contains(&key_id(table, key))
            || self
                .partitions
                .iter()
                .any(|(t, p)| t == table && Some(p.as_str()) == pk)
    }
}

/// Reads every item of these key partitions of the items table, and these single items (of
/// any table), with strong consistency.
pub async fn snapshot(
    client: &aws_sdk_dynamodb::Client,
    items_table: &str,
    partitions: &[String],
    singles: &[(String, Item)],
) -> Snapshot {
    let mut snap = Snapshot::default();
    for pk in partitions {
        let mut start = None;
        loop {
            let page = client
                .query()
                .table_name(items_table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", kv::store::items::PK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("snapshot query");
            for item in page.items() {
                snap.items.insert(key_id(items_table, item), item.clone());
            }
            match page.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => break,
            }
        }
        snap.partitions.push((items_table.to_string(), pk.clone()));
    }
    for (table, key) in singles {
        let found = client
            .get_item()
            .table_name(table)
            .set_key(Some(key.clone()))
            .consistent_read(true)
            .send()
            .await
            .expect("snapshot get");
        if let Some(item) = found.item() {
            snap.items.insert(key_id(table, key), item.clone());
        }
        snap.singles.push(key_id(table, key));
    }
    snap
}

/// A global secondary index as the model needs it.
#[derive(Debug, Clone)]
pub struct IndexModel {
    pub name: &'static str,
    pub hash: &'static str,
    pub range: Option<&'static str>,
    /// The non-key attributes an entry carries: None for `ALL` (every attribute).
    pub projected: Option<&'static [&'static str]>,
}

/// The items table's indexes, from the same schema `make tables` creates.
pub fn item_indexes() -> Vec<IndexModel> {
    kv::store::schema::items_table()
        .indexes
        .iter()
        .map(|index| IndexModel {
            name: index.name,
            hash: index.hash.0,
            range: index.range.as_ref().map(|range| range.0),
            projected: match index.projection {
                ProjectionType::All => None,
                ProjectionType::KeysOnly => Some(&[]),
                _ => Some(index.non_key),
            },
        })
        .collect()
}

fn index_entry(index: &IndexModel, item: &Item) -> Option<Item> {
    if !item.contains_key(index.hash) || index.range.is_some_and(|range| !item.contains_key(range))
    {
        return None;
    }
    let Some(projected) = index.projected else {
        return Some(item.clone());
    };
    Some(
        item.iter()
            .filter(|(name, _)| {
                KEY_NAMES.contains(&name.as_str())
                    || *name == index.hash
                    || index.range == Some(name.as_str())
                    || projected.contains(&name.as_str())
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
    )
}

/// One priced piece of a call's writes.
#[derive(Debug, Clone)]
pub struct Part {
    /// The request it belongs to, e.g. `PutItem` or `TransactWriteItems`.
    pub request: &'static str,
    /// The item and what happens to it, e.g. `head put` or `index by-sequence move (head)`.
    pub what: String,
    pub units: f64,
}

/// Where a call's write units go, by AWS's model.
#[derive(Debug, Clone, Default)]
pub struct Priced {
    pub total: f64,
    pub parts: Vec<Part>,
    /// Model units per plain (non-transactional) operation, to set beside DynamoDB Local's.
    pub plain: BTreeMap<&'static str, f64>,
    /// Items whose before/after state the snapshots did not cover (priced as absent).
    pub uncovered: usize,
}

fn kind(table: &str, items_table: &str, key: &Item) -> &'static str {
    if table != items_table {
        return "bucket item";
    }
    let pk = key
        .get(kv::store::items::PK)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .unwrap_or("");
    let revision = key
        .get(kv::store::items::REVISION)
        .and_then(|v| v.as_n().ok())
        .map(String::as_str)
        .unwrap_or("0");
    match (pk.contains('/'), revision == "0") {
        (true, true) => "head",
        (true, false) => "archived revision",
        (false, _) => "usage item",
    }
}

pub fn price_writes(
    writes: &[WriteRequest],
    before: &Snapshot,
    after: &Snapshot,
    items_table: &str,
    indexes: &[IndexModel],
) -> Priced {
    let mut priced = Priced::default();
    for request in writes {
        let per_kb = if request.transactional { 2.0 } else { 1.0 };
        let mut request_units = 0.0;
        for item in &request.items {
            let id = key_id(&item.table, &item.key);
            if !before.covers(&item.table, &item.key) || !after.covers(&item.table, &item.key) {
                priced.uncovered += 1;
            }
            let old = before.items.get(&id);
            let new = match item.action {
                Action::Delete => None,
                Action::Check => old,
                Action::Put | Action::Update => after.items.get(&id).or(item.put.as_ref()),
            };
            let size = |found: Option<&Item>| found.map(item_size).unwrap_or(0);
            let billed = match item.action {
                Action::Put | Action::Update => size(old).max(size(new)),
                Action::Delete | Action::Check => size(old),
            };
            let what = kind(&item.table, items_table, &item.key);
            let action = match item.action {
                Action::Put => "put",
                Action::Update => "update",
                Action::Delete => "delete",
                Action::Check => "condition check",
            };
            let units = per_kb * kb(billed);
            request_units += units;
            priced.parts.push(Part {
                request: request.operation,
                what: format!("{what} {action}"),
                units,
            });
            if item.table != items_table {
                continue;
            }
            for index in indexes {
                let was = old.and_then(|found| index_entry(index, found));
                let now = new.and_then(|found| index_entry(index, found));
                let same_key = |a: &Item, b: &Item| {
                    a.get(index.hash) == b.get(index.hash)
                        && index.range.is_none_or(|range| a.get(range) == b.get(range))
                };
                let (label, units) = match (&was, &now) {
                    (None, None) => continue,
                    (None, Some(entry)) => ("insert", kb(item_size(entry))),
                    (Some(entry), None) => ("remove", kb(item_size(entry))),
                    (Some(a), Some(b)) if !same_key(a, b) => {
                        ("move", kb(item_size(a)) + kb(item_size(b)))
                    }
                    (Some(a), Some(b)) if a != b => ("update", kb(item_size(a).max(item_size(b)))),
                    _ => continue,
                };
                request_units += units;
                priced.parts.push(Part {
                    request: request.operation,
                    what: format!("index {} {label} ({what})", index.name),
                    units,
                });
            }
        }
        priced.total += request_units;
        if !request.transactional {
            *priced.plain.entry(request.operation).or_default() += request_units;
        }
    }
    priced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_documented_rules() {
        assert_eq!(number_size("0"), 2);
        assert_eq!(number_size("12345"), 4);
        assert_eq!(number_size("1000"), 2);
        let item: Item = [
            ("pk".to_string(), AttributeValue::S("abc".into())),
            ("rev".to_string(), AttributeValue::N("12".into())),
            (
                "h".to_string(),
                AttributeValue::L(vec![AttributeValue::N("1".into())]),
            ),
        ]
        .into();
        // pk: 2 + 3; rev: 3 + 2; h: 1 + (3 + 2 + 1)
        assert_eq!(item_size(&item), 5 + 5 + 7);
        assert_eq!(kb(0), 1.0);
        assert_eq!(kb(1024), 1.0);
        assert_eq!(kb(1025), 2.0);
    }

    #[test]
    fn index_entries_carry_keys_and_projected_attributes() {
        use kv::store::items::*;
        let blob = |n: usize| AttributeValue::B(vec![7u8; n].into());
        let head: Item = [
            (PK.to_string(), AttributeValue::S("b/k".into())),
            (REVISION.to_string(), AttributeValue::N("0".into())),
            (LATEST_IN_BUCKET.to_string(), AttributeValue::S("b".into())),
            (HEAD_BUCKET.to_string(), AttributeValue::S("b".into())),
            (HEAD_REVISION.to_string(), AttributeValue::N("9".into())),
            (VALUE.to_string(), blob(100)),
            (LIST_VALUE.to_string(), blob(100)),
        ]
        .into();
        let indexes = item_indexes();
        let names = |index: &IndexModel| {
            let mut names: Vec<String> = index_entry(index, &head)
                .map(|entry| entry.into_keys().collect())
                .unwrap_or_default();
            names.sort();
            names
        };
        let by_sequence = indexes
            .iter()
            .find(|i| i.name == BY_SEQUENCE_INDEX)
            .unwrap();
        assert_eq!(names(by_sequence), ["cur", "gb", "lv", "pk", "rev"]);
        let by_bucket = indexes.iter().find(|i| i.name == BY_BUCKET_INDEX).unwrap();
        assert_eq!(names(by_bucket), ["hb", "pk", "rev"]);
        // An archived revision has neither index's keys.
        let archived: Item = [
            (PK.to_string(), AttributeValue::S("b/k".into())),
            (REVISION.to_string(), AttributeValue::N("8".into())),
            (VALUE.to_string(), blob(100)),
        ]
        .into();
        assert!(indexes.iter().all(|i| index_entry(i, &archived).is_none()));
    }
}
