//! The X-Ray daemon exporter: one UDP datagram per document, `{"format": "json", "version": 1}\n`
//! followed by the document, to `AWS_XRAY_DAEMON_ADDRESS` (Lambda runs the daemon when active
//! tracing is on).
//!
//! The socket is bound once, on the first export, and connected to the daemon: on a connected
//! UDP socket the kernel reports an ICMP "port unreachable" as an error on a later send, so a
//! missing daemon shows up in the counters instead of vanishing silently. Sends are
//! non-blocking (tokio) and bounded by the deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{Causes, ExportReport, log_failure};
use crate::stats::DropReason;
use crate::xray::Document;

/// The header line of every datagram.
pub const HEADER: &[u8] = b"{\"format\": \"json\", \"version\": 1}\n";

/// Largest UDP payload over IPv4 (65,535 − 8 UDP − 20 IP header bytes). The daemon reads up to
/// 64 KiB, so this is the binding limit.
pub const MAX_DATAGRAM_BYTES: usize = 65_507;

/// Largest document that fits in one datagram with [`HEADER`].
pub const MAX_DOCUMENT_BYTES: usize = MAX_DATAGRAM_BYTES - HEADER.len();

/// Sends documents to the X-Ray daemon over UDP.
#[derive(Debug)]
pub struct DaemonExporter {
    addr: SocketAddr,
    socket: OnceCell<UdpSocket>,
    causes: Causes,
}

impl DaemonExporter {
    /// An exporter for the daemon at `addr`; binds nothing yet.
    pub fn new(addr: SocketAddr) -> Self {
        DaemonExporter {
            addr,
            socket: OnceCell::new(),
            causes: Causes::default(),
        }
    }

    /// The daemon's address.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one datagram per document. Never blocks past `deadline`.
    pub async fn send(&self, documents: &[Document], deadline: Instant) -> ExportReport {
        let mut report = ExportReport::default();
        if documents.is_empty() {
            return report;
        }
        let socket = match self.socket().await {
            Ok(s) => s,
            Err(e) => {
                let spans = documents.iter().map(|d| d.spans).sum();
                report.add_dropped(DropReason::ExportFailed, spans);
                report.errors += 1;
                log_failure!(
                    self.causes,
                    "daemon",
                    format!("udp socket: {}", e.kind()),
                    spans,
                    e
                );
                return report;
            }
        };
        let mut datagram = Vec::with_capacity(MAX_DATAGRAM_BYTES);
        for (i, doc) in documents.iter().enumerate() {
            if doc.json.len() > MAX_DOCUMENT_BYTES {
                report.add_dropped(DropReason::TooLarge, doc.spans);
                log_failure!(
                    self.causes,
                    "daemon",
                    "document larger than a datagram",
                    doc.spans,
                    format_args!("{} bytes, id {}", doc.json.len(), doc.id)
                );
                continue;
            }
            datagram.clear();
            datagram.extend_from_slice(HEADER);
            datagram.extend_from_slice(doc.json.as_bytes());
            match tokio::time::timeout_at(deadline, socket.send(&datagram)).await {
                Ok(Ok(n)) if n == datagram.len() => report.exported += doc.spans,
                Ok(Ok(n)) => {
                    report.add_dropped(DropReason::ExportFailed, doc.spans);
                    report.errors += 1;
                    log_failure!(
                        self.causes,
                        "daemon",
                        "short datagram",
                        doc.spans,
                        format_args!("sent {n} of {} bytes", datagram.len())
                    );
                }
                Ok(Err(e)) => {
                    report.add_dropped(DropReason::ExportFailed, doc.spans);
                    report.errors += 1;
                    log_failure!(
                        self.causes,
                        "daemon",
                        format!("udp send: {}", e.kind()),
                        doc.spans,
                        e
                    );
                }
                Err(_) => {
                    let rest: usize = documents[i..].iter().map(|d| d.spans).sum();
                    report.add_dropped(DropReason::ExportTimeout, rest);
                    report.errors += 1;
                    log_failure!(
                        self.causes,
                        "daemon",
                        "udp send: deadline",
                        rest,
                        "the socket stayed unwritable until the deadline"
                    );
                    break;
                }
            }
        }
        report
    }

    /// The failure causes logged so far.
    pub fn logged_causes(&self) -> Vec<String> {
        self.causes.logged()
    }

    async fn socket(&self) -> std::io::Result<&UdpSocket> {
        let addr = self.addr;
        self.socket
            .get_or_try_init(|| async move {
                let socket = UdpSocket::bind(local_address(addr)).await?;
                socket.connect(addr).await?;
                tracing::debug!(daemon = %addr, local = ?socket.local_addr().ok(), "udp socket ready");
                Ok(socket)
            })
            .await
    }
}

/// Where to bind the sending socket: loopback for a loopback daemon (nothing else on the machine
/// can reach it then), otherwise any address of the daemon's family (Lambda's daemon listens on
/// a link-local address).
fn local_address(daemon: SocketAddr) -> SocketAddr {
    let ip = match daemon.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_limits() {
        assert_eq!(HEADER.len(), 33);
        assert_eq!(MAX_DOCUMENT_BYTES + HEADER.len(), 65_507);
        let v: serde_json::Value =
            serde_json::from_slice(&HEADER[..HEADER.len() - 1]).unwrap_or_default();
        assert_eq!(v["format"], "json");
        assert_eq!(v["version"], 1);
    }

    #[test]
    fn binds_loopback_for_a_loopback_daemon() {
        let local = local_address("127.0.0.1:2000".parse().unwrap());
        assert_eq!(local, "127.0.0.1:0".parse().unwrap());
        let local = local_address("169.254.79.129:2000".parse().unwrap());
        assert_eq!(local, "0.0.0.0:0".parse().unwrap());
        let local = local_address("[::1]:2000".parse().unwrap());
        assert_eq!(local, "[::1]:0".parse().unwrap());
    }
}
