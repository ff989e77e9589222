//! AWS credentials for SigV4, resolved lazily and cached until shortly before they expire.
//!
//! The chain is the part of the standard AWS chain that applies in Lambda, written here (about
//! 150 lines) rather than taken from `aws-config`:
//! 1. environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
//!    which Lambda sets for the execution role;
//! 2. container credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI`, with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `AWS_CONTAINER_AUTHORIZATION_TOKEN`), which
//!    Lambda sets instead for SnapStart functions. As in the SDKs, a plain-`http` full URI must
//!    point at loopback or the container credentials addresses, so the token never leaves the host.
//!
//! Left out, because Lambda has none of them: profile files, IMDS, SSO, web identity. Measured
//! release sizes of the extension (x86_64, fat LTO, stripped; docs/performance.md):
//!
//! | credentials                                                          | size    |
//! |----------------------------------------------------------------------|---------|
//! | aws-config defaults: `default-https-client` (aws-lc) + default chain | 7.67 MB (probe binary) |
//! | aws-config env + container providers over our ring client           | 6.08 MB |
//! | **env + container, this module**                                     | see docs/performance.md |
//!
//! The chain reads nothing until the first export that signs, and its HTTP call goes through the
//! exporter's own client ([`HttpClient`]).
//!
//! Tests inject a fixed provider ([`CredentialsSource::Provider`]) instead of touching the
//! process environment, which parallel tests share.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError as ProviderError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use bytes::Bytes;
use http::header::AUTHORIZATION;
use tokio::time::Instant;

use super::http_client::HttpClient;

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
    http: Arc<HttpClient>,
    provider: OnceLock<SharedCredentialsProvider>,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl CredentialsCache {
    /// A cache over `source`. Builds nothing yet; `http` is used by the container provider.
    pub fn new(source: CredentialsSource, http: Arc<HttpClient>) -> Self {
        CredentialsCache {
            source,
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
            Ok(Err(e)) => CredentialsError::Unavailable(provider_error_text(&e)),
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
                CredentialsSource::Chain => SharedCredentialsProvider::new(LambdaChain {
                    http: Arc::clone(&self.http),
                    env: Arc::new(|k: &str| std::env::var(k).ok()),
                }),
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

/// An error and its sources, on one line.
fn provider_error_text(e: &ProviderError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The link-local address of container credentials for a relative URI.
const CONTAINER_HOST: &str = "http://169.254.170.2";
/// Hosts a plain-`http` full URI may name besides loopback (ECS and EKS Pod Identity).
const CONTAINER_IPS: [&str; 3] = ["169.254.170.2", "169.254.170.23", "[fd00:ec2::23]"];
/// Time allowed for one container credentials call.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(5);
/// Credentials responses are small JSON documents.
const MAX_CREDENTIALS_RESPONSE: usize = 64 * 1024;

/// Reads an environment variable: the process environment in production, a map in tests.
type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Environment, then container credentials (the module docs).
#[derive(Clone)]
struct LambdaChain {
    http: Arc<HttpClient>,
    env: EnvLookup,
}

impl std::fmt::Debug for LambdaChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LambdaChain")
    }
}

impl ProvideCredentials for LambdaChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.resolve())
    }
}

impl LambdaChain {
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    async fn resolve(&self) -> Result<Credentials, ProviderError> {
        if let Some(c) = self.environment() {
            return Ok(c);
        }
        let Some(uri) = self.container_uri()? else {
            return Err(ProviderError::not_loaded(
                "neither AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY nor \
                 AWS_CONTAINER_CREDENTIALS_FULL_URI/_RELATIVE_URI is set",
            ));
        };
        self.container(&uri).await
    }

    fn environment(&self) -> Option<Credentials> {
        let key = self.var("AWS_ACCESS_KEY_ID")?;
        let secret = self.var("AWS_SECRET_ACCESS_KEY")?;
        Some(Credentials::new(
            key.trim(),
            secret.trim(),
            self.var("AWS_SESSION_TOKEN").map(|t| t.trim().to_owned()),
            None,
            "Environment",
        ))
    }

