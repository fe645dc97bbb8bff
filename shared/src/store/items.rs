//! The item layout of both tables, and conversions between items and the KV model
//! (`model::revision`). Attribute names are short because every item carries them; in code
//! they are the constants below (`rev` is `REVISION`, `cur` is `HEAD_REVISION`, `seq` is
//! `LAST_REVISION`).
//!
//! Buckets table, one item per bucket: `bucket` (key), `cfg` (the configuration as JSON),
//! `created` (ms), `seq` (the bucket's last handed-out revision).
//!
//! Items table, key `pk` + `rev`:
//! - the key's head, its record: `pk` = `BUCKET/KEY`, `rev` = 0. The latest revision itself
//!   (`cur`, and its `v` stored bytes, `z` compressed, `c` created ms, `x` exact expiry ns, `op`
//!   absent for a value, `mem`; never `ttl`, see `head_attributes`), `h` the retained
//!   revisions as `[rev, size, expiry ns or 0, op]`, `r1`..`r3` the revisions before `cur`, and
//!   `inc` (the bucket's incarnation). While its latest is a value: `gb` = `BUCKET` (the
//!   `by-sequence` index kv-key-list pages through, with `lv`, the value when small), and, if
//!   it expires, `xp`/`xs` (the `by-expiry` index the sweeper reads). `hb` = `BUCKET` puts every
//!   head in the keys-only `by-bucket` index kv-bucket-delete purges through; `mb` marks a head
//!   of a bucket with `max_bytes`;
//! - an older revision the head still lists: `pk` = `BUCKET/KEY`, `rev` = its revision, with
//!   the same value attributes, never changed once written;
//! - the bucket's usage: `pk` = `BUCKET` (bucket names have no `/`), `rev` = 0, `bytes`, `keys`,
//!   `inc` (the bucket's `created`), `counted` (the stream consumer's last batch tokens), and
//!   for replication `feeds` (the buckets copying from it) and `bf` (a backfill's cursors).

use crate::model::revision::{Head, HeadEntry, Op, Revision, Stored, REMEMBERED_REVISIONS};
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

pub type Item = HashMap<String, AttributeValue>;

pub const BUCKET: &str = "bucket";
pub const CONFIG: &str = "cfg";
pub const CREATED: &str = "created";
pub const LAST_REVISION: &str = "seq";
/// Set (epoch ms) when kv-bucket-delete starts; the bucket is gone for every operation from
/// then on, and the item itself is deleted once every key item is purged.
pub const DELETING: &str = "deleting";
/// Bumped by the purger after each slice of work, so the buckets table's stream invokes it again.
pub const PURGE_ROUND: &str = "purge_round";

pub const PK: &str = "pk";
pub const REVISION: &str = "rev";
pub const VALUE: &str = "v";
pub const COMPRESSED: &str = "z";
pub const CREATED_MS: &str = "c";
pub const EXPIRY_NS: &str = "x";
pub const TTL: &str = "ttl";
pub const OP: &str = "op";
pub const MEMORY: &str = "mem";
pub const LATEST_IN_BUCKET: &str = "gb";
pub const HEAD_REVISION: &str = "cur";
pub const HEAD_ENTRIES: &str = "h";
pub const HEAD_BUCKET: &str = "hb";
/// On a head: a copy of the latest value when it is small enough to ride in the key-list
/// index entry (which projects it), so listing small values costs no second read.
pub const LIST_VALUE: &str = "lv";
/// On a head: its bucket has `max_bytes`, whose counts the write keeps exact itself, so the
/// stream consumer leaves them alone.
pub const EXACT_COUNTS: &str = "mb";
/// On the bucket item: when (epoch ms) the last revision was handed out. A write never sends
/// its commit later than `COMMIT_WINDOW_MS` after its revision, so a purge that waits that long
/// past this moment has seen every write the bucket will ever get.
pub const LAST_ALLOCATED: &str = "alloc";
pub const USED_BYTES: &str = "bytes";
pub const LIVE_KEYS: &str = "keys";
/// On usage items written before counting kept its tokens in items of their own: the tokens
/// of the last batches counted. The next count removes it.
pub const COUNTED_BATCHES: &str = "counted";
/// The `rev` of a counted batch's token item (`counted_pk`): not 0, so the stream's consumers
/// pass over its records as they do over archived revisions.
pub const COUNTED_REVISION: u64 = 1;
/// How long a counted batch's token item is kept (DynamoDB's TTL removes it): past the 24 hours
/// a stream keeps a record, no delivery of the batch can come again.
pub const COUNTED_FOR_S: u64 = 25 * 3600;
/// On a bucket's usage item: the buckets that mirror or source it (a string set), which the
/// stream's replication reads to know where a revision goes.
pub const FEEDS: &str = "feeds";
/// On a mirror's or source target's usage item while its backfill runs: per origin bucket, the
/// last origin key copied (empty: none yet). Each change of it reaches the items table's
/// stream, which carries the backfill on a slice at a time.
pub const BACKFILL: &str = "bf";
/// On a head: `so:` and a source bucket's name, the last revision of that bucket copied here.
pub const SOURCE_MARK_PREFIX: &str = "so:";
/// The bucket's `created` on its usage item: writes are conditional on it, so a write that
/// started before a delete can never land in a re-created bucket of the same name.
pub const INCARNATION: &str = "inc";
/// On a usage item: how many waiters (kv-key-watch) the bucket holds, which bounds them.
pub const WAITING: &str = "waiting";

