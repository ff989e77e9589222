//! The Lambda APIs the extension talks to.
//!
//! - [`extensions_api`]: register, `event/next` (INVOKE / SHUTDOWN), `init/error`, `exit/error`;
//! - [`telemetry`]: the Telemetry API subscription, the listener Lambda delivers platform events
//!   to, and the typed events;
//! - [`platform_spans`]: invocation and init spans built from those events (pure);
//! - [`invocation`]: end-of-invocation signals (Telemetry API or the Runtime API proxy);
//! - [`trace_header`]: the X-Ray trace header.

pub mod extensions_api;
pub mod invocation;
pub mod platform_spans;
pub mod telemetry;
pub mod trace_header;

pub use invocation::{EndSource, InvocationEnd, InvocationEndSender};
