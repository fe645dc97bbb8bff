//! The names of the KV functions, as Lambda, cargo-lambda and flows know them.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    BucketCreate,
    KeyPut,
    KeyGet,
    BucketList,
    KeyList,
    KeyDelete,
    KeyHistory,
    BucketInfo,
    BucketDelete,
    /// For flows: one atomic step for counters.
    KeyIncrement,
    /// For flows, with `.waitForTaskToken`: resumes the flow when a key changes.
    KeyWatch,
    /// Internal: finishes bucket deletions, invoked by the buckets table's stream.
    BucketPurge,
    /// Internal, every minute: takes expired values out of the store.
    ExpirySweep,
    /// Internal: fed by the items table's stream (counts, trimmed and archived revisions).
    ItemsStream,
    /// Internal: fed by the items table's stream (mirrors, sources, republish, waking
    /// watchers).
    ItemsReplicate,
}

impl Function {
    pub const ALL: [Function; 15] = [
        Function::BucketCreate,
        Function::KeyPut,
        Function::KeyGet,
        Function::BucketList,
        Function::KeyList,
        Function::KeyDelete,
        Function::KeyHistory,
        Function::BucketInfo,
        Function::BucketDelete,
        Function::KeyIncrement,
        Function::KeyWatch,
        Function::BucketPurge,
        Function::ExpirySweep,
        Function::ItemsStream,
        Function::ItemsReplicate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::BucketCreate => "kv-bucket-create",
            Function::KeyPut => "kv-key-put",
            Function::KeyGet => "kv-key-get",
            Function::BucketList => "kv-bucket-list",
            Function::KeyList => "kv-key-list",
            Function::KeyDelete => "kv-key-delete",
            Function::KeyHistory => "kv-key-history",
            Function::BucketInfo => "kv-bucket-info",
            Function::BucketDelete => "kv-bucket-delete",
            Function::KeyIncrement => "kv-key-increment",
            Function::KeyWatch => "kv-key-watch",
            Function::BucketPurge => "kv-bucket-purge",
            Function::ExpirySweep => "kv-expiry-sweep",
            Function::ItemsStream => "kv-items-stream",
            Function::ItemsReplicate => "kv-items-replicate",
        }
    }

    /// Puts events on EventBridge (`bus`): its container builds that client, and its policy
    /// grants `events:PutEvents` on the bus.
    pub fn publishes_events(self) -> bool {
        self == Function::ItemsReplicate
    }

    /// What it calls of Step Functions' task-token API to resume (or fail) waiting flows: its
    /// container builds a Step Functions client when any, and its policy grants exactly these.
    pub fn task_token_actions(self) -> &'static [&'static str] {
        match self {
            Function::KeyWatch => &["states:SendTaskFailure", "states:SendTaskSuccess"],
            Function::ItemsReplicate => &["states:SendTaskSuccess"],
            _ => &[],
        }
    }

    /// A stream consumer that reports partial batch failures: its result is Lambda's
    /// `{"batchItemFailures": [...]}` itself, not an envelope.
    pub fn answers_stream_batches(self) -> bool {
        matches!(self, Function::ItemsStream | Function::ItemsReplicate)
    }
}
