//! Building the DynamoDB client once per container.

use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// HTTPS through rustls with ring: no C toolchain needed for cross-compiling to arm64, and a
/// smaller binary than the SDK's default aws-lc build.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The client from the standard environment: region and credentials as Lambda provides them,
/// and `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local.
pub async fn from_env() -> aws_sdk_dynamodb::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}
