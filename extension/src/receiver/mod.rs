//! OTLP receivers on loopback: HTTP `/v1/traces` and gRPC TraceService/Export
//! (interface; the implementation is being written).
//!
//! Start-up binds first ([`bind`], before the extension registers, so a taken port is reported
//! before Lambda starts the runtime), then serves ([`BoundReceivers::serve`]) until cancelled.

use std::net::SocketAddr;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::buffer::BufferHandle;
use crate::config::Config;

/// A receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The port is taken or not allowed.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `OTLP/HTTP` or `OTLP/gRPC`.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Listeners bound on loopback, not yet serving.
#[derive(Debug)]
pub struct BoundReceivers {
    /// OTLP/HTTP listener.
    pub http: tokio::net::TcpListener,
    /// OTLP/gRPC listener.
    pub grpc: tokio::net::TcpListener,
    /// Request size cap.
    pub max_request_bytes: usize,
}

/// Binds 127.0.0.1:`http_port` and 127.0.0.1:`grpc_port`.
pub async fn bind(config: &Config) -> Result<BoundReceivers, ReceiveError> {
    let http_addr = SocketAddr::from(([127, 0, 0, 1], config.http_port));
    let grpc_addr = SocketAddr::from(([127, 0, 0, 1], config.grpc_port));
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| ReceiveError::Bind {
            addr: http_addr,
            what: "OTLP/HTTP",
            source,
        })?;
    let grpc = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .map_err(|source| ReceiveError::Bind {
            addr: grpc_addr,
            what: "OTLP/gRPC",
            source,
        })?;
    Ok(BoundReceivers {
        http,
        grpc,
        max_request_bytes: config.max_request_bytes,
    })
}

impl BoundReceivers {
    /// Serves until `cancel` fires, pushing decoded spans into `buffer`. The servers' tasks are
    /// spawned into `tasks`; after cancellation they finish in-flight requests and return.
    pub fn serve(self, buffer: BufferHandle, cancel: CancellationToken, tasks: &mut JoinSet<()>) {
        let _ = (self, buffer, cancel, tasks);
    }
}