/// On a head whose latest value expires: which of the `by-expiry` index's partitions lists it
/// (`EXPIRY_SHARDS` of them, so no one partition takes every expiring write of the table)...
pub const EXPIRY_SHARD: &str = "xp";
/// ... and when, in whole epoch seconds rounded down, so a sweep never misses one.
pub const EXPIRY_SECONDS: &str = "xs";
pub const EXPIRY_SHARDS: u64 = 16;

/// On a head: the revisions it held before its latest, newest first, so a writer whose
/// answer was lost can recognise its own revision a few writes later.
pub const RECENT_REVISIONS: [&str; REMEMBERED_REVISIONS] = ["r1", "r2", "r3"];
/// What a head holds only sometimes: a head write removes those the new head lacks.
pub const OPTIONAL_HEAD_ATTRIBUTES: [&str; 11] = [
    VALUE,
    OP,
    COMPRESSED,
    EXPIRY_NS,
    TTL,
    MEMORY,
    LATEST_IN_BUCKET,
    LIST_VALUE,
    EXACT_COUNTS,
    EXPIRY_SHARD,
    EXPIRY_SECONDS,
];

pub const BY_SEQUENCE_INDEX: &str = "by-sequence";
pub const BY_EXPIRY_INDEX: &str = "by-expiry";
pub const BY_BUCKET_INDEX: &str = "by-bucket";

/// DynamoDB's item size limit, which every revision item must fit in.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Values up to this many stored bytes are copied into the key-list index entry.
pub const LIST_VALUE_MAX_BYTES: usize = 512;
/// How long after its revision was handed out a write may still send a commit.
pub const COMMIT_WINDOW_MS: u64 = 10_000;
/// How long after a bucket's last handed-out revision every commit of it has landed: the
/// commit window, plus the client's 10 s for one request with its retries, plus a second of
/// clock difference between containers.
pub const WRITES_QUIET_MS: u64 = COMMIT_WINDOW_MS + 10_000 + 1_000;

pub fn key_pk(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

/// The `by-expiry` partition of a key's head: a stable hash of its partition key (FNV-1a).
pub fn expiry_shard(pk: &str) -> String {
    let hash = pk.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("x{}", hash % EXPIRY_SHARDS)
}

/// The token item of one counted stream batch. `~` is in no bucket name, so it is no
/// bucket's item, no key's, and no purge's.
pub fn counted_pk(token: &str) -> String {
    format!("~counted/{token}")
}

pub fn usage_pk(bucket: &str) -> String {
    bucket.to_string()
}

pub fn key_from_pk<'a>(bucket: &str, pk: &'a str) -> Option<&'a str> {
    pk.strip_prefix(bucket)?.strip_prefix('/')
}

/// The attributes a head or an archived revision holds for a stored revision (keys not
/// included).
pub fn stored_attributes(stored: &Stored) -> Item {
    let mut item = Item::new();
    if stored.op == Op::Put {
        item.insert(VALUE.into(), AttributeValue::B(stored.bytes.clone().into()));
    } else {
        item.insert(OP.into(), s(stored.op.as_str()));
    }
    item.insert(CREATED_MS.into(), n(stored.created_ms));
    if stored.compressed {
        item.insert(COMPRESSED.into(), AttributeValue::Bool(true));
    }
    if let Some(expiry) = stored.expiry_ns {
        item.insert(EXPIRY_NS.into(), n(expiry));
        item.insert(
            TTL.into(),
            n(crate::model::time::ttl_attribute_secs(expiry)),
        );
    }
    if stored.memory {
        item.insert(MEMORY.into(), AttributeValue::Bool(true));
    }
    item
}

/// A head's attributes for its latest revision: those of `stored_attributes` but DynamoDB's
/// `ttl`. DynamoDB's sweep deletes an item whole, and a head is more than its latest value: it
/// lists the older revisions still kept, carries the key's revision for `revision` checks and,
/// in a `max_bytes` bucket, bytes the usage counts. An expired head is emptied by the expiry
/// sweeper instead (`ops::expiry_sweep`); archived revisions keep their `ttl`, since each is
/// exactly one value.
pub fn head_attributes(stored: &Stored) -> Item {
    let mut item = stored_attributes(stored);
    item.remove(TTL);
    item
}

pub fn decode_stored(revision: u64, item: &Item) -> Result<Stored, StoreError> {
    let bytes = match item.get(VALUE) {
        Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
        _ => Vec::new(),
    };
    Ok(Stored {
        revision,
        bytes,
        compressed: get_bool(item, COMPRESSED),
        created_ms: get_u64(item, CREATED_MS).unwrap_or(0),
        expiry_ns: get_u64(item, EXPIRY_NS),
        op: get_str(item, OP).map(Op::from_name).unwrap_or(Op::Put),
        memory: get_bool(item, MEMORY),
    })
}

