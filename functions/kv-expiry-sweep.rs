//! The kv-expiry-sweep Lambda function, run every minute by a schedule to take expired values
//! out of the store: wiring only; the behaviour lives in `shared/`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    kv::lambda::runtime::run(kv::lambda::dispatch::EXPIRY_SWEEP).await
}
