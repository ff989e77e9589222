//! Whether the extension is there, decided before anything is set: which of its listeners the
//! wrapper asks, in which order, and what the answers mean. Pure; the probe is injected.
//!
//! ```text
//! OTEL_XRAY_PROXY on:   GET /otel-xray/health on the Runtime API proxy ─ otel-xray ─▶ Proxy
//!                        (127.0.0.1:OTEL_XRAY_PROXY_PORT)
//!                          │ anything else
//!                          ▼
//! OTEL_XRAY_PROXY=false: GET /otel-xray/health on the OTLP/HTTP receiver ─ otel-xray ─▶ Receiver
//!                        (127.0.0.1:OTEL_XRAY_HTTP_PORT)
//!                          │ anything else
//!                          ▼
//!                        Absent: the runtime starts as if the layer were not there
//! ```
//!
//! The extension binds both listeners before it registers, and Lambda starts the runtime (and so
//! this wrapper) only after every extension has registered: a listener that is on is listening
//! by the time we probe. An extension that crashed, failed to start, lost both ports to other
//! processes, or runs as a pass-through (a configuration that leaves it nothing to do) answers
//! neither. The receiver is asked after a proxy that does not answer, so a taken proxy port
//! costs the invocation spans of the proxy, not the function's traces.

use crate::probe::ProbeError;

/// The proxy's default port (`OTEL_XRAY_PROXY_PORT`).
pub const DEFAULT_PROXY_PORT: u16 = 9009;
/// The OTLP/HTTP receiver's default port (`OTEL_XRAY_HTTP_PORT`).
pub const DEFAULT_HTTP_PORT: u16 = 4318;

/// What the wrapper does about the proxy, decided from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyChoice {
    /// `OTEL_XRAY_PROXY=false`: the extension runs no proxy; leave `AWS_LAMBDA_RUNTIME_API`
    /// alone without probing.
    Off,
    /// Probe 127.0.0.1 on this port.
    Probe(u16),
}

/// Reads `OTEL_XRAY_PROXY` and `OTEL_XRAY_PROXY_PORT`; a malformed value is noted and replaced by
/// its default, as the extension does.
pub fn choice(get: &dyn Fn(&str) -> Option<String>, notes: &mut Vec<String>) -> ProxyChoice {
    if let Some(raw) = get("OTEL_XRAY_PROXY") {
        match crate::values::parse_bool(&raw) {
            Some(false) => return ProxyChoice::Off,
            Some(true) => {}
            None => notes.push(format!(
                "OTEL_XRAY_PROXY={raw:?} is not true or false; using true"
            )),
        }
    }
    ProxyChoice::Probe(crate::values::port(
        get,
        "OTEL_XRAY_PROXY_PORT",
        DEFAULT_PROXY_PORT,
        notes,
    ))
}

/// What answered as otel-xray.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// The Runtime API proxy on this port: the extension is up and the runtime may go through it.
    Proxy(u16),
    /// The OTLP/HTTP receiver; the proxy is off (`None`) or did not answer (why).
    Receiver(Option<ProbeError>),
    /// Nothing of otel-xray: why the proxy (`None`: off) and the receiver did not answer.
    Absent {
        /// The proxy's probe error, `None` when the proxy is off.
        proxy: Option<ProbeError>,
        /// The receiver's probe error.
        receiver: ProbeError,
    },
}

/// Probes as drawn above: at most two probes, each bounded (`probe.rs`).
pub fn detect(
    proxy: ProxyChoice,
    http_port: u16,
    probe: &dyn Fn(u16) -> Result<(), ProbeError>,
) -> Presence {
    let proxy = match proxy {
        ProxyChoice::Off => None,
        ProxyChoice::Probe(port) => match probe(port) {
            Ok(()) => return Presence::Proxy(port),
            Err(e) => Some((port, e)),
        },
    };
    let proxy_error = proxy.map(|(_, e)| e);
    match probe(http_port) {
        Ok(()) => Presence::Receiver(proxy_error),
        Err(receiver) => Presence::Absent {
            proxy: proxy_error,
            receiver,
        },
    }
}

