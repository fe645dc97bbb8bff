//! A key's revisions as the model knows them: the operation each stands for, the head that
//! is the key's record (its latest revision, the retained history and the revisions it
//! remembers), and a revision as stored and as read back. `store::items` maps them to items.

use crate::model::error::KvError;
use std::collections::BTreeMap;

/// How many revisions before its latest a head remembers, so a writer whose answer was lost
/// can recognise its own revision a few writes later.
pub const REMEMBERED_REVISIONS: usize = 3;

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

    /// The operation a stored name stands for; values carry none.
    pub fn from_name(text: &str) -> Op {
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
    pub revision: u64,
    pub size: u64,
    pub expiry_ns: Option<u64>,
    pub op: Op,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// None when the key has never been written.
    pub latest_revision: Option<u64>,
    pub entries: Vec<HeadEntry>,
    /// The latest revision itself (value or marker), as the head holds it.
    pub latest: Option<Stored>,
    /// The revisions the head held before its latest (`REMEMBERED_REVISIONS` of them), newest first.
    pub recent: Vec<u64>,
    /// Written in a bucket with `max_bytes`, of this incarnation of the bucket: its changes
    /// move the usage item in the same request.
    pub exact_counts: Option<u64>,
    /// The incarnation of the bucket it was written in (its `created`): a head of an earlier
    /// bucket of the same name, not purged yet, is no key of the bucket there is now.
    pub incarnation: Option<u64>,
    /// Per source bucket, the last of its revisions copied to this key: a copy delivered again
    /// is recognised and not written twice.
    pub sources: BTreeMap<String, u64>,
}

/// A revision as stored (a head's latest, or an archived older one): the value still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub revision: u64,
    pub bytes: Vec<u8>,
    pub compressed: bool,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
    pub op: Op,
    pub memory: bool,
}

impl Stored {
    pub fn decode(&self, key: &str) -> Result<Revision, KvError> {
        Ok(Revision {
            key: key.to_string(),
            revision: self.revision,
            text: crate::model::codec::decode(&self.bytes, self.compressed)?,
            created_ms: self.created_ms,
            expiry_ns: self.expiry_ns,
            op: self.op,
            memory: self.memory,
        })
    }
}

impl Head {
    /// The latest revision when it is a value that has not expired by `now_ns`.
    pub fn live_value(&self, now_ns: u64) -> Option<&Stored> {
        self.latest.as_ref().filter(|latest| {
            latest.op == Op::Put && !crate::model::time::is_expired(latest.expiry_ns, now_ns)
        })
    }

    pub fn latest_entry(&self) -> Option<&HeadEntry> {
        self.entries.last()
    }

    pub fn current_revision(&self) -> u64 {
        self.latest_revision.unwrap_or(0)
    }

    /// Whether `rev` was committed to this head: it is the latest, still in the history, or
    /// one of the recent revisions the head remembers.
    pub fn shows(&self, revision: u64) -> bool {
        self.latest_revision == Some(revision)
            || self.recent.contains(&revision)
            || self.entries.iter().any(|entry| entry.revision == revision)
    }

    /// Whether this head proves that `rev` was never committed to it. A head's commits carry
    /// increasing revisions (every head write's condition says so), and the head remembers its
    /// latest and the `REMEMBERED_REVISIONS` before it; so a revision it does not show was never
    /// committed if the head remembers every commit it had (fewer than that many before the
    /// latest), or remembers one older than `rev`.
    pub fn rules_out(&self, revision: u64) -> bool {
        if self.shows(revision) {
            return false;
        }
        let remembers_all = self.recent.len() < REMEMBERED_REVISIONS;
        let oldest = self.recent.iter().chain(self.latest_revision.iter()).min();
        remembers_all || oldest.is_some_and(|oldest| *oldest < revision)
    }
}

/// A revision as read back, value decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub key: String,
    pub revision: u64,
    pub text: String,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
    pub op: Op,
    pub memory: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembering(latest_revision: u64, recent: &[u64]) -> Head {
        Head {
            latest_revision: Some(latest_revision),
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
}