    /// The container credentials URI, checked; `None` when none is set.
    fn container_uri(&self) -> Result<Option<http::Uri>, ProviderError> {
        let raw = match (
            self.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            self.var("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        ) {
            (Some(rel), _) => format!("{CONTAINER_HOST}{}", rel.trim()),
            (None, Some(full)) => full.trim().to_owned(),
            (None, None) => return Ok(None),
        };
        let uri: http::Uri = raw.parse().map_err(|e: http::uri::InvalidUri| {
            ProviderError::invalid_configuration(format!("container credentials URI: {e}"))
        })?;
        let host = uri.host().unwrap_or("");
        let allowed = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => host_is_loopback(host) || CONTAINER_IPS.contains(&host),
            _ => false,
        };
        if !allowed {
            return Err(ProviderError::invalid_configuration(format!(
                "container credentials URI {raw:?}: plain http only to loopback or the container \
                 credentials addresses"
            )));
        }
        Ok(Some(uri))
    }

    fn authorization(&self) -> Result<Option<String>, ProviderError> {
        if let Some(path) = self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            let token = std::fs::read_to_string(path.trim()).map_err(|e| {
                ProviderError::invalid_configuration(format!(
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: {e}"
                ))
            })?;
            return Ok(Some(token.trim().to_owned()));
        }
        Ok(self
            .var("AWS_CONTAINER_AUTHORIZATION_TOKEN")
            .map(|t| t.trim().to_owned()))
    }

    async fn container(&self, uri: &http::Uri) -> Result<Credentials, ProviderError> {
        let mut request = http::Request::get(uri.clone()).header("accept", "application/json");
        if let Some(token) = self.authorization()? {
            request = request.header(AUTHORIZATION, token);
        }
        let request = request
            .body(Bytes::new())
            .map_err(|e| ProviderError::invalid_configuration(e.to_string()))?;
        let response = self
            .http
            .send(
                request,
                Instant::now() + CONTAINER_TIMEOUT,
                MAX_CREDENTIALS_RESPONSE,
            )
            .await
            .map_err(|e| ProviderError::provider_error(format!("container credentials: {e}")))?;
        if !response.status.is_success() {
            return Err(ProviderError::provider_error(format!(
                "container credentials: HTTP {}",
                response.status
            )));
        }
        parse_container_credentials(&response.body)
    }
}

