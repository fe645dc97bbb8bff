//! Each function's parameters as a typed struct, declared once. A `request!` line names a
//! parameter, its type and the `Params` reader that checks it and words its 400; the accepted
//! parameters listed in the 400 for an unknown one are the same lines.

use crate::api::function::Function;
use crate::api::params::Params;
use crate::model::config::BucketConfig;
use crate::model::error::KvError;
use crate::model::subject::Filter;
use crate::model::validate;
use serde_json::Value;

/// A function's parameters, read from its event.
pub trait Request: Sized {
    /// The accepted parameter names, in the order they are checked.
    const FIELDS: &'static [&'static str];
    fn read(params: &Params) -> Result<Self, KvError>;
}

/// `request! { pub struct Name { field: Type = reader(args), .. } }` declares the struct and
/// its `Request` impl; `request! { impl Name { .. } }` reads into a struct declared elsewhere
/// (the struct literal makes the compiler check that the lines name every field), and
/// `then check` runs a rule over several fields once they are read. `field as "Name"` gives the
/// parameter's name where it is not a Rust name (`Records`, `detail-type`).
macro_rules! request {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* $field:ident $(as $wire:literal)?: $ty:ty = $reader:ident $(($($arg:expr),*))?),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty),*
        }
        request! { impl $name { $($field $(as $wire)? = $reader $(($($arg),*))?),* } }
    };
    (
        impl $name:ident $(then $check:path)? {
            $($field:ident $(as $wire:literal)? = $reader:ident $(($($arg:expr),*))?),* $(,)?
        }
    ) => {
        impl $crate::api::requests::Request for $name {
            const FIELDS: &'static [&'static str] = &[$(request!(@name $field $($wire)?)),*];
            fn read(params: &$crate::api::params::Params) -> Result<Self, $crate::model::error::KvError> {
                let request = $name {
                    $($field: params.$reader(request!(@name $field $($wire)?) $($(, $arg)*)?)?),*
                };
                $($check(&request)?;)?
                Ok(request)
            }
        }
    };
    (@name $field:ident $wire:literal) => { $wire };
    (@name $field:ident) => { stringify!($field) };
}
pub(crate) use request;

request! {
    /// kv-key-put.
    pub struct KeyPut {
        bucket: String = bucket,
        key: String = key,
        /// The text to store: a string as sent, an object or array as its JSON text.
        value: String = value,
        /// Compare-and-set: 0 means "only if the key has no live value".
        revision: Option<u64> = opt_revision(0),
        /// Nanoseconds.
        ttl: Option<i64> = opt_int(0, i64::MAX),
        idempotency_key: Option<String> = opt_idempotency_key,
    }
}

request! {
    /// kv-key-get.
    pub struct KeyGet {
        bucket: String = bucket,
        key: String = key,
        json: bool = flag,
        revision: Option<u64> = opt_revision(1),
    }
}

request! {
    /// kv-key-delete.
    pub struct KeyDelete {
        bucket: String = bucket,
        key: String = key,
        /// Drop the key's history too.
        purge: bool = flag,
        revision: Option<u64> = opt_revision(0),
        idempotency_key: Option<String> = opt_idempotency_key,
    }
}

request! {
    /// kv-key-increment.
    pub struct KeyIncrement {
        bucket: String = bucket,
        key: String = key,
        by: i64 = int_or(-i64::MAX, i64::MAX, 1),
        /// Nanoseconds: the window of a counter that starts with this call.
        ttl: Option<i64> = opt_int(1, i64::MAX),
        idempotency_key: Option<String> = opt_idempotency_key,
    }
}

request! {
    /// kv-key-watch.
    pub struct KeyWatch {
        bucket: String = bucket,
        key: Watched = watched,
        /// Default: the key's latest revision (for a filter, the bucket's last).
        after_revision: Option<u64> = opt_revision(0),
        task_token: String = task_token,
    }
}

/// What kv-key-watch waits on: one key, or every key a subject filter matches.
#[derive(Debug, Clone)]
pub struct Watched {
    pub pattern: String,
    /// None for a single key.
    pub filter: Option<Filter>,
}

impl Watched {
    /// A waiter's stored pattern, read back: a filter that no longer parses matches nothing.
    pub fn stored(pattern: &str, is_filter: bool) -> Watched {
        Watched {
            pattern: pattern.to_string(),
            filter: is_filter.then(|| Filter::check(pattern).ok()).flatten(),
        }
    }

    pub fn matches(&self, key: &str) -> bool {
        match &self.filter {
            Some(filter) => filter.matches(key),
            None => self.pattern == key,
        }
    }
}

pub use crate::model::limits::{MAX_IDEMPOTENCY_KEY_CHARS, MAX_TASK_TOKEN_CHARS};

request! {
    /// kv-key-history.
    pub struct KeyHistory {
        bucket: String = bucket,
        key: String = key,
        json: bool = flag,
        /// Revisions greater than this (the previous page's `last_sequence`).
        last_sequence: u64 = revision_or_zero,
    }
}

request! {
    /// kv-key-list.
    pub struct KeyList {
        bucket: String = bucket,
        /// Keys whose latest revision is greater than this.
        last_sequence: u64 = revision_or_zero,
        limit: i64 = int_or(1, 1000, 100),
        filter: Option<Filter> = opt_filter,
    }
}

request! {
    /// kv-bucket-list: every bucket, or a page of them.
    pub struct BucketList {
        limit: Option<i64> = opt_int(1, 1000),
        start_after: Option<String> = opt_page_cursor,
    }
}

