//! The HTTP(S) client of the `api` and `otlp` exporters (and of the container credentials
//! provider): hyper 1 with hyper-rustls on ring, HTTP/1.1 with keep-alive, built on first use and
//! reused across flushes.
//!
//! TLS roots: the system's, through rustls-native-certs, loaded when the client is first built
//! and only if an `https://` endpoint is configured. Why not webpki-roots:
//! - Lambda's execution environments (Amazon Linux 2 and 2023, every managed runtime and
//!   `provided.*`) ship the CA bundle (`/etc/pki/tls/certs/ca-bundle.crt`, linked from
//!   `/etc/ssl/certs`), which AWS keeps current; a bundle compiled into the binary goes stale
//!   with the layer version and adds about 250 KB;
//! - users behind TLS-inspecting proxies or private CAs can point `SSL_CERT_FILE` /
//!   `SSL_CERT_DIR` at their bundle, as with every other tool in the sandbox;
//! - loading them costs a few milliseconds once, after the first invocation's response, never at
//!   start-up.
//!
//! When no roots load (a container image without a CA bundle), the failure is logged once and
//! `https://` exports fail with a TLS error, counted as export failures; `http://` endpoints
//! keep working.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

/// Connect timeout cap; the export deadline usually cuts in earlier.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Idle pooled connections are closed after this. Lambda freezes the sandbox between
/// invocations; a connection the server closed meanwhile is detected and replaced, and a request
/// that loses that race is retried by the exporters.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The deadline passed before the response was read.
    #[error("timed out")]
    Timeout,
    /// No connection (refused, DNS, TLS handshake, …).
    #[error("connect: {0}")]
    Connect(String),
    /// The connection failed during the exchange.
    #[error("request: {0}")]
    Request(String),
    /// The response body could not be read or was too large.
    #[error("response body: {0}")]
    Body(String),
    /// The client could not be built (TLS set-up).
    #[error("client set-up: {0}")]
    Setup(String),
    /// The request itself was malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// A response, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

type HyperClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A lazily built, shared HTTP(S) client.
#[derive(Debug)]
pub struct HttpClient {
    tls_roots: bool,
    client: OnceLock<Result<HyperClient, String>>,
}

impl HttpClient {
    /// A client that loads the system's TLS roots when first used if `tls_roots` (set it when an
    /// `https://` endpoint is configured). Builds nothing now.
    pub fn new(tls_roots: bool) -> Arc<Self> {
        Arc::new(HttpClient {
            tls_roots,
            client: OnceLock::new(),
        })
    }

    /// Sends `request` and reads the response body (at most `max_body` bytes), all by `deadline`.
    pub async fn send(
        &self,
        request: http::Request<Bytes>,
        deadline: Instant,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        let client = self.client()?;
        let exchange = async {
            let response = client
                .request(request.map(Full::new))
                .await
                .map_err(classify)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| HttpError::Body(error_chain(e.as_ref())))?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout),
        }
    }

    fn client(&self) -> Result<&HyperClient, HttpError> {
        self.client
            .get_or_init(|| build(self.tls_roots))
            .as_ref()
            .map_err(|e| HttpError::Setup(e.clone()))
    }
}

fn build(tls_roots: bool) -> Result<HyperClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = if tls_roots {
        system_roots(Arc::clone(&provider)).or_else(|e| {
            tracing::warn!(
                error = %e,
                "no system CA certificates (set SSL_CERT_FILE); https exports will fail"
            );
            empty_roots(Arc::clone(&provider))
        })?
    } else {
        empty_roots(provider)?
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(4)
        .build(connector))
}

/// TLS configuration trusting the system's CA certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR`
/// honoured). Fails when none can be loaded.
fn system_roots(
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ClientConfig, String> {
    use hyper_rustls::ConfigBuilderExt as _;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_native_roots()
        .map_err(|e| e.to_string())?
        .with_no_client_auth())
}

fn empty_roots(
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

fn classify(e: hyper_util::client::legacy::Error) -> HttpError {
    let chain = error_chain(&e);
    if e.is_connect() {
        HttpError::Connect(chain)
    } else {
        HttpError::Request(chain)
    }
}

/// An error and its sources, `: `-separated (hyper's own messages are terse).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    let mut depth = 0;
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
        depth += 1;
        if depth > 8 {
            break;
        }
    }
    out
}

impl HttpError {
    /// Worth another attempt (transient transport failure)?
    pub fn is_transient(&self) -> bool {
        matches!(self, HttpError::Connect(_) | HttpError::Request(_))
    }

    /// A short, stable description for logging once per cause (no addresses or ids).
    pub fn cause(&self) -> &'static str {
        match self {
            HttpError::Timeout => "timed out",
            HttpError::Connect(_) => "connect failed",
            HttpError::Request(_) => "connection failed",
            HttpError::Body(_) => "bad response body",
            HttpError::Setup(_) => "client set-up failed",
            HttpError::Invalid(_) => "invalid request",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn builds_with_system_roots_on_ring() {
        // This machine has a CA bundle, as Lambda does; loading it must not panic over the
        // choice of crypto provider either.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert!(system_roots(provider).is_ok());
        assert!(build(true).is_ok());
        assert!(build(false).is_ok());
    }

    #[tokio::test]
    async fn a_tls_handshake_with_a_non_tls_server_fails_as_connect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; 5];
            // A TLS ClientHello starts with a handshake record (0x16, version 3.x).
            stream.read_exact(&mut hello).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                .await
                .unwrap();
            hello
        });
        let client = HttpClient::new(true);
        let req = http::Request::post(format!("https://localhost:{}/v1/traces", addr.port()))
            .body(Bytes::from_static(b"x"))
            .unwrap();
        let err = client.send(req, soon(), 1024).await.unwrap_err();
        assert!(matches!(err, HttpError::Connect(_)), "{err}");
        assert!(err.is_transient());
        let hello = server.await.unwrap();
        assert_eq!(hello[0], 0x16, "the client spoke TLS");
        assert_eq!(hello[1], 3);
    }

    #[tokio::test]
    async fn the_deadline_bounds_connect_and_exchange() {
        // Accepts, reads, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = stream.read(&mut buf).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let client = HttpClient::new(false);
        let req = http::Request::get(format!("http://{addr}/"))
            .body(Bytes::new())
            .unwrap();
        let started = Instant::now();
        let err = client
            .send(req, started + Duration::from_millis(200), 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Timeout), "{err}");
        assert!(started.elapsed() < Duration::from_millis(400));
    }

    #[tokio::test]
    async fn oversized_responses_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let body = vec![b'a'; 10_000];
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&body).await.unwrap();
        });
        let client = HttpClient::new(false);
        let req = http::Request::get(format!("http://{addr}/"))
            .body(Bytes::new())
            .unwrap();
        let err = client.send(req, soon(), 1024).await.unwrap_err();
        assert!(matches!(err, HttpError::Body(_)), "{err}");
    }
}
