//! The Lambda APIs the extension talks to.
//!
//! - [`extensions_api`]: register, `event/next` (INVOKE / SHUTDOWN), `init/error`, `exit/error`;
//! - [`telemetry`]: the Telemetry API subscription, the listener Lambda delivers platform events
//!   to, and the typed events;
//! - [`platform_spans`]: invocation and init spans built from those events (pure);
//! - [`invocation`]: end-of-invocation signals (Telemetry API or the Runtime API proxy);
//! - [`trace_header`]: the X-Ray trace header;
//! - [`runtime_proxy`]: the Runtime API proxy between the function's runtime and Lambda;
//! - [`event_context`]: the context an invocation arrives with (pure);
//! - [`invocation_span`]: the proxy's invocation spans (pure) and their merge with the
//!   function's own.

pub mod event_context;
pub mod extensions_api;
pub mod invocation;
pub mod invocation_span;
pub mod platform_spans;
pub mod runtime_proxy;
pub mod telemetry;
pub mod trace_header;

pub use invocation::{EndSource, InvocationEnd, InvocationEndSender};
