//! The X-Ray daemon exporter: one UDP datagram per document, `{"format": "json", "version": 1}\n`
//! followed by the document, to `AWS_XRAY_DAEMON_ADDRESS` (Lambda runs the daemon when active
//! tracing is on). Datagrams leave up to 64 at a time with the `sendmmsg` system call itself
//! (rustix; musl's `sendmmsg` on 64-bit targets is a loop of `sendmsg` calls: docs/performance.md,
//! "Daemon exporter"), each still accounted for on its own.
//!
//! The socket is bound once, on the first export, and connected to the daemon: on a connected
//! UDP socket the kernel reports an ICMP "port unreachable" as an error on a later send, so a
//! missing daemon shows up in the counters instead of vanishing silently. Sends are
//! non-blocking (tokio) and bounded by the deadline.

use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, sendmmsg};
use tokio::io::Interest;
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
        // Header and document go out as two slices of one datagram: nothing is copied.
        let mut pending: Vec<&Document> = Vec::with_capacity(documents.len());
        for doc in documents {
            if doc.json.len() > MAX_DOCUMENT_BYTES {
                self.too_large(&mut report, doc);
            } else {
                pending.push(doc);
            }
        }
        let datagrams: Vec<[IoSlice<'_>; 2]> = pending
            .iter()
            .map(|doc| [IoSlice::new(HEADER), IoSlice::new(doc.json.as_bytes())])
            .collect();
        let mut batch = Batch::default();
        // The first datagram goes alone, and after any error one at a time: the kernel reports
        // an ICMP "port unreachable" (no daemon) on the next call, not within a batch, so a
        // missing daemon is still noticed after one datagram, as with one send per datagram.
        let mut size = 1;
        let mut failed = false;
        let mut next = 0;
        while next < datagrams.len() {
            let end = (next + size).min(datagrams.len());
            let sent =
                tokio::time::timeout_at(deadline, batch.send(socket, &datagrams[next..end])).await;
            match sent {
                Ok(Ok(lengths)) if !lengths.is_empty() => {
                    for (doc, &n) in pending[next..].iter().zip(lengths) {
                        let len = HEADER.len() + doc.json.len();
                        if n == len {
                            report.exported += doc.spans;
                        } else {
                            report.add_dropped(DropReason::ExportFailed, doc.spans);
                            report.errors += 1;
                            log_failure!(
                                self.causes,
                                "daemon",
                                "short datagram",
                                doc.spans,
                                format_args!("sent {n} of {len} bytes")
                            );
                        }
                    }
                    next += lengths.len();
                    if !failed {
                        size = BATCH;
                    }
                }
                Ok(result) => {
                    // The kernel reports an error on the first datagram it could not send; the
                    // ones before it went out (counted above, in an earlier call).
                    let error = match result {
                        Err(e) => e,
                        Ok(_) => std::io::Error::other("no datagram sent"),
                    };
                    let doc = pending[next];
                    next += 1;
                    failed = true;
                    size = 1;
                    if error.raw_os_error() == Some(rustix::io::Errno::MSGSIZE.raw_os_error()) {
                        self.too_large(&mut report, doc);
                        continue;
                    }
                    report.add_dropped(DropReason::ExportFailed, doc.spans);
                    report.errors += 1;
                    log_failure!(
                        self.causes,
                        "daemon",
                        format!("udp send: {}", error.kind()),
                        doc.spans,
                        error
                    );
                }
                Err(_) => {
                    let rest: usize = pending[next..].iter().map(|d| d.spans).sum();
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

    fn too_large(&self, report: &mut ExportReport, doc: &Document) {
        report.add_dropped(DropReason::TooLarge, doc.spans);
        log_failure!(
            self.causes,
            "daemon",
            "document larger than a datagram",
            doc.spans,
            format_args!("{} bytes, id {}", doc.json.len(), doc.id)
        );
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

/// Datagrams handed to the kernel in one `sendmmsg` call.
const BATCH: usize = 64;

/// The bytes sent of each datagram the last `sendmmsg` call sent. (The message headers hold
/// pointers into the datagrams: they are built inside each call instead of living across an
/// `await`.)
struct Batch {
    sent: [usize; BATCH],
}

impl Default for Batch {
    fn default() -> Self {
        Batch { sent: [0; BATCH] }
    }
}

impl Batch {
    /// Sends up to [`BATCH`] datagrams with one `sendmmsg`, waiting until the socket is
    /// writable. Returns the bytes sent of each datagram that went out, in order (a prefix of
    /// `datagrams`), or the error of the first datagram when none did.
    async fn send(
        &mut self,
        socket: &UdpSocket,
        datagrams: &[[IoSlice<'_>; 2]],
    ) -> std::io::Result<&[usize]> {
        let datagrams = &datagrams[..datagrams.len().min(BATCH)];
        loop {
            socket.writable().await?;
            let sent = &mut self.sent;
            let result = socket.try_io(Interest::WRITABLE, || {
                // No ancillary data; the socket is connected, so no addresses either.
                let mut controls: [SendAncillaryBuffer<'_, '_, '_>; BATCH] =
                    std::array::from_fn(|_| SendAncillaryBuffer::default());
                let mut headers: Vec<MMsgHdr<'_>> = datagrams
                    .iter()
                    .zip(controls.iter_mut())
                    .map(|(datagram, control)| MMsgHdr::new(datagram, control))
                    .collect();
                let n = sendmmsg(socket, &mut headers, SendFlags::empty())
                    .map_err(std::io::Error::from)?;
                for (slot, header) in sent.iter_mut().zip(&headers[..n]) {
                    *slot = header.bytes_sent();
                }
                Ok(n)
            });
            match result {
                Ok(n) => return Ok(&self.sent[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
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
