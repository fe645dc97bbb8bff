//! The kv-key-increment Lambda function: wiring only; the behaviour lives in `shared/`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    kv::lambda::runtime::run(kv::lambda::dispatch::KEY_INCREMENT).await
}
