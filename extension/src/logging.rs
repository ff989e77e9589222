//! Logging set-up: `tracing` to stderr (Lambda ships it to CloudWatch), text or JSON.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(config: &Config) {
    // Our own crate at the configured level; noisy dependencies only at warn and above.
    let directive = format!("warn,otel_xray={}", config.log_level);
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.without_time().try_init(),
    };
}
