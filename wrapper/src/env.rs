//! The environment the runtime gets: pure, from an injected lookup, so it is tested without
//! touching the process environment.

use std::ffi::OsString;

use crate::instrument::{self, Fs, Runtime};
use crate::proxy::{self, ProbeError, ProxyChoice};

/// What the wrapper will do: exec `argv` with `set` added to its environment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The command to exec: the runtime's own, unchanged (every handoff goes through the
    /// environment, so the runtime starts once).
    pub argv: Vec<OsString>,
    /// Variables to set for the runtime.
    pub set: Vec<(String, String)>,
    /// Lines to log once.
    pub notes: Vec<String>,
}

const DEFAULT_HTTP_PORT: u16 = 4318;

/// `true`/`false` the way the extension reads them (`1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A port from `name`, or `default` (noted) when it is malformed.
pub fn port(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: u16,
    notes: &mut Vec<String>,
) -> u16 {
    match get(name) {
        None => default,
        Some(raw) => match raw.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                notes.push(format!("{name}={raw:?} is not a port; using {default}"));
                default
            }
        },
    }
}

/// Decides the runtime's environment. `get` reads the current environment, `fs` the disk (to
/// find the X-Ray propagator and auto-instrumentation the function ships), `probe` asks the
/// Runtime API proxy on a port whether it is there.
pub fn plan(
    get: &dyn Fn(&str) -> Option<String>,
    program: &OsString,
    args: &[OsString],
    fs: &dyn Fs,
    probe: &dyn Fn(u16) -> Result<(), ProbeError>,
) -> Plan {
    let mut plan = Plan {
        argv: std::iter::once(program.clone())
            .chain(args.iter().cloned())
            .collect(),
        ..Plan::default()
    };
    let is_set = |k: &str| get(k).is_some_and(|v| !v.trim().is_empty());
    let runtime = instrument::runtime(get, &program.to_string_lossy(), args);

    let port = port(
        get,
        "OTEL_XRAY_HTTP_PORT",
        DEFAULT_HTTP_PORT,
        &mut plan.notes,
    );

    // The SDK exports to the extension over OTLP/HTTP protobuf, unless the user chose otherwise.
    if !is_set("OTEL_EXPORTER_OTLP_ENDPOINT") && !is_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        plan.set.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{port}"),
        ));
        if !is_set("OTEL_EXPORTER_OTLP_PROTOCOL") && !is_set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            plan.set
                .push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()));
        }
        // That endpoint is the extension, which receives traces only: an SDK configured from
        // the environment (auto-instrumentation, distros) would otherwise export metrics and
        // logs there every interval and get 404s. Not where the user chose an exporter or an
        // endpoint for the signal.
        for (signal, exporter) in [
            ("METRICS", "OTEL_METRICS_EXPORTER"),
            ("LOGS", "OTEL_LOGS_EXPORTER"),
        ] {
            if !is_set(exporter) && !is_set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")) {
                plan.set.push((exporter.into(), "none".into()));
            }
        }
    }

    if !is_set("OTEL_PROPAGATORS") {
        // Python's SDK refuses to import when a named propagator is not installed, which would
        // break the function: name `xray` only where its package can be found.
        let python = runtime == Runtime::Python;
        if python && !python_has_xray_propagator(get, fs) {
            plan.set
                .push(("OTEL_PROPAGATORS".into(), "tracecontext,baggage".into()));
            plan.notes.push(
                "opentelemetry-propagator-aws-xray not found for this Python function: \
                 propagating tracecontext and baggage only"
                    .into(),
            );
        } else {
            plan.set.push((
                "OTEL_PROPAGATORS".into(),
                "tracecontext,baggage,xray".into(),
            ));
        }
    }

    if !is_set("OTEL_SERVICE_NAME")
        && let Some(name) = get("AWS_LAMBDA_FUNCTION_NAME").filter(|v| !v.is_empty())
    {
        plan.set.push(("OTEL_SERVICE_NAME".into(), name));
    }

    let merged = merge_resource_attributes(get("OTEL_RESOURCE_ATTRIBUTES"), &lambda_resource(get));
    if let Some(merged) = merged {
        plan.set.push(("OTEL_RESOURCE_ATTRIBUTES".into(), merged));
    }

    let handoff = instrument::handoff(get, runtime, fs, &mut plan.notes);
    plan.set.extend(handoff);

    // The Runtime API through the extension's proxy, when it answers as otel-xray.
    if let ProxyChoice::Probe(proxy_port) = proxy::choice(get, &mut plan.notes) {
        match probe(proxy_port) {
            Ok(()) => plan.set.push((
                "AWS_LAMBDA_RUNTIME_API".into(),
                format!("127.0.0.1:{proxy_port}"),
            )),
            Err(e) => plan.notes.push(format!(
                "Runtime API proxy not used ({e}); AWS_LAMBDA_RUNTIME_API left as Lambda set it"
            )),
        }
    }
    plan
}

