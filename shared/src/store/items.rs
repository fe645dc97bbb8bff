//! The item layout of both tables, and conversions between items and the KV model.
//!
//! Buckets table, one item per bucket: `bucket` (key), `cfg` (the configuration as JSON),
//! `created` (ms), `seq` (the bucket's last handed-out revision).
//!
//! Items table, key `pk` + `rev`:
//! - the key's head, its record: `pk` = `BUCKET/KEY`, `rev` = 0. The latest revision itself
//!   (`cur`, and its `v` stored bytes, `z` compressed, `c` created ms, `x` exact expiry ns, `ttl`
//!   epoch seconds for DynamoDB's sweep, `op` absent for a value, `mem`), `h` the retained
//!   revisions as `[rev, size, expiry ns or 0, op]`, `r1`..`r3` the revisions before `cur`, and
//!   `inc` (the bucket's incarnation). While its latest is a value: `gb` = `BUCKET` (the
//!   `by-sequence` index kv-key-list pages through, with `lv`, the value when small), and, if
//!   it expires, `xp`/`xs` (the `by-expiry` index the sweeper reads). `hb` = `BUCKET` puts every
//!   head in the keys-only `by-bucket` index kv-bucket-delete purges through; `mb` marks a head
//!   of a bucket with `max_bytes`;
//! - an older revision the head still lists: `pk` = `BUCKET/KEY`, `rev` = its revision, with
//!   the same value attributes, never changed once written;
//! - the bucket's usage: `pk` = `BUCKET` (bucket names have no `/`), `rev` = 0, `bytes`, `keys`,
//!   `inc` (the bucket's `created`) and `counted` (the stream consumer's last batch tokens).

use crate::store::errors::StoreError;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

pub type Item = HashMap<String, AttributeValue>;

pub const BUCKET: &str = "bucket";
pub const CONFIG: &str = "cfg";
pub const CREATED: &str = "created";
pub const SEQ: &str = "seq";
/// Set (epoch ms) when kv-bucket-delete starts; the bucket is gone for every operation from
/// then on, and the item itself is deleted once every key item is purged.
pub const DELETING: &str = "deleting";
/// Bumped by the purger after each slice of work, so the buckets table's stream invokes it again.
pub const PURGE_ROUND: &str = "purge_round";

pub const PK: &str = "pk";
pub const REV: &str = "rev";
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
/// On a usage item: the tokens of the last stream batches counted into it, oldest first, so a
/// batch delivered again is not counted twice.
pub const COUNTED_BATCHES: &str = "counted";
/// How many batch tokens a usage item keeps (about 34 bytes each: the item stays within 1 KB).
pub const COUNTED_TOKENS: usize = 16;
/// The bucket's `created` on its usage item: writes are conditional on it, so a write that
/// started before a delete can never land in a re-created bucket of the same name.
pub const INCARNATION: &str = "inc";

/// On a head whose latest value expires: which of the `by-expiry` index's partitions lists it
/// (`EXPIRY_SHARDS` of them, so no one partition takes every expiring write of the table)...
pub const EXPIRY_SHARD: &str = "xp";
/// ... and when, in whole epoch seconds rounded down, so a sweep never misses one.
pub const EXPIRY_SECONDS: &str = "xs";
pub const EXPIRY_SHARDS: u64 = 16;

/// On a head: the revisions it held before its latest, newest first, so a writer whose
/// answer was lost can recognise its own revision a few writes later.
pub const RECENT_REVISIONS: [&str; 3] = ["r1", "r2", "r3"];
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

pub fn usage_pk(bucket: &str) -> String {
    bucket.to_string()
}

pub fn key_from_pk<'a>(bucket: &str, pk: &'a str) -> Option<&'a str> {
    pk.strip_prefix(bucket)?.strip_prefix('/')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Del,
    Purge,
    /// What the expiry sweeper leaves of a latest value past its expiry: no value, no size.
    Expired,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "PUT",
            Op::Del => "DEL",
            Op::Purge => "PURGE",
            Op::Expired => "EXPIRED",
        }
    }

    fn parse(text: &str) -> Op {
        match text {
            "DEL" => Op::Del,
            "PURGE" => Op::Purge,
            "EXPIRED" => Op::Expired,
            _ => Op::Put,
        }
    }
}

/// One retained revision as the head remembers it, enough to trim and account without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadEntry {
    pub rev: u64,
    pub size: u64,
    pub expiry_ns: Option<u64>,
    pub op: Op,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// None when the key has never been written.
    pub cur: Option<u64>,
    pub entries: Vec<HeadEntry>,
    /// The latest revision itself (value or marker), as the head holds it.
    pub latest: Option<Stored>,
    /// The revisions the head held before its latest (`RECENT_REVISIONS`), newest first.
    pub recent: Vec<u64>,
    /// Written in a bucket with `max_bytes` (`EXACT_COUNTS`), of this incarnation of the
    /// bucket: its changes move the usage item in the same request.
    pub exact_counts: Option<u64>,
}

/// A revision as stored (a head's latest, or an archived older one): the value still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub rev: u64,
    pub bytes: Vec<u8>,
    pub compressed: bool,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
    pub op: Op,
    pub memory: bool,
}

impl Stored {
    pub fn decode(&self, key: &str) -> Result<Revision, StoreError> {
        Ok(Revision {
            key: key.to_string(),
            rev: self.rev,
            text: crate::model::codec::decode(&self.bytes, self.compressed)
                .map_err(|error| StoreError::Internal(error.to_string()))?,
            created_ms: self.created_ms,
            expiry_ns: self.expiry_ns,
            op: self.op,
            memory: self.memory,
        })
    }

