//! The kv-bucket-purge Lambda function, invoked by the buckets table's stream to finish
//! bucket deletions: wiring only; the behaviour lives in `shared/`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    kv::lambda::runtime::run(kv::lambda::dispatch::BUCKET_PURGE).await
}
