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
    /// Internal: finishes bucket deletions, invoked by the buckets table's stream.
    BucketPurge,
    /// Internal, every minute: takes expired values out of the store.
    ExpirySweep,
    /// Internal: fed by the items table's stream (counts, trimmed and archived revisions).
    ItemsStream,
}

impl Function {
    pub const ALL: [Function; 12] = [
        Function::BucketCreate,
        Function::KeyPut,
        Function::KeyGet,
        Function::BucketList,
        Function::KeyList,
        Function::KeyDelete,
        Function::KeyHistory,
        Function::BucketInfo,
        Function::BucketDelete,
        Function::BucketPurge,
        Function::ExpirySweep,
        Function::ItemsStream,
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
            Function::BucketPurge => "kv-bucket-purge",
            Function::ExpirySweep => "kv-expiry-sweep",
            Function::ItemsStream => "kv-items-stream",
        }
    }

    /// A stream consumer that reports partial batch failures: its result is Lambda's
    /// `{"batchItemFailures": [...]}` itself, not an envelope.
    pub fn answers_stream_batches(self) -> bool {
        self == Function::ItemsStream
    }
}