/// The FaaS semantic-convention resource attributes Lambda's environment tells us.
fn lambda_resource(get: &dyn Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    let mut attrs = vec![
        ("cloud.provider", "aws".to_owned()),
        ("cloud.platform", "aws_lambda".to_owned()),
    ];
    let mut add = |key: &'static str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            attrs.push((key, v));
        }
    };
    add("cloud.region", get("AWS_REGION"));
    add("faas.name", get("AWS_LAMBDA_FUNCTION_NAME"));
    add("faas.version", get("AWS_LAMBDA_FUNCTION_VERSION"));
    add("faas.instance", get("AWS_LAMBDA_LOG_STREAM_NAME"));
    add(
        "faas.max_memory",
        get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .and_then(|mb| mb.trim().parse::<u64>().ok())
            .map(|mb| (mb * 1024 * 1024).to_string()),
    );
    add("aws.log.group.names", get("AWS_LAMBDA_LOG_GROUP_NAME"));
    attrs
}

/// The user's attributes win; ours fill in the keys the user did not set.
fn merge_resource_attributes(
    user: Option<String>,
    ours: &[(&'static str, String)],
) -> Option<String> {
    let user = user.unwrap_or_default();
    let user_keys: Vec<&str> = user
        .split(',')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let mut parts: Vec<String> = user
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let before = parts.len();
    for (k, v) in ours {
        if !user_keys.contains(k) {
            parts.push(format!("{k}={}", encode_value(v)));
        }
    }
    (parts.len() != before).then(|| parts.join(","))
}

/// Percent-encodes the characters that would break the `k=v,k2=v2` format.
fn encode_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            ',' | '=' | '%' | ' ' | ';' | '"' | '\\' => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn python_has_xray_propagator(get: &dyn Fn(&str) -> Option<String>, fs: &dyn Fs) -> bool {
    instrument::python_dirs(get, fs).iter().any(|d| {
        fs.exists(&format!(
            "{d}/opentelemetry/propagators/aws/aws_xray_propagator.py"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Files that exist, and what `list_dir` shows.
    struct FakeFs {
        files: Vec<String>,
    }

    impl Fs for FakeFs {
        fn exists(&self, path: &str) -> bool {
            self.files.iter().any(|f| f == path)
        }
        fn list_dir(&self, path: &str) -> Vec<String> {
            let prefix = format!("{path}/");
            let mut names: Vec<String> = self
                .files
                .iter()
                .filter_map(|f| f.strip_prefix(&prefix))
                .filter_map(|rest| rest.split('/').next())
                .map(str::to_owned)
                .collect();
            names.dedup();
            names
        }
    }

    fn run_full(
        env: &[(&str, &str)],
        argv: &[&str],
        existing: &[&str],
        probe: &dyn Fn(u16) -> Result<(), ProbeError>,
    ) -> Plan {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let fs = FakeFs {
            files: existing.iter().map(|s| (*s).to_owned()).collect(),
        };
        let args: Vec<OsString> = argv[1..].iter().map(OsString::from).collect();
        let p = plan(
            &|k| map.get(k).cloned(),
            &OsString::from(argv[0]),
            &args,
            &fs,
            probe,
        );
        let want: Vec<OsString> = argv.iter().map(OsString::from).collect();
        assert_eq!(p.argv, want, "the runtime command is never changed");
        p
    }

    /// A proxy that answers on its default port only.
    fn proxy_on_9009(port: u16) -> Result<(), ProbeError> {
        if port == 9009 {
            Ok(())
        } else {
            Err(ProbeError::Io(format!("connect 127.0.0.1:{port}: refused")))
        }
    }

    fn run(env: &[(&str, &str)], program: &str, existing: &[&str]) -> Plan {
        run_full(env, &[program], existing, &proxy_on_9009)
    }

    fn get<'a>(p: &'a Plan, k: &str) -> Option<&'a str> {
        p.set
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn sets_defaults_for_a_bare_function() {
        let p = run(
            &[
                ("AWS_LAMBDA_FUNCTION_NAME", "orders"),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ],
            "/var/runtime/bootstrap",
            &[],
        );
        assert_eq!(
            get(&p, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(
            get(&p, "OTEL_EXPORTER_OTLP_PROTOCOL"),
            Some("http/protobuf")
        );
        assert_eq!(
            get(&p, "OTEL_PROPAGATORS"),
            Some("tracecontext,baggage,xray")
        );
        assert_eq!(get(&p, "OTEL_SERVICE_NAME"), Some("orders"));
        assert_eq!(
            get(&p, "OTEL_RESOURCE_ATTRIBUTES"),
            Some(
                "cloud.provider=aws,cloud.platform=aws_lambda,cloud.region=eu-west-1,\
                 faas.name=orders,faas.max_memory=134217728"
            )
        );
    }

    #[test]
    fn never_overrides_the_user() {
        let p = run(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_PROPAGATORS", "tracecontext"),
                ("OTEL_SERVICE_NAME", "mine"),
                ("OTEL_RESOURCE_ATTRIBUTES", "cloud.region=custom,team=a"),
                ("AWS_LAMBDA_FUNCTION_NAME", "orders"),
                ("AWS_REGION", "eu-west-1"),
            ],
            "/var/runtime/bootstrap",
            &[],
        );
        assert_eq!(get(&p, "OTEL_EXPORTER_OTLP_ENDPOINT"), None);
        assert_eq!(get(&p, "OTEL_EXPORTER_OTLP_PROTOCOL"), None);
        assert_eq!(get(&p, "OTEL_PROPAGATORS"), None);
        assert_eq!(get(&p, "OTEL_SERVICE_NAME"), None);
        assert_eq!(
            get(&p, "OTEL_RESOURCE_ATTRIBUTES"),
            Some(
                "cloud.region=custom,team=a,cloud.provider=aws,cloud.platform=aws_lambda,faas.name=orders"
            )
        );
    }

    #[test]
    fn python_without_xray_propagator_gets_w3c_only() {
        let p = run(
            &[("LAMBDA_TASK_ROOT", "/var/task")],
            "/var/lang/bin/python3.12",
            &[],
        );
        assert_eq!(get(&p, "OTEL_PROPAGATORS"), Some("tracecontext,baggage"));
        assert_eq!(p.notes.len(), 1);
        let p = run(
            &[("LAMBDA_TASK_ROOT", "/var/task")],
            "/var/lang/bin/python3.12",
            &["/var/task/opentelemetry/propagators/aws/aws_xray_propagator.py"],
        );
        assert_eq!(
            get(&p, "OTEL_PROPAGATORS"),
            Some("tracecontext,baggage,xray")
        );
    }

    #[test]
    fn metrics_and_logs_stay_off_the_traces_only_extension() {
        let p = run(&[], "/x", &[]);
        assert_eq!(get(&p, "OTEL_METRICS_EXPORTER"), Some("none"));
        assert_eq!(get(&p, "OTEL_LOGS_EXPORTER"), Some("none"));
        let p = run(
            &[
                ("OTEL_METRICS_EXPORTER", "otlp"),
                (
                    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                    "http://logs:4318/v1/logs",
                ),
            ],
            "/x",
            &[],
        );
        assert_eq!(get(&p, "OTEL_METRICS_EXPORTER"), None);
        assert_eq!(get(&p, "OTEL_LOGS_EXPORTER"), None);
        // The user's own endpoint: every signal is theirs.
        let p = run(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")],
            "/x",
            &[],
        );
        assert_eq!(get(&p, "OTEL_METRICS_EXPORTER"), None);
        assert_eq!(get(&p, "OTEL_LOGS_EXPORTER"), None);
    }

    #[test]
    fn custom_port_and_bad_port() {
        let p = run(&[("OTEL_XRAY_HTTP_PORT", "5318")], "/x", &[]);
        assert_eq!(
            get(&p, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://127.0.0.1:5318")
        );
        let p = run(&[("OTEL_XRAY_HTTP_PORT", "nope")], "/x", &[]);
        assert_eq!(
            get(&p, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(p.notes.len(), 1);
    }

    #[test]
    fn values_with_separators_are_encoded() {
        assert_eq!(encode_value("a,b=c d"), "a%2Cb%3Dc%20d");
    }

    #[test]
    fn proxy_answering_gets_the_runtime_api() {
        let p = run(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")], "/x", &[]);
        assert_eq!(get(&p, "AWS_LAMBDA_RUNTIME_API"), Some("127.0.0.1:9009"));
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }

    #[test]
    fn proxy_absent_or_off_leaves_the_runtime_api_alone() {
        // Nobody on the configured port: untouched, the reason noted once.
        let p = run(&[("OTEL_XRAY_PROXY_PORT", "9100")], "/x", &[]);
        assert_eq!(get(&p, "AWS_LAMBDA_RUNTIME_API"), None);
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("127.0.0.1:9100"), "{:?}", p.notes);
        // Switched off: not even probed.
        let probed = std::cell::Cell::new(false);
        let p = run_full(
            &[("OTEL_XRAY_PROXY", "false")],
            &["/x"],
            &[],
            &|_port: u16| {
                probed.set(true);
                Ok(())
            },
        );
        assert!(!probed.get());
        assert_eq!(get(&p, "AWS_LAMBDA_RUNTIME_API"), None);
        assert!(p.notes.is_empty());
        // Something else answers.
        let p = run_full(&[], &["/x"], &[], &|_port: u16| {
            Err(ProbeError::NotOurs("status line \"HTTP/1.1 404\"".into()))
        });
        assert_eq!(get(&p, "AWS_LAMBDA_RUNTIME_API"), None);
        assert_eq!(p.notes.len(), 1);
    }

    const PY_SITE: &str =
        "/var/task/opentelemetry/instrumentation/auto_instrumentation/sitecustomize.py";

    #[test]
    fn python_auto_instrumentation_in_the_task_root() {
        let argv = [
            "/var/lang/bin/python3.12",
            "-m",
            "awslambdaric",
            "app.handler",
        ];
        let p = run_full(
            &[
                ("LAMBDA_TASK_ROOT", "/var/task"),
                ("PYTHONPATH", "/var/runtime"),
            ],
            &argv,
            &[PY_SITE],
            &proxy_on_9009,
        );
        assert_eq!(
            get(&p, "PYTHONPATH"),
            Some(
                "/var/task/opentelemetry/instrumentation/auto_instrumentation:/var/task:/var/runtime"
            )
        );
    }

    #[test]
    fn python_auto_instrumentation_in_a_layer_site_packages() {
        let site = "/opt/python/lib/python3.12/site-packages";
        let file =
            format!("{site}/opentelemetry/instrumentation/auto_instrumentation/sitecustomize.py");
        let p = run_full(
            &[("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12")],
            &["/var/runtime/bootstrap"],
            &[&file],
            &proxy_on_9009,
        );
        assert_eq!(
            get(&p, "PYTHONPATH"),
            Some(
                format!("{site}/opentelemetry/instrumentation/auto_instrumentation:{site}")
                    .as_str()
            )
        );
        // A PYTHONPATH entry that already holds it is not repeated.
        let p = run_full(
            &[("PYTHONPATH", &format!("{site}/"))],
            &["python3"],
            &[&file],
            &proxy_on_9009,
        );
        assert_eq!(
            get(&p, "PYTHONPATH"),
            Some(
                format!("{site}/opentelemetry/instrumentation/auto_instrumentation:{site}/")
                    .as_str()
            )
        );
    }

    #[test]
    fn python_handoff_respects_the_user_and_the_switch() {
        let argv = ["python3", "-m", "awslambdaric", "app.handler"];
        let env = [("LAMBDA_TASK_ROOT", "/var/task")];
        // Not shipped: nothing.
        let p = run_full(&env, &argv, &[], &proxy_on_9009);
        assert_eq!(get(&p, "PYTHONPATH"), None);
        // Already set up by the user.
        let p = run_full(
            &[
                ("LAMBDA_TASK_ROOT", "/var/task"),
                (
                    "PYTHONPATH",
                    "/x/opentelemetry/instrumentation/auto_instrumentation",
                ),
            ],
            &argv,
            &[PY_SITE],
            &proxy_on_9009,
        );
        assert_eq!(get(&p, "PYTHONPATH"), None);
        // Switched off.
        let p = run_full(
            &[
                ("LAMBDA_TASK_ROOT", "/var/task"),
                ("OTEL_XRAY_AUTO_INSTRUMENTATION", "false"),
            ],
            &argv,
            &[PY_SITE],
            &proxy_on_9009,
        );
        assert_eq!(get(&p, "PYTHONPATH"), None);
        // A Node function with Python packages around: not Python, nothing.
        let p = run_full(
            &env,
            &["/var/lang/bin/node", "index.mjs"],
            &[PY_SITE],
            &proxy_on_9009,
        );
        assert_eq!(get(&p, "PYTHONPATH"), None);
    }

    #[test]
    fn node_auto_instrumentation_from_the_task_root_or_a_layer() {
        let argv = [
            "/var/lang/bin/node",
            "--expose-gc",
            "/var/runtime/index.mjs",
        ];
        let pkg = "/var/task/node_modules/@opentelemetry/auto-instrumentations-node/package.json";
        let p = run_full(
            &[
                ("LAMBDA_TASK_ROOT", "/var/task"),
                ("NODE_OPTIONS", "--enable-source-maps"),
            ],
            &argv,
            &[pkg],
            &proxy_on_9009,
        );
        assert_eq!(
            get(&p, "NODE_OPTIONS"),
            Some(
                "--enable-source-maps --require @opentelemetry/auto-instrumentations-node/register"
            )
        );
        assert_eq!(get(&p, "NODE_PATH"), Some("/var/task/node_modules"));
        let layer =
            "/opt/nodejs/node_modules/@opentelemetry/auto-instrumentations-node/package.json";
        let p = run_full(
            &[
                ("LAMBDA_TASK_ROOT", "/var/task"),
                (
                    "NODE_PATH",
                    "/opt/nodejs/node_modules:/var/runtime/node_modules",
                ),
            ],
            &argv,
            &[layer],
            &proxy_on_9009,
        );
        assert_eq!(
            get(&p, "NODE_OPTIONS"),
            Some("--require @opentelemetry/auto-instrumentations-node/register")
        );
        assert_eq!(get(&p, "NODE_PATH"), None, "already on NODE_PATH");
        // The user requires it already; or it is not shipped; or the switch is off.
        for (env, files) in [
            (
                vec![(
                    "NODE_OPTIONS",
                    "-r @opentelemetry/auto-instrumentations-node/register",
                )],
                vec![layer],
            ),
            (vec![], vec![]),
            (vec![("OTEL_XRAY_AUTO_INSTRUMENTATION", "0")], vec![layer]),
        ] {
            let p = run_full(&env, &argv, &files, &proxy_on_9009);
            assert_eq!(get(&p, "NODE_OPTIONS"), None, "{env:?}");
        }
    }

    #[test]
    fn java_agent_default_and_configured() {
        let argv = [
            "/var/lang/bin/java",
            "-XX:+TieredCompilation",
            "-jar",
            "x.jar",
        ];
        let p = run_full(
            &[],
            &argv,
            &["/opt/opentelemetry-javaagent.jar"],
            &proxy_on_9009,
        );
        assert_eq!(
            get(&p, "JAVA_TOOL_OPTIONS"),
            Some("-javaagent:/opt/opentelemetry-javaagent.jar")
        );
        let p = run_full(
            &[
                ("AWS_EXECUTION_ENV", "AWS_Lambda_java21"),
                ("OTEL_XRAY_JAVA_AGENT", "/opt/agents/otel.jar"),
                ("JAVA_TOOL_OPTIONS", "-Xshare:auto"),
            ],
            &["/var/runtime/bootstrap"],
            &["/opt/agents/otel.jar"],
            &proxy_on_9009,
        );
        assert_eq!(
            get(&p, "JAVA_TOOL_OPTIONS"),
            Some("-Xshare:auto -javaagent:/opt/agents/otel.jar")
        );
        // A configured jar that is missing is said once; a user's own agent is kept.
        let p = run_full(
            &[("OTEL_XRAY_JAVA_AGENT", "/nope.jar")],
            &argv,
            &[],
            &proxy_on_9009,
        );
        assert_eq!(get(&p, "JAVA_TOOL_OPTIONS"), None);
        assert_eq!(p.notes.len(), 1);
        let p = run_full(
            &[("JAVA_TOOL_OPTIONS", "-javaagent:/mine.jar")],
            &argv,
            &["/opt/opentelemetry-javaagent.jar"],
            &proxy_on_9009,
        );
        assert_eq!(get(&p, "JAVA_TOOL_OPTIONS"), None);
    }

    #[test]
    fn bad_switch_values_are_noted_and_default() {
        let p = run_full(
            &[("OTEL_XRAY_AUTO_INSTRUMENTATION", "sometimes")],
            &["java"],
            &["/opt/opentelemetry-javaagent.jar"],
            &proxy_on_9009,
        );
        assert!(get(&p, "JAVA_TOOL_OPTIONS").is_some());
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes); // the bad value, the handoff
    }
}
