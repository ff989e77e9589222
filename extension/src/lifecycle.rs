//! Init, INVOKE, SHUTDOWN: the extension's life (being written).

use std::process::ExitCode;

/// Parses the environment, sets up logging and runs the extension until SHUTDOWN.
pub fn main_entry() -> ExitCode {
    match crate::config::Config::from_env() {
        Ok((config, warnings)) => {
            crate::logging::init(&config);
            for w in warnings {
                tracing::warn!("{w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("otel-xray: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
