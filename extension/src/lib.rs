//! otel-xray: the extension's library. `main.rs` is a thin shell around [`lifecycle::run`].
//!
//! A span's path, one file per stage:
//!
//! ```text
//! function + any OTel SDK ──OTLP──▶ receiver/ ──▶ buffer ──(flush policy)──▶ xray/translate ──▶ export/
//!                                  (http, grpc,    (one owner   (flush.rs,        (pure)          ├─ daemon (UDP)
//!                                   decode)         task)        pure + clock)                    ├─ api (PutTraceSegments, SigV4)
//!                                                     ▲                                           └─ otlp (OTLP/HTTP, SigV4 optional)
//! Lambda Extensions API ──INVOKE/SHUTDOWN──▶ lambda/ ─┤
//! Lambda Telemetry API ──platform events──▶ lambda/ ──┤ (invocation spans)
//! runtime ◀──▶ lambda/runtime_proxy ──────────────────┘ (event context, invocation span, end signal)
//! ```
//!
//! [`stats`] counts every span as received, exported or dropped (by reason).

pub mod buffer;
pub mod config;
pub mod contain;
pub mod export;
pub mod flush;
pub mod lambda;
pub mod lifecycle;
pub mod logging;
/// The OTLP protobuf reader: in `otel-xray-core` (the hot path, optimised for speed).
pub use otel_xray_core::otlp_wire;
pub mod receiver;
pub mod self_metrics;
pub mod stats;
pub mod upstream_breaker;
/// The X-Ray translator: in `otel-xray-core` (the hot path, optimised for speed).
pub use otel_xray_core::xray;

#[doc(hidden)]
pub mod fuzzing;