fn host_is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The container credentials document: `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`.
fn parse_container_credentials(body: &[u8]) -> Result<Credentials, ProviderError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Doc {
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
        expiration: Option<String>,
    }
    let doc: Doc = serde_json::from_slice(body).map_err(|e| {
        ProviderError::provider_error(format!("container credentials response: {e}"))
    })?;
    let expiry = match doc.expiration.as_deref() {
        None => None,
        Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
            ProviderError::provider_error(format!("container credentials: bad Expiration {t:?}"))
        })?),
    };
    Ok(Credentials::new(
        doc.access_key_id,
        doc.secret_access_key,
        doc.token.filter(|t| !t.is_empty()),
        expiry,
        "EcsContainer",
    ))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` as a `SystemTime` (the Telemetry API's parser: one
/// RFC 3339 reader for the whole extension).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let nanos = crate::lambda::telemetry::parse_rfc3339_unix_nano(s)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
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
            CredentialsCache::new(provider.into(), HttpClient::new(false)),
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

    fn chain(vars: &[(&str, &str)]) -> LambdaChain {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        LambdaChain {
            http: HttpClient::new(false),
            env: Arc::new(move |k: &str| map.get(k).cloned()),
        }
    }

    #[test]
    fn rfc3339_times() {
        let t = |s| {
            parse_rfc3339(s).map(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis()
            })
        };
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("2099-01-01T00:00:00Z"), Some(4_070_908_800_000));
        assert_eq!(t("2024-02-29T12:34:56.789Z"), Some(1_709_210_096_789));
        assert_eq!(t("2024-02-29T14:34:56+02:00"), Some(1_709_210_096_000));
        assert_eq!(t("2024-02-29T10:04:56-02:30"), Some(1_709_210_096_000));
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56",
            "x024-02-29T12:34:56Z",
            "2024-02-29T12:34:56.Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn environment_comes_first() {
        let c = chain(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://127.0.0.1:1/never",
            ),
        ]);
        let creds = c.provide_credentials().await.unwrap();
        assert_eq!(creds.access_key_id(), "AKID");
        assert_eq!(creds.secret_access_key(), "secret");
        assert_eq!(creds.session_token(), Some("token"));
        assert_eq!(creds.expiry(), None);
    }

    #[tokio::test]
    async fn nothing_set_is_not_loaded() {
        let err = chain(&[("AWS_ACCESS_KEY_ID", "AKID")])
            .provide_credentials()
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::CredentialsNotLoaded(_)),
            "{err:?}"
        );
    }

    #[test]
    fn container_uris_are_checked() {
        let uri =
            |full: &str| chain(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", full)]).container_uri();
        assert!(uri("http://127.0.0.1:8080/creds").unwrap().is_some());
        assert!(uri("http://localhost/creds").unwrap().is_some());
        assert!(uri("http://[::1]:9/creds").unwrap().is_some());
        assert!(
            uri("http://169.254.170.23/v1/credentials")
                .unwrap()
                .is_some()
        );
        assert!(uri("https://creds.example.com/x").unwrap().is_some());
        assert!(uri("http://creds.example.com/x").is_err());
        assert!(uri("ftp://127.0.0.1/x").is_err());
        let rel = chain(&[(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/abc",
        )])
        .container_uri()
        .unwrap()
        .unwrap();
        assert_eq!(rel.to_string(), "http://169.254.170.2/v2/credentials/abc");
    }

    #[tokio::test]
    async fn container_credentials_over_our_client() {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let (status, body) = match (req.uri().path(), auth.as_deref()) {
                        ("/creds", Some("token-123")) => (
                            200,
                            r#"{"AccessKeyId":"ASIA1","SecretAccessKey":"s/k","Token":"t","Expiration":"2099-01-01T00:00:00Z"}"#,
                        ),
                        ("/garbage", _) => (200, "not json"),
                        _ => (401, r#"{"message":"no"}"#),
                    };
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let token_file = std::env::temp_dir().join(format!("otel-xray-token-{}", addr.port()));
        std::fs::write(&token_file, "token-123\n").unwrap();
        let full = format!("http://{addr}/creds");
        for c in [
            chain(&[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "token-123"),
            ]),
            chain(&[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    token_file.to_str().unwrap(),
                ),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                    "ignored-when-a-file-is-set",
                ),
            ]),
        ] {
            let creds = c.provide_credentials().await.unwrap();
            assert_eq!(creds.access_key_id(), "ASIA1");
            assert_eq!(creds.secret_access_key(), "s/k");
            assert_eq!(creds.session_token(), Some("t"));
            assert_eq!(creds.expiry(), parse_rfc3339("2099-01-01T00:00:00Z"));
        }
        let _ = std::fs::remove_file(&token_file);
        // A refused token and a garbage body are errors, with the cause.
        let err = chain(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full)])
            .provide_credentials()
            .await
            .unwrap_err();
        assert!(provider_error_text(&err).contains("401"), "{err:?}");
        let err = chain(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("http://{addr}/garbage"),
        )])
        .provide_credentials()
        .await
        .unwrap_err();
        assert!(provider_error_text(&err).contains("response"), "{err:?}");
        server.abort();
        // A closed port is an error, not a panic or a hang.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(
            chain(&[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &format!("http://{closed}/creds")
            )])
            .provide_credentials()
            .await
            .is_err()
        );
    }
}
