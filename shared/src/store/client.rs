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
//!
//! Every client gets `timeouts()`: without them a DynamoDB endpoint that accepts a connection
//! and never answers holds an invocation until Lambda kills it, and the caller sees a timeout
//! instead of `KvUnavailable`, which its flow retries.

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::Region;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;

/// Marks the warm-up request, which the connector answers itself.
const WARM_UP_HEADER: &str = "x-kv-warm-up";
/// The header's values: also open a connection, or stay inside the process.
const CONNECT: &str = "connect";
const LOCAL: &str = "local";
/// How long init may spend opening connections.
const CONNECT_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

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
        let Some(rehearsal) = request.headers().get(WARM_UP_HEADER) else {
            return self.inner.call(request);
        };
        let connect = rehearsal == CONNECT;
        let inner = self.inner.clone();
        let uri = request.uri().to_string();
        HttpConnectorFuture::new(async move {
            if connect {
                open_connection(&inner, &uri).await;
            }
            // What DynamoDB answers a GetItem that finds nothing.
            let ok = StatusCode::try_from(200)
                .map_err(|error| ConnectorError::other(error.into(), None))?;
            Ok(HttpResponse::new(ok, "{}".into()))
        })
    }
}

/// Opens a pooled connection (TCP, and TLS in AWS) to the endpoint with DynamoDB's
/// unauthenticated health check, `GET /`, and reads the answer to its end so the connection
/// goes back to the pool. Any failure is left for the first real request to meet.
async fn open_connection(inner: &SharedHttpConnector, uri: &str) {
    let Ok(mut check) = HttpRequest::get(uri) else {
        return;
    };
    let _ = check.set_uri(root(uri));
    if let Ok(mut response) = inner.call(check).await {
        let body = response.take_body();
        let _ = aws_smithy_types::byte_stream::ByteStream::new(body)
            .collect()
            .await;
    }
}

/// `scheme://authority/` of a request URI.
fn root(uri: &str) -> String {
    let after_scheme = uri.find("://").map(|index| index + 3).unwrap_or(0);
    let end = uri[after_scheme..]
        .find('/')
        .map(|index| after_scheme + index)
        .unwrap_or(uri.len());
    format!("{}/", &uri[..end])
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

/// Bounds on one request. DynamoDB answers in milliseconds (a 1 MB Query page in a few
/// hundred), so an attempt that takes 5 s has stalled and is retried; the whole operation,
/// retries included, gives up after 10 s, inside the functions' 15 s Lambda timeout.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .operation_attempt_timeout(std::time::Duration::from_secs(5))
        .operation_timeout(std::time::Duration::from_secs(10))
        .build()
}

/// The configuration Lambda's environment fully determines, or None elsewhere.
fn lambda_config() -> Option<aws_sdk_dynamodb::config::Builder> {
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
        .http_client(http_client())
        .timeout_config(timeouts())
        .interceptor(crate::store::metering::RequestMeter);
    if let Some(endpoint) = var("AWS_ENDPOINT_URL_DYNAMODB").or_else(|| var("AWS_ENDPOINT_URL")) {
        builder = builder.endpoint_url(endpoint);
    }
    Some(builder)
}

/// The configuration of the SDK's default chain (`AWS_ENDPOINT_URL_<SERVICE>` for local
/// emulators), with this module's HTTPS stack and time bounds: what the EventBridge and Step
/// Functions clients are built from, one load for both.
pub async fn shared_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(timeouts())
        .load()
        .await
}

/// The client configuration from the standard environment, for callers that add to it (the
/// benchmark attaches its meter).
pub async fn config_from_env() -> aws_sdk_dynamodb::config::Builder {
    if let Some(builder) = lambda_config() {
        return builder;
    }
    aws_sdk_dynamodb::config::Builder::from(&shared_config().await)
        .interceptor(crate::store::metering::RequestMeter)
}

/// The client from the standard environment: region and credentials as Lambda provides them,
/// and `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local.
pub async fn from_env() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(config_from_env().await.build())
}

