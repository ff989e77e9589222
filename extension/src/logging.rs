//! Logging set-up: `tracing` to stderr (Lambda ships it to CloudWatch), text or JSON.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(config: &Config) {
    // Our own crate at the configured level; noisy dependencies only at warn and above. A
    // `Targets` filter rather than `EnvFilter`: the same rule without linking a regex engine
    // (docs/performance.md).
    let level = config
        .log_level
        .parse::<LevelFilter>()
        .unwrap_or(LevelFilter::WARN);
    let filter = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("otel_xray", level);
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    let _ = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Text => builder.without_time().finish().with(filter).try_init(),
    };
}