impl Presence {
    /// For [`Presence::Absent`]: what each probe found, for the start of the log line
    /// (`Runtime API proxy not used (…), OTLP/HTTP receiver not answering (…)`).
    pub fn absence_reason(&self) -> Option<String> {
        let Self::Absent { proxy, receiver } = self else {
            return None;
        };
        Some(match proxy {
            Some(proxy) => format!(
                "Runtime API proxy not used ({proxy}), OTLP/HTTP receiver not answering ({receiver})"
            ),
            None => format!(
                "OTLP/HTTP receiver not answering ({receiver}), Runtime API proxy off (OTEL_XRAY_PROXY=false)"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    fn choose(env: &[(&str, &str)]) -> (ProxyChoice, Vec<String>) {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let mut notes = Vec::new();
        (choice(&|k| map.get(k).cloned(), &mut notes), notes)
    }

    #[test]
    fn choice_reads_switch_and_port() {
        assert_eq!(choose(&[]), (ProxyChoice::Probe(9009), vec![]));
        assert_eq!(
            choose(&[("OTEL_XRAY_PROXY_PORT", "9100")]).0,
            ProxyChoice::Probe(9100)
        );
        assert_eq!(choose(&[("OTEL_XRAY_PROXY", "false")]).0, ProxyChoice::Off);
        assert_eq!(choose(&[("OTEL_XRAY_PROXY", " OFF ")]).0, ProxyChoice::Off);
        assert_eq!(
            choose(&[("OTEL_XRAY_PROXY", "TRUE")]),
            (ProxyChoice::Probe(9009), vec![])
        );
        let (c, notes) = choose(&[("OTEL_XRAY_PROXY", "maybe"), ("OTEL_XRAY_PROXY_PORT", "0")]);
        assert_eq!(c, ProxyChoice::Probe(9009));
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    fn refused(port: u16) -> ProbeError {
        ProbeError::Refused(format!("connect 127.0.0.1:{port}: refused"))
    }

    /// Runs `detect` against listeners that answer as otel-xray on `ours`, and records the
    /// ports probed, in order.
    fn detect_with(proxy: ProxyChoice, http_port: u16, ours: &[u16]) -> (Presence, Vec<u16>) {
        let probed = RefCell::new(Vec::new());
        let presence = detect(proxy, http_port, &|port| {
            probed.borrow_mut().push(port);
            if ours.contains(&port) {
                Ok(())
            } else {
                Err(refused(port))
            }
        });
        (presence, probed.into_inner())
    }

    #[test]
    fn the_proxy_answering_settles_it_in_one_probe() {
        let (p, probed) = detect_with(ProxyChoice::Probe(9009), 4318, &[9009, 4318]);
        assert_eq!(p, Presence::Proxy(9009));
        assert_eq!(probed, [9009]);
        assert_eq!(p.absence_reason(), None);
    }

    #[test]
    fn a_silent_proxy_falls_back_to_the_receiver() {
        let (p, probed) = detect_with(ProxyChoice::Probe(9009), 4318, &[4318]);
        assert_eq!(p, Presence::Receiver(Some(refused(9009))));
        assert_eq!(probed, [9009, 4318]);
    }

    #[test]
    fn proxy_off_asks_the_receiver_only() {
        let (p, probed) = detect_with(ProxyChoice::Off, 5318, &[5318, 9009]);
        assert_eq!(p, Presence::Receiver(None));
        assert_eq!(probed, [5318]);
        let (p, probed) = detect_with(ProxyChoice::Off, 5318, &[9009]);
        assert_eq!(
            p,
            Presence::Absent {
                proxy: None,
                receiver: refused(5318)
            }
        );
        assert_eq!(probed, [5318]);
        let reason = p.absence_reason().unwrap();
        assert!(reason.contains("127.0.0.1:5318"), "{reason}");
        assert!(reason.contains("OTEL_XRAY_PROXY=false"), "{reason}");
    }

    #[test]
    fn nothing_answering_is_absent_with_both_reasons() {
        let (p, probed) = detect_with(ProxyChoice::Probe(9100), 4318, &[]);
        assert_eq!(probed, [9100, 4318]);
        let reason = p.absence_reason().unwrap();
        assert!(
            reason.starts_with("Runtime API proxy not used (connect 127.0.0.1:9100"),
            "{reason}"
        );
        assert!(
            reason.contains("OTLP/HTTP receiver not answering (connect 127.0.0.1:4318"),
            "{reason}"
        );
        // Another server on both ports is not otel-xray either.
        let p = detect(ProxyChoice::Probe(9009), 4318, &|_| {
            Err(ProbeError::NotOurs("status line \"HTTP/1.1 501\"".into()))
        });
        assert!(matches!(
            p,
            Presence::Absent {
                proxy: Some(ProbeError::NotOurs(_)),
                receiver: ProbeError::NotOurs(_)
            }
        ));
    }
}
