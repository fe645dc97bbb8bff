//! The kv-bucket-list Lambda function: wiring only; the behaviour lives in `shared/`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    kv::lambda::runtime::run(kv::lambda::dispatch::BUCKET_LIST).await
}
