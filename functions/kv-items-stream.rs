//! The kv-items-stream Lambda function, fed by the items table's stream (bucket counts,
//! trimmed and archived revisions): wiring only; the behaviour lives in `shared/`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    kv::lambda::runtime::run(kv::lambda::dispatch::ITEMS_STREAM).await
}
