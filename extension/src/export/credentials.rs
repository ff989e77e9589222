//! AWS credentials for SigV4, resolved lazily and cached until shortly before they expire.
//!
//! The chain is the part of the standard AWS chain that applies in Lambda, from `aws-config`:
//! 1. environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
//!    which Lambda sets for the execution role;
//! 2. container credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI` with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN`), which Lambda sets instead for SnapStart functions.
//!
//! Left out, because Lambda has none of them and each costs size or a round trip that can only
//! time out: profile files (+0.9 MB: profile parsing and the STS client for assume-role), IMDS,
//! SSO, web identity. Measured release sizes of a binary that links the exporters (x86_64, fat
//! LTO, stripped):
//!
//! | credentials                                                          | size    |
//! |----------------------------------------------------------------------|---------|
//! | aws-config defaults: `default-https-client` (aws-lc) + default chain | 7.67 MB |
//! | env + container + profile, our ring client                           | 4.80 MB |
//! | **env + container, our ring client (this)**                          | 3.91 MB |
//! | env only                                                             | 3.26 MB |
//!
//! The chain is built on the first export that signs, never at start-up, and its HTTP calls go
//! through the exporter's own client ([`HttpClient`]) via a small adapter, so aws-config needs no
//! HTTP stack of its own and nothing links aws-lc-sys.
//!
//! Tests inject a fixed provider ([`CredentialsSource::Provider`]) instead of touching the
//! process environment, which parallel tests share.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use aws_config::Region;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::http::{
    HttpClient as SmithyHttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode as SmithyStatus;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::display::DisplayErrorContext;
use bytes::Bytes;
use tokio::time::Instant;

use super::http_client::{HttpClient, HttpError};

/// Cached credentials are refreshed this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub enum CredentialsSource {
    /// The Lambda-relevant part of the standard AWS chain (see the module docs).
    #[default]
    Chain,
    /// A given provider (tests; embedding).
    Provider(SharedCredentialsProvider),
}

/// No credentials could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    /// The deadline passed while resolving them.
    #[error("timed out resolving AWS credentials")]
    Timeout,
    /// Every provider in the chain failed.
    #[error("no AWS credentials: {0}")]
    Unavailable(String),
}

/// Resolves credentials on demand and caches them per their expiry.
#[derive(Debug)]
pub struct CredentialsCache {
    source: CredentialsSource,
    region: Option<String>,
    http: Arc<HttpClient>,
    provider: OnceLock<SharedCredentialsProvider>,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl CredentialsCache {
    /// A cache over `source`. Builds nothing yet; `http` is used by the container provider.
    pub fn new(source: CredentialsSource, region: Option<String>, http: Arc<HttpClient>) -> Self {
        CredentialsCache {
            source,
            region,
            http,
            provider: OnceLock::new(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Credentials valid for a while yet, resolving them if needed, by `deadline`.
    pub async fn get(&self, deadline: Instant) -> Result<Credentials, CredentialsError> {
        let mut cached = match tokio::time::timeout_at(deadline, self.cached.lock()).await {
            Ok(guard) => guard,
            Err(_) => return Err(CredentialsError::Timeout),
        };
        let now = SystemTime::now();
        if let Some(c) = cached.as_ref().filter(|c| fresh(c, now)) {
            return Ok(c.clone());
        }
        let provider = self.provider();
        let resolved = tokio::time::timeout_at(deadline, provider.provide_credentials()).await;
        let error = match resolved {
            Ok(Ok(c)) => {
                tracing::debug!(expires = ?c.expiry(), "AWS credentials resolved");
                *cached = Some(c.clone());
                return Ok(c);
            }
            Ok(Err(e)) => CredentialsError::Unavailable(DisplayErrorContext(&e).to_string()),
            Err(_) => CredentialsError::Timeout,
        };
        // A failed refresh keeps using credentials that have not expired yet.
        match cached.as_ref().filter(|c| !expired(c, now)) {
            Some(c) => Ok(c.clone()),
            None => Err(error),
        }
    }

    fn provider(&self) -> SharedCredentialsProvider {
        self.provider
            .get_or_init(|| match &self.source {
                CredentialsSource::Provider(p) => p.clone(),
                CredentialsSource::Chain => {
                    lambda_chain(self.region.as_deref(), Arc::clone(&self.http))
                }
            })
            .clone()
    }
}

fn fresh(c: &Credentials, now: SystemTime) -> bool {
    match c.expiry() {
        None => true,
        Some(expiry) => expiry
            .duration_since(now)
            .is_ok_and(|left| left > REFRESH_BEFORE_EXPIRY),
    }
}

fn expired(c: &Credentials, now: SystemTime) -> bool {
    c.expiry().is_some_and(|expiry| expiry <= now)
}

/// Environment, then container credentials.
fn lambda_chain(region: Option<&str>, http: Arc<HttpClient>) -> SharedCredentialsProvider {
    let config = ProviderConfig::default()
        .with_http_client(SmithyHttp { http })
        .with_region(region.map(|r| Region::new(r.to_owned())));
    let chain = CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else(
        "EcsContainer",
        EcsCredentialsProvider::builder().configure(&config).build(),
    );
    SharedCredentialsProvider::new(chain)
}

/// aws-config's HTTP client trait over our [`HttpClient`].
#[derive(Debug, Clone)]
struct SmithyHttp {
    http: Arc<HttpClient>,
}

impl SmithyHttpClient for SmithyHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeout = settings.connect_timeout().unwrap_or(Duration::from_secs(2))
            + settings.read_timeout().unwrap_or(Duration::from_secs(5));
        SharedHttpConnector::new(SmithyConnector {
            http: Arc::clone(&self.http),
            timeout,
        })
    }
}

#[derive(Debug)]
struct SmithyConnector {
    http: Arc<HttpClient>,
    timeout: Duration,
}

/// Credentials responses are small JSON documents.
const MAX_CREDENTIALS_RESPONSE: usize = 64 * 1024;

impl HttpConnector for SmithyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = Arc::clone(&self.http);
        let deadline = Instant::now() + self.timeout;
        HttpConnectorFuture::new(async move {
            let request = to_http(&request).map_err(|e| ConnectorError::other(e.into(), None))?;
            let response = http
                .send(request, deadline, MAX_CREDENTIALS_RESPONSE)
                .await
                .map_err(|e| match e {
                    HttpError::Timeout => ConnectorError::timeout(e.into()),
                    other => ConnectorError::io(other.into()),
                })?;
            let status = SmithyStatus::try_from(response.status.as_u16())
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let mut out = HttpResponse::new(status, SdkBody::from(response.body));
            for (name, value) in &response.headers {
                if let Ok(value) = value.to_str() {
                    out.headers_mut()
                        .append(name.as_str().to_owned(), value.to_owned());
                }
            }
            Ok(out)
        })
    }
}