request! {
    /// kv-bucket-info and kv-bucket-delete.
    pub struct BucketName {
        bucket: String = bucket,
    }
}

request! {
    /// A DynamoDB stream's batch, for the functions a stream feeds.
    pub struct StreamBatch {
        records as "Records": Vec<Value> = stream_records,
    }
}

request! {
    /// EventBridge's scheduled event: accepted, and nothing in it is needed.
    pub struct ScheduledEvent {
        version: Option<Value> = unread,
        id: Option<Value> = unread,
        detail_type as "detail-type": Option<Value> = unread,
        source: Option<Value> = unread,
        account: Option<Value> = unread,
        time: Option<Value> = unread,
        region: Option<Value> = unread,
        resources: Option<Value> = unread,
        detail: Option<Value> = unread,
    }
}

impl Params {
    /// A key, or a subject filter when a token is `*` or `>`.
    fn watched(&self, name: &str) -> Result<Watched, KvError> {
        let pattern = self.required_str(name)?;
        let wildcard = pattern.split('.').any(|token| token == "*" || token == ">");
        if !wildcard {
            validate::key(&pattern)?;
            return Ok(Watched {
                pattern,
                filter: None,
            });
        }
        let filter = Filter::check(&pattern)
            .map_err(|why| KvError::param(format!("Parameter '{name}' {why}")))?;
        Ok(Watched {
            pattern,
            filter: Some(filter),
        })
    }

    fn task_token(&self, name: &str) -> Result<String, KvError> {
        let token = self.required_str(name)?;
        let length = token.chars().count();
        if !(1..=MAX_TASK_TOKEN_CHARS).contains(&length) {
            return Err(KvError::param(format!(
                "Parameter '{name}' must be Step Functions' task token ($$.Task.Token), 1 to {MAX_TASK_TOKEN_CHARS} characters; got {length}"
            )));
        }
        Ok(token)
    }

    fn opt_idempotency_key(&self, name: &str) -> Result<Option<String>, KvError> {
        let key = self.opt_str(name)?;
        if let Some(key) = &key {
            let length = key.chars().count();
            if !(1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&length) {
                return Err(KvError::param(format!(
                    "Parameter '{name}' must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {length} (in a flow, build it from $$.Execution.Name, not the longer $$.Execution.Id)"
                )));
            }
        }
        Ok(key)
    }

    fn opt_filter(&self, name: &str) -> Result<Option<Filter>, KvError> {
        self.opt_str(name)?
            .map(|pattern| Filter::parse(&pattern))
            .transpose()
    }

    /// A bucket name handed out by a previous page.
    fn opt_page_cursor(&self, name: &str) -> Result<Option<String>, KvError> {
        let cursor = self.opt_str(name)?;
        if let Some(bucket) = &cursor {
            validate::bucket_name(bucket).map_err(|_| {
                KvError::param(format!(
                    "Parameter '{name}' must be a bucket name from a previous page"
                ))
            })?;
        }
        Ok(cursor)
    }
}

impl Function {
    /// The parameters each function accepts; anything else is rejected by name.
    pub fn accepted_params(self) -> &'static [&'static str] {
        match self {
            Function::BucketCreate => BucketConfig::FIELDS,
            Function::KeyPut => KeyPut::FIELDS,
            Function::KeyGet => KeyGet::FIELDS,
            Function::BucketList => BucketList::FIELDS,
            Function::KeyList => KeyList::FIELDS,
            Function::KeyDelete => KeyDelete::FIELDS,
            Function::KeyHistory => KeyHistory::FIELDS,
            Function::BucketInfo | Function::BucketDelete => BucketName::FIELDS,
            Function::KeyIncrement => KeyIncrement::FIELDS,
            Function::KeyWatch => KeyWatch::FIELDS,
            Function::BucketPurge | Function::ItemsStream | Function::ItemsReplicate => {
                StreamBatch::FIELDS
            }
            Function::ExpirySweep => ScheduledEvent::FIELDS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(function: Function, event: Value) -> Params {
        Params::from_event(function, event).expect("accepted")
    }

    #[test]
    fn a_request_reads_its_declared_fields() {
        assert_eq!(
            KeyPut::FIELDS,
            [
                "bucket",
                "key",
                "value",
                "revision",
                "ttl",
                "idempotency_key"
            ]
        );
        assert_eq!(StreamBatch::FIELDS, ["Records"]);
        let put = KeyPut::read(&params(
            Function::KeyPut,
            json!({"bucket": "b", "key": "k", "value": {"a": 1}, "revision": 3, "ttl": null}),
        ))
        .expect("valid");
        assert_eq!(
            (put.value.as_str(), put.revision, put.ttl),
            (r#"{"a":1}"#, Some(3), None)
        );
    }

    #[test]
    fn the_unknown_parameter_message_lists_the_declared_fields() {
        let error = Params::from_event(Function::KeyGet, json!({"bucket": "b", "ttl_seconds": 1}))
            .expect_err("unknown");
        assert_eq!(
            error.to_string(),
            "Unknown parameter 'ttl_seconds' for kv-key-get; accepted parameters: bucket, key, json, revision"
        );
    }

    #[test]
    fn a_nested_object_names_its_fields_by_path() {
        let error = BucketConfig::read(&params(
            Function::BucketCreate,
            json!({"bucket": "b", "mirror": {"name": "o", "opt_start_seq": "x"}}),
        ))
        .expect_err("a string is not a sequence");
        assert!(
            error.to_string().contains("'mirror.opt_start_seq'"),
            "{error}"
        );
    }
}