pub fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

pub fn n(number: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

pub fn get_u64(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

pub fn get_i64(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

pub fn get_str<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

fn get_bool(item: &Item, name: &str) -> bool {
    item.get(name)
        .and_then(|value| value.as_bool().ok())
        .copied()
        .unwrap_or(false)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("Stored item is malformed: {what}"))
}

pub fn decode_head(item: Option<&Item>) -> Result<Head, StoreError> {
    let Some(item) = item else {
        return Ok(Head::default());
    };
    let latest_revision =
        get_u64(item, HEAD_REVISION).ok_or_else(|| corrupt("head without 'cur'"))?;
    let list = match item.get(HEAD_ENTRIES) {
        Some(AttributeValue::L(list)) => list.as_slice(),
        _ => &[],
    };
    let entries = list
        .iter()
        .map(|entry| {
            let AttributeValue::L(fields) = entry else {
                return Err(corrupt("head entry is not a list"));
            };
            let number = |index: usize| -> Result<u64, StoreError> {
                fields
                    .get(index)
                    .and_then(|field| field.as_n().ok())
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| corrupt("head entry field"))
            };
            let op = fields
                .get(3)
                .and_then(|field| field.as_s().ok())
                .map(|text| Op::from_name(text))
                .unwrap_or(Op::Put);
            Ok(HeadEntry {
                revision: number(0)?,
                size: number(1)?,
                expiry_ns: Some(number(2)?).filter(|expiry| *expiry > 0),
                op,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Head {
        latest_revision: Some(latest_revision),
        entries,
        latest: Some(decode_stored(latest_revision, item)?),
        recent: RECENT_REVISIONS
            .iter()
            .filter_map(|name| get_u64(item, name))
            .filter(|revision| *revision > 0)
            .collect(),
        exact_counts: get_bool(item, EXACT_COUNTS)
            .then(|| get_u64(item, INCARNATION))
            .flatten(),
        incarnation: get_u64(item, INCARNATION),
        sources: item
            .keys()
            .filter_map(|name| {
                let origin = name.strip_prefix(SOURCE_MARK_PREFIX)?;
                Some((origin.to_string(), get_u64(item, name)?))
            })
            .collect(),
    })
}

pub fn encode_head_entries(entries: &[HeadEntry]) -> AttributeValue {
    AttributeValue::L(
        entries
            .iter()
            .map(|entry| {
                AttributeValue::L(vec![
                    n(entry.revision),
                    n(entry.size),
                    n(entry.expiry_ns.unwrap_or(0)),
                    s(entry.op.as_str()),
                ])
            })
            .collect(),
    )
}

/// An archived older revision, read back.
pub fn decode_revision(bucket: &str, item: &Item) -> Result<Revision, StoreError> {
    let pk = get_str(item, PK).ok_or_else(|| corrupt("item without 'pk'"))?;
    let key = key_from_pk(bucket, pk).ok_or_else(|| corrupt("item of another bucket"))?;
    let revision = get_u64(item, REVISION).ok_or_else(|| corrupt("item without 'rev'"))?;
    decode_stored(revision, item)?
        .decode(key)
        .map_err(|error| StoreError::Internal(error.to_string()))
}

/// A generous upper bound of a head's size without its value, in DynamoDB's accounting
/// (attribute names plus values; numbers at most 21 bytes; each retained revision's entry in
/// `h` at most 96 bytes): the value must fit in what is left of `MAX_ITEM_BYTES`.
pub fn head_overhead(bucket: &str, key: &str, history: usize) -> usize {
    let names: usize = [
        PK,
        REVISION,
        VALUE,
        COMPRESSED,
        CREATED_MS,
        EXPIRY_NS,
        TTL,
        OP,
        MEMORY,
        LATEST_IN_BUCKET,
        HEAD_REVISION,
        HEAD_ENTRIES,
        HEAD_BUCKET,
        INCARNATION,
        EXACT_COUNTS,
        LIST_VALUE,
    ]
    .iter()
    .map(|name| name.len())
    .sum();
    names + key_pk(bucket, key).len() + 2 * bucket.len() + 8 * 21 + history.max(1) * 96 + 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trips() {
        let entries = vec![
            HeadEntry {
                revision: 3,
                size: 10,
                expiry_ns: None,
                op: Op::Put,
            },
            HeadEntry {
                revision: 9,
                size: 0,
                expiry_ns: Some(123),
                op: Op::Del,
            },
        ];
        let item: Item = [
            (HEAD_REVISION.to_string(), n(9)),
            (HEAD_ENTRIES.to_string(), encode_head_entries(&entries)),
        ]
        .into();
        let head = decode_head(Some(&item)).unwrap();
        assert_eq!(head.latest_revision, Some(9));
        assert_eq!(head.entries, entries);
        assert_eq!(decode_head(None).unwrap(), Head::default());
    }

    #[test]
    fn keys_come_back_from_partition_keys() {
        assert_eq!(key_from_pk("b", "b/a/b.c"), Some("a/b.c"));
        assert_eq!(key_from_pk("b", "bb/x"), None);
    }
}