fn to_http(request: &HttpRequest) -> Result<http::Request<Bytes>, HttpError> {
    let body = request
        .body()
        .bytes()
        .map(Bytes::copy_from_slice)
        .ok_or_else(|| HttpError::Invalid("streaming request body".into()))?;
    let mut builder = http::Request::builder()
        .method(request.method())
        .uri(request.uri());
    for (name, value) in request.headers() {
        builder = builder.header(name, value);
    }
    builder
        .body(body)
        .map_err(|e| HttpError::Invalid(e.to_string()))
}

/// A provider for tests: fixed keys, optionally expiring.
pub fn fixed(
    access_key_id: &str,
    secret_access_key: &str,
    session_token: Option<&str>,
) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        access_key_id,
        secret_access_key,
        session_token.map(str::to_owned),
        None,
        "fixed",
    ))
}

impl From<SharedCredentialsProvider> for CredentialsSource {
    fn from(p: SharedCredentialsProvider) -> Self {
        CredentialsSource::Provider(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts calls; hands out credentials expiring `ttl` from now.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        ttl: Option<Duration>,
        fail: bool,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let result = if self.fail && n > 0 {
                Err(aws_credential_types::provider::error::CredentialsError::not_loaded("gone"))
            } else {
                Ok(Credentials::new(
                    format!("AKID{n}"),
                    "secret",
                    None,
                    self.ttl.map(|t| SystemTime::now() + t),
                    "counting",
                ))
            };
            aws_credential_types::provider::future::ProvideCredentials::ready(result)
        }
    }

    fn cache(ttl: Option<Duration>, fail: bool) -> (CredentialsCache, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = SharedCredentialsProvider::new(Counting {
            calls: Arc::clone(&calls),
            ttl,
            fail,
        });
        (
            CredentialsCache::new(provider.into(), None, HttpClient::new(false)),
            calls,
        )
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn static_credentials_are_resolved_once() {
        let (c, calls) = cache(None, false);
        assert_eq!(c.get(soon()).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(c.get(soon()).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn expiring_credentials_are_refreshed_early() {
        // Expire within the refresh margin: every get refreshes.
        let (c, calls) = cache(Some(Duration::from_secs(60)), false);
        assert_eq!(c.get(soon()).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(c.get(soon()).await.unwrap().access_key_id(), "AKID1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Long-lived: cached.
        let (c, calls) = cache(Some(Duration::from_secs(3600)), false);
        c.get(soon()).await.unwrap();
        c.get(soon()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_unexpired_credentials() {
        let (c, calls) = cache(Some(Duration::from_secs(60)), true);
        assert_eq!(c.get(soon()).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(c.get(soon()).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn smithy_adapter_round_trips_through_our_client() {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let auth = req
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = format!(
                    r#"{{"path":"{}","auth":{:?}}}"#,
                    req.uri().path(),
                    auth.unwrap_or_default()
                );
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(200)
                        .header("x-test", "yes")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap(),
                )
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
                .unwrap();
        });

        let connector = SmithyConnector {
            http: HttpClient::new(false),
            timeout: Duration::from_secs(5),
        };
        let mut request = HttpRequest::get(format!("http://{addr}/creds")).unwrap();
        request
            .headers_mut()
            .insert("authorization", "token-123".to_owned());
        let response = connector.call(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers().get("x-test"), Some("yes"));
        let body = std::str::from_utf8(response.body().bytes().unwrap()).unwrap();
        assert_eq!(body, r#"{"path":"/creds","auth":"token-123"}"#);
        drop(connector);
        server.abort();

        // A closed port is an I/O connector error, not a panic or a hang.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let connector = SmithyConnector {
            http: HttpClient::new(false),
            timeout: Duration::from_secs(5),
        };
        let err = connector
            .call(HttpRequest::get(format!("http://{closed}/creds")).unwrap())
            .await
            .unwrap_err();
        assert!(err.is_io(), "{err:?}");
    }
}
