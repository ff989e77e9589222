//! `local-lambda`: run a local Lambda sandbox and serve its control API (see
//! `local_lambda::control`). Prints one JSON line with the addresses, then serves until
//! `POST /shutdown`, SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use local_lambda::control::Control;
use local_lambda::{Config, InitOutcome, LocalLambda};
use tokio::sync::{Notify, watch};

const USAGE: &str = "usage: local-lambda [--layer DIR] [--runtime-cmd 'CMD ARGS'] [--env K=V]... \
[--extension-env K=V]... [--function-name NAME] [--handler H] [--timeout-ms N] [--init-timeout-ms N] \
[--memory-mb N] [--region R] [--account-id ID] [--active-tracing] [--freeze] [--managed-instances N] [--control-port N] \
[--api-port N] [--log-dir DIR] [--echo] [--inherit-env] [--lazy-init] [--telemetry-delay-ms N] \
[--telemetry-twice] [--telemetry-never] [--telemetry-attempts N] [-- RUNTIME ARGS...]";

fn kv(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s.split_once('=').context("expected K=V")?;
    Ok((k.to_owned(), v.to_owned()))
}

fn parse(args: Vec<String>) -> anyhow::Result<(Config, u16)> {
    let mut cfg = Config::default();
    let mut control_port = 0u16;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--layer" => cfg.layer_dir = Some(PathBuf::from(val("--layer")?)),
            "--runtime-cmd" => {
                cfg.runtime_cmd = val("--runtime-cmd")?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            }
            "--env" => cfg.env.push(kv(&val("--env")?)?),
            "--extension-env" => cfg.extension_env.push(kv(&val("--extension-env")?)?),
            "--function-name" => cfg.function_name = val("--function-name")?,
            "--handler" => cfg.handler = val("--handler")?,
            "--timeout-ms" => cfg.timeout = Duration::from_millis(val("--timeout-ms")?.parse()?),
            "--init-timeout-ms" => {
                cfg.init_timeout = Duration::from_millis(val("--init-timeout-ms")?.parse()?)
            }
            "--memory-mb" => cfg.memory_mb = val("--memory-mb")?.parse()?,
            "--region" => cfg.region = val("--region")?,
            "--account-id" => cfg.account_id = val("--account-id")?,
            "--active-tracing" => cfg.active_tracing = true,
            "--freeze" => cfg.freeze = true,
            // Lambda Managed Instances, selected as Lambda does: through the function's environment.
            "--managed-instances" => {
                let n: u32 = val("--managed-instances")?.parse()?;
                if n == 0 {
                    bail!("--managed-instances needs a concurrency of at least 1");
                }
                cfg.env.push((
                    local_lambda::managed::INITIALIZATION_TYPE_VAR.to_owned(),
                    local_lambda::managed::INITIALIZATION_TYPE.to_owned(),
                ));
                cfg.env.push((
                    local_lambda::managed::MAX_CONCURRENCY_VAR.to_owned(),
                    n.to_string(),
                ));
            }
            "--control-port" => control_port = val("--control-port")?.parse()?,
            "--api-port" => {
                let port: u16 = val("--api-port")?.parse()?;
                cfg.api_addr = SocketAddr::from(([127, 0, 0, 1], port));
            }
            "--log-dir" => cfg.log_dir = Some(PathBuf::from(val("--log-dir")?)),
            "--echo" => cfg.echo_output = true,
            "--inherit-env" => cfg.inherit_env = true,
            "--lazy-init" => cfg.eager_init = false,
            "--telemetry-delay-ms" => {
                cfg.telemetry.delay = Duration::from_millis(val("--telemetry-delay-ms")?.parse()?)
            }
            "--telemetry-twice" => cfg.telemetry.deliver_twice = true,
            "--telemetry-never" => cfg.telemetry.never_deliver = true,
            "--telemetry-attempts" => {
                cfg.telemetry.max_attempts = val("--telemetry-attempts")?.parse()?
            }
            "--" => {
                cfg.runtime_cmd = it.by_ref().collect();
            }
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if cfg.runtime_cmd.is_empty() {
        bail!("no runtime command (--runtime-cmd or -- CMD ARGS)\n{USAGE}");
    }
    Ok((cfg, control_port))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCAL_LAMBDA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let (cfg, control_port) = parse(std::env::args().skip(1).collect())?;
    let lambda = Arc::new(LocalLambda::start(cfg).await?);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], control_port)))
        .await
        .context("binding the control API")?;
    let control_addr = listener.local_addr()?;
    let exit = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    local_lambda::http::serve(
        listener,
        Arc::new(Control {
            lambda: Arc::clone(&lambda),
            exit: Arc::clone(&exit),
        }),
        stop_rx,
    );
    let init = match lambda.init_outcome() {
        Some(InitOutcome::Ready(ms)) => serde_json::json!({"status": "success", "durationMs": ms}),
        Some(InitOutcome::Failed {
            status,
            error_type,
            message,
        }) => {
            serde_json::json!({"status": status.as_str(), "errorType": error_type, "message": message})
        }
        None => serde_json::Value::Null,
    };
    let line = serde_json::json!({
        "control": format!("http://{control_addr}"),
        "runtimeApi": lambda.runtime_api().to_string(),
        "logDir": lambda.log_dir().display().to_string(),
        "init": init,
        "maxConcurrency": lambda.managed_instances().map(|m| m.max_concurrency),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = exit.notified() => {
            // Let the /shutdown response go out.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        _ = tokio::signal::ctrl_c() => { let _ = lambda.shutdown().await; }
        _ = term.recv() => { let _ = lambda.shutdown().await; }
    }
    let _ = stop_tx.send(true);
    Ok(())
}
