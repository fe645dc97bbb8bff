//! Every size and count the contract bounds, in one place (README "Limits" lists them). Each
//! is checked before anything is written, and passing it is a 4xx naming the parameter and
//! the limit.

/// Bucket names: 1 to this many characters.
pub const MAX_BUCKET_NAME_LEN: usize = 255;
/// Keys: at most this many bytes (NATS's subject limit, and what DynamoDB's keys hold).
pub const MAX_KEY_BYTES: usize = 1024;
/// Revisions kept per key.
pub const MAX_HISTORY: i64 = 64;
/// `num_replicas`, as NATS allows.
pub const MAX_REPLICAS: i64 = 5;
/// A bucket's configuration as stored (its JSON: description, metadata, mirror, sources,
/// republish, placement and the numbers). Every write reads it with its revision, so it is
/// kept to a few KB; past it kv-bucket-create answers 413 `config_too_large`.
pub const MAX_CONFIG_BYTES: usize = 8 * 1024;
/// How deep JSON may nest in an event (serde_json's own recursion limit, checked on the
/// event as a whole): deeper is a 400 `invalid_value`.
pub const MAX_JSON_DEPTH: usize = 128;
/// A value's uncompressed size in a `compression` bucket, where DynamoDB's item limit bounds
/// only the compressed bytes: without it a value of a few KB could expand to gigabytes in
/// every reader.
pub const MAX_UNCOMPRESSED_VALUE_BYTES: usize = 1024 * 1024;
/// What one answer of kv-key-list, kv-key-history or kv-bucket-list holds: Step Functions'
/// limit on a state's data (256 KB), less room for the envelope around the results.
pub const MAX_PAGE_BYTES: usize = 256 * 1024 - 4 * 1024;
/// Step Functions' task tokens (its API model: 1 to 2048 characters).
pub const MAX_TASK_TOKEN_CHARS: usize = 2048;
/// Flows waiting (kv-key-watch) in one bucket. kv-items-replicate reads them all whenever the
/// bucket changes and resumes those a change passes within its batch's 60 s: 10,000 waiters on
/// one key were resumed in 16 s here (2 cores, `make test`'s watch suite).
pub const MAX_WAITERS_PER_BUCKET: u64 = 10_000;
/// `idempotency_key`: 1 to this many characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// The room left in one answer's page: entries are added while their encoded size fits.
#[derive(Debug, Clone, Copy)]
pub struct PageBudget {
    left: usize,
}

impl Default for PageBudget {
    fn default() -> Self {
        PageBudget {
            left: MAX_PAGE_BYTES,
        }
    }
}

impl PageBudget {
    /// Takes room for an entry of `bytes` (as encoded, with its separator); false, taking
    /// nothing, when it does not fit.
    pub fn take(&mut self, bytes: usize) -> bool {
        match self.left.checked_sub(bytes + 1) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }

    /// Whether an entry of `bytes` could fit in an empty page: one that cannot is sent
    /// without its value.
    pub fn fits_alone(bytes: usize) -> bool {
        bytes < MAX_PAGE_BYTES
    }
}

/// The encoded size of an entry of an answer.
pub fn encoded_len<T: serde::Serialize>(entry: &T) -> usize {
    serde_json::to_vec(entry).map_or(usize::MAX, |bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_takes_entries_while_they_fit() {
        let mut budget = PageBudget::default();
        assert!(budget.take(MAX_PAGE_BYTES / 2));
        assert!(!budget.take(MAX_PAGE_BYTES / 2));
        assert!(budget.take(100));
        assert!(PageBudget::fits_alone(MAX_PAGE_BYTES - 1));
        assert!(!PageBudget::fits_alone(MAX_PAGE_BYTES));
    }
}