/// The DynamoDB operations a function's invocations use, to rehearse during init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamoDbOperation {
    GetItem,
    Query,
    Scan,
    BatchGetItem,
    UpdateItem,
    PutItem,
    DeleteItem,
    TransactWriteItems,
    BatchWriteItem,
}

/// Rehearses requests through the client during init (see the module documentation):
/// `connections` GetItems at once, each opening one pooled connection, then each of
/// `operations` once inside the process. No rehearsal reaches DynamoDB's API, and failures are
/// ignored: it is only a rehearsal.
pub async fn warm_up(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    connections: usize,
    operations: &[DynamoDbOperation],
) {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, table) = (client.clone(), table.to_string());
        opening.spawn(async move {
            rehearse(&client, &table, DynamoDbOperation::GetItem, CONNECT).await
        });
    }
    // An endpoint that is slow to answer must not hold init for long: whatever is not open by
    // then, the first invocation opens itself (dropping the set cancels the rest).
    let all_open = async { while opening.join_next().await.is_some() {} };
    if tokio::time::timeout(CONNECT_BUDGET, all_open)
        .await
        .is_err()
    {
        tracing::debug!("client warm-up: connections still opening after {CONNECT_BUDGET:?}");
    }
    drop(opening);
    for operation in operations {
        if connections == 0 || *operation != DynamoDbOperation::GetItem {
            rehearse(client, table, *operation, LOCAL).await;
        }
    }
}

async fn rehearse(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    operation: DynamoDbOperation,
    mark: &'static str,
) {
    use super::items::{n, s, PK, REVISION};
    use aws_sdk_dynamodb::error::DisplayErrorContext;
    use aws_sdk_dynamodb::types::{
        ConditionCheck, DeleteRequest, KeysAndAttributes, TransactWriteItem, WriteRequest,
    };
    let key = || -> super::items::Item {
        [
            (PK.to_string(), s("kv-warm-up")),
            (REVISION.to_string(), n(0)),
        ]
        .into()
    };
    let tag = move |request: &mut HttpRequest| {
        request.headers_mut().insert(WARM_UP_HEADER, mark);
    };
    fn shown(error: impl std::error::Error) -> String {
        DisplayErrorContext(error).to_string()
    }
    // Every operation's fluent builder is a different type with the same tail.
    macro_rules! sent {
        ($request:expr) => {
            $request
                .customize()
                .mutate_request(tag)
                .send()
                .await
                .map(drop)
                .map_err(shown)
        };
    }
    let outcome: Result<(), String> = match operation {
        DynamoDbOperation::GetItem => {
            sent!(client.get_item().table_name(table).set_key(Some(key())))
        }
        DynamoDbOperation::Query => sent!(client
            .query()
            .table_name(table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s("kv-warm-up"))
            .limit(1)),
        DynamoDbOperation::Scan => sent!(client.scan().table_name(table).limit(1)),
        DynamoDbOperation::BatchGetItem => match KeysAndAttributes::builder().keys(key()).build() {
            Ok(keys) => sent!(client.batch_get_item().request_items(table, keys)),
            Err(error) => Err(shown(error)),
        },
        DynamoDbOperation::UpdateItem => sent!(client
            .update_item()
            .table_name(table)
            .set_key(Some(key()))
            .update_expression("REMOVE #pk")
            .expression_attribute_names("#pk", PK)),
        DynamoDbOperation::PutItem => sent!(client
            .put_item()
            .table_name(table)
            .set_item(Some(key()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)),
        DynamoDbOperation::DeleteItem => {
            sent!(client.delete_item().table_name(table).set_key(Some(key())))
        }
        DynamoDbOperation::TransactWriteItems => match ConditionCheck::builder()
            .table_name(table)
            .set_key(Some(key()))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
        {
            Ok(check) => sent!(client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().condition_check(check).build())),
            Err(error) => Err(shown(error)),
        },
        DynamoDbOperation::BatchWriteItem => {
            match DeleteRequest::builder().set_key(Some(key())).build() {
                Ok(delete) => sent!(client.batch_write_item().request_items(
                    table,
                    vec![WriteRequest::builder().delete_request(delete).build()],
                )),
                Err(error) => Err(shown(error)),
            }
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(?operation, %error, "client warm-up");
    }
}
