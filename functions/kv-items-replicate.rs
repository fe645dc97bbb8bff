//! The kv-items-replicate Lambda function, fed by the items table's stream (republish to
//! EventBridge): wiring only; the behaviour lives in `shared/`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    kv::lambda::runtime::run(kv::lambda::dispatch::ITEMS_REPLICATE).await
}