    /// The attributes a head or an archived revision holds for it (keys not included).
    pub fn attributes(&self) -> Item {
        let mut item = Item::new();
        if self.op == Op::Put {
            item.insert(VALUE.into(), AttributeValue::B(self.bytes.clone().into()));
        } else {
            item.insert(OP.into(), s(self.op.as_str()));
        }
        item.insert(CREATED_MS.into(), n(self.created_ms));
        if self.compressed {
            item.insert(COMPRESSED.into(), AttributeValue::Bool(true));
        }
        if let Some(expiry) = self.expiry_ns {
            item.insert(EXPIRY_NS.into(), n(expiry));
            item.insert(
                TTL.into(),
                n(crate::model::time::ttl_attribute_secs(expiry)),
            );
        }
        if self.memory {
            item.insert(MEMORY.into(), AttributeValue::Bool(true));
        }
        item
    }
}

pub fn decode_stored(rev: u64, item: &Item) -> Result<Stored, StoreError> {
    let bytes = match item.get(VALUE) {
        Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
        _ => Vec::new(),
    };
    Ok(Stored {
        rev,
        bytes,
        compressed: get_bool(item, COMPRESSED),
        created_ms: get_u64(item, CREATED_MS).unwrap_or(0),
        expiry_ns: get_u64(item, EXPIRY_NS),
        op: get_str(item, OP).map(Op::parse).unwrap_or(Op::Put),
        memory: get_bool(item, MEMORY),
    })
}

impl Head {
    pub fn latest_entry(&self) -> Option<&HeadEntry> {
        self.entries.last()
    }

    pub fn current_revision(&self) -> u64 {
        self.cur.unwrap_or(0)
    }

    /// Whether `rev` was committed to this head: it is the latest, still in the history, or
    /// one of the recent revisions the head remembers.
    pub fn shows(&self, rev: u64) -> bool {
        self.cur == Some(rev)
            || self.recent.contains(&rev)
            || self.entries.iter().any(|entry| entry.rev == rev)
    }

    /// Whether this head proves that `rev` was never committed to it. A head's commits carry
    /// increasing revisions (every head write's condition says so), and the head remembers its
    /// latest and the `RECENT_REVISIONS` before it; so a revision it does not show was never
    /// committed if the head remembers every commit it had (fewer than that many before the
    /// latest), or remembers one older than `rev`.
    pub fn rules_out(&self, rev: u64) -> bool {
        if self.shows(rev) {
            return false;
        }
        let remembers_all = self.recent.len() < RECENT_REVISIONS.len();
        let oldest = self.recent.iter().chain(self.cur.iter()).min();
        remembers_all || oldest.is_some_and(|oldest| *oldest < rev)
    }
}

/// A revision as read back, value decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub key: String,
    pub rev: u64,
    pub text: String,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
    pub op: Op,
    pub memory: bool,
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
    let cur = get_u64(item, HEAD_REVISION).ok_or_else(|| corrupt("head without 'cur'"))?;
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
                .map(|text| Op::parse(text))
                .unwrap_or(Op::Put);
            Ok(HeadEntry {
                rev: number(0)?,
                size: number(1)?,
                expiry_ns: Some(number(2)?).filter(|expiry| *expiry > 0),
                op,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Head {
        cur: Some(cur),
        entries,
        latest: Some(decode_stored(cur, item)?),
        recent: RECENT_REVISIONS
            .iter()
            .filter_map(|name| get_u64(item, name))
            .filter(|rev| *rev > 0)
            .collect(),
        exact_counts: get_bool(item, EXACT_COUNTS)
            .then(|| get_u64(item, INCARNATION))
            .flatten(),
    })
}

pub fn encode_head_entries(entries: &[HeadEntry]) -> AttributeValue {
    AttributeValue::L(
        entries
            .iter()
            .map(|entry| {
                AttributeValue::L(vec![
                    n(entry.rev),
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
    let rev = get_u64(item, REV).ok_or_else(|| corrupt("item without 'rev'"))?;
    decode_stored(rev, item)?.decode(key)
}

/// A generous upper bound of a head's size without its value, in DynamoDB's accounting
/// (attribute names plus values; numbers at most 21 bytes; each retained revision's entry in
/// `h` at most 96 bytes): the value must fit in what is left of `MAX_ITEM_BYTES`.
pub fn head_overhead(bucket: &str, key: &str, history: usize) -> usize {
    let names: usize = [
        PK,
        REV,
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

    fn remembering(cur: u64, recent: &[u64]) -> Head {
        Head {
            cur: Some(cur),
            recent: recent.to_vec(),
            ..Head::default()
        }
    }

    #[test]
    fn a_head_shows_or_rules_out_a_revision() {
        let young = remembering(9, &[4]);
        assert!(young.shows(4) && young.shows(9));
        // It remembers every commit it had: 5 never landed.
        assert!(young.rules_out(5) && young.rules_out(12));
        let busy = remembering(20, &[18, 15, 11]);
        assert!(!busy.rules_out(15));
        // 12 would sit between 11 and 15, which it remembers.
        assert!(busy.rules_out(12));
        // 10 may have landed before 11 and been forgotten.
        assert!(!busy.rules_out(10));
        assert!(Head::default().rules_out(1));
    }

    #[test]
    fn head_round_trips() {
        let entries = vec![
            HeadEntry {
                rev: 3,
                size: 10,
                expiry_ns: None,
                op: Op::Put,
            },
            HeadEntry {
                rev: 9,
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
        assert_eq!(head.cur, Some(9));
        assert_eq!(head.entries, entries);
        assert_eq!(decode_head(None).unwrap(), Head::default());
    }

    #[test]
    fn keys_come_back_from_partition_keys() {
        assert_eq!(key_from_pk("b", "b/a/b.c"), Some("a/b.c"));
        assert_eq!(key_from_pk("b", "bb/x"), None);
    }
}
