//! Building the DynamoDB client once per container, and making its first request cost what
//! the next ones do.
//!
//! Cold-start choices (measured by `make bench`, README "Performance"):
//! - In Lambda the region and the role's credentials are environment variables, so the client
//!   is configured from them directly: no profile files are read and no provider chain is
//!   built. Anywhere else (a developer's profile, SSO, a container role), or when any other
//!   SDK setting is in the environment, the SDK's full default chain runs as before.
//! - `warm_up` sends one request through the whole client pipeline (endpoint rules,
//!   credentials, signing, the HTTPS connector and its root certificates, serialization and
//!   parsing) during init, answered inside the process: nothing goes on the network, and the
//!   first real request finds every lazy part of the client ready.

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::Region;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;

/// Marks the warm-up request, which the connector answers itself.
const WARM_UP_HEADER: &str = "x-kv-warm-up";

/// HTTPS through rustls with ring: no C toolchain needed for cross-compiling to arm64, and a
/// smaller binary than the SDK's default aws-lc build.
///
/// Wrapped so that (1) the warm-up request never leaves the process, and (2) the root
/// certificates are parsed once, when the first connector is built, instead of also when the
/// client is constructed (the SDK's client pre-builds a connector it then throws away).
pub fn http_client() -> SharedHttpClient {
    SharedHttpClient::new(KvHttpClient {
        inner: aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https(),
    })
}

#[derive(Debug)]
struct KvHttpClient {
    inner: SharedHttpClient,
}

impl HttpClient for KvHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        // The inner client caches one connector (and connection pool) per settings.
        SharedHttpConnector::new(KvConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct KvConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for KvConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let rehearsal = request.headers().contains_key(WARM_UP_HEADER);
        if let (true, Ok(ok)) = (rehearsal, StatusCode::try_from(200)) {
            // What DynamoDB answers a GetItem that finds nothing.
            return HttpConnectorFuture::ready(Ok(HttpResponse::new(ok, "{}".into())));
        }
        self.inner.call(request)
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Settings the SDK's default chain would honour and the direct configuration does not: when
/// any is present, the default chain runs.
const SDK_SETTINGS: &[&str] = &[
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_SDK_UA_APP_ID",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE",
    "AWS_DISABLE_REQUEST_COMPRESSION",
    "AWS_REQUEST_MIN_COMPRESSION_SIZE_BYTES",
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
    "AWS_AUTH_SCHEME_PREFERENCE",
    "AWS_SIGV4A_SIGNING_REGION_SET",
];

/// The configuration Lambda's environment fully determines, or None elsewhere.
fn lambda_config() -> Option<aws_sdk_dynamodb::config::Builder> {
    if var("KV_EXP_DEFAULT_CHAIN").is_some() {
        return None;
    }
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"))?;
    var("AWS_ACCESS_KEY_ID")?;
    var("AWS_SECRET_ACCESS_KEY")?;
    if SDK_SETTINGS.iter().any(|name| var(name).is_some()) {
        return None;
    }
    let mut builder = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        // Reads the three variables Lambda sets (and AWS_ACCOUNT_ID) when a request first
        // needs them; they never change for the life of the process.
        .credentials_provider(
            aws_config::environment::credentials::EnvironmentVariableCredentialsProvider::new(),
        )
        .http_client(http_client());
    if let Some(endpoint) = var("AWS_ENDPOINT_URL_DYNAMODB").or_else(|| var("AWS_ENDPOINT_URL")) {
        builder = builder.endpoint_url(endpoint);
    }
    Some(builder)
}

/// The client configuration from the standard environment, for callers that add to it (the
/// benchmark attaches its meter).
pub async fn config_from_env() -> aws_sdk_dynamodb::config::Builder {
    if let Some(builder) = lambda_config() {
        return builder;
    }
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await;
    aws_sdk_dynamodb::config::Builder::from(&config)
}

/// The client from the standard environment: region and credentials as Lambda provides them,
/// and `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local.
pub async fn from_env() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(config_from_env().await.build())
}

/// Runs one GetItem through the client without sending it (see the module documentation), so
/// that the first invocation pays no one-off cost a warm one does not. Failures are ignored:
/// the request is only a rehearsal.
pub async fn warm_up(client: &aws_sdk_dynamodb::Client, table: &str) {
    if var("KV_EXP_NO_WARMUP").is_some() {
        return;
    }
    use super::items::{n, s, PK, REV};
    let rehearsal = client
        .get_item()
        .table_name(table)
        .key(PK, s("kv-warm-up"))
        .key(REV, n(0))
        .customize()
        .mutate_request(|request| {
            request.headers_mut().insert(WARM_UP_HEADER, "1");
        })
        .send()
        .await;
    if let Err(error) = rehearsal {
        tracing::debug!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&error), "client warm-up");
    }
}
