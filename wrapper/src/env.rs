//! The environment the runtime gets: pure, from an injected lookup, disk and probe, so it is
//! tested without touching the process environment or the network.
//!
//! The probes come first (`presence.rs`) and decide the whole plan: with otel-xray answering,
//! the variables of docs/wrapper.md are set where the user has not; with nothing of otel-xray
//! answering, the runtime starts as if the layer were absent, and one line says so.

use std::ffi::OsString;

use crate::instrument::{self, Fs, Runtime};
use crate::presence::{self, DEFAULT_HTTP_PORT, Presence};
use crate::probe::ProbeError;
use crate::values::port;

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

/// The middle of the one line logged when nothing of otel-xray answers.
const ABSENT: &str =
    "the otel-xray extension is not answering, so the function runs without otel-xray";
/// Where OpenTelemetry SDKs export by default (`localhost`): OTLP/HTTP, then OTLP/gRPC.
const SDK_DEFAULT_OTLP_PORTS: [u16; 2] = [4318, 4317];

fn is_set(get: &dyn Fn(&str) -> Option<String>, name: &str) -> bool {
    get(name).is_some_and(|v| !v.trim().is_empty())
}

/// Decides the runtime's environment. `get` reads the current environment, `fs` the disk (to
/// find the X-Ray propagator and auto-instrumentation the function ships), `probe` asks
/// 127.0.0.1 on a port whether otel-xray answers its health check there.
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
    let http_port = port(
        get,
        "OTEL_XRAY_HTTP_PORT",
        DEFAULT_HTTP_PORT,
        &mut plan.notes,
    );
    let proxy = presence::choice(get, &mut plan.notes);
    let presence = presence::detect(proxy, http_port, probe);
    match &presence {
        Presence::Proxy(proxy_port) => {
            configure(get, program, args, fs, http_port, &mut plan);
            plan.set.push((
                "AWS_LAMBDA_RUNTIME_API".into(),
                format!("127.0.0.1:{proxy_port}"),
            ));
        }
        Presence::Receiver(proxy_error) => {
            configure(get, program, args, fs, http_port, &mut plan);
            if let Some(e) = proxy_error {
                plan.notes.push(format!(
                    "Runtime API proxy not used ({e}); AWS_LAMBDA_RUNTIME_API left as Lambda set it"
                ));
            }
        }
        Presence::Absent { receiver, .. } => {
            let reason = presence.absence_reason().unwrap_or_default();
            let line = if sdk_exports_can_only_fail(get, probe, http_port, receiver) {
                plan.set.push(("OTEL_SDK_DISABLED".into(), "true".into()));
                format!(
                    "{reason}: {ABSENT}, its environment untouched but for OTEL_SDK_DISABLED=true: \
                     nothing listens on 127.0.0.1:4318 or 127.0.0.1:4317, where OpenTelemetry \
                     SDKs export by default, so the SDK's exports could only fail and retry \
                     (set OTEL_SDK_DISABLED=false to keep the SDK on)"
                )
            } else {
                format!("{reason}: {ABSENT}, its environment untouched")
            };
            plan.notes.push(line);
        }
    }
    plan
}

/// With the extension answering: points the SDK at its receiver on `http_port` and sets the
/// propagators, the resource and the auto-instrumentation handoff, each where the user has not.
fn configure(
    get: &dyn Fn(&str) -> Option<String>,
    program: &OsString,
    args: &[OsString],
    fs: &dyn Fs,
    http_port: u16,
    plan: &mut Plan,
) {
    let is_set = |k: &str| is_set(get, k);
    let runtime = instrument::runtime(get, &program.to_string_lossy(), args);

    // The SDK exports to the extension over OTLP/HTTP protobuf, unless the user chose otherwise.
    if !is_set("OTEL_EXPORTER_OTLP_ENDPOINT") && !is_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        plan.set.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{http_port}"),
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
}

/// With the extension not answering: whether the function's SDK can only fail to export, so that
/// turning it off (`OTEL_SDK_DISABLED=true`) loses nothing and saves every flush its retries
/// (seconds each: docs/wrapper.md, "When the extension is not answering"). True when the user has not decided about the
/// SDK (`OTEL_SDK_DISABLED` unset), named no destination of their own (no OTLP endpoint, no
/// exporter but `otlp`/`none`, no `-Dotel.` property for the Java agent), and nobody listens on
/// the SDKs' default OTLP ports. A destination set in the function's code cannot be seen: the
/// log line names the switch that keeps the SDK on.
fn sdk_exports_can_only_fail(
    get: &dyn Fn(&str) -> Option<String>,
    probe: &dyn Fn(u16) -> Result<(), ProbeError>,
    http_port: u16,
    receiver: &ProbeError,
) -> bool {
    if is_set(get, "OTEL_SDK_DISABLED") || names_a_destination(get) {
        return false;
    }
    SDK_DEFAULT_OTLP_PORTS.iter().all(|&port| {
        if port == http_port {
            receiver.is_refused()
        } else {
            probe(port).is_err_and(|e| e.is_refused())
        }
    })
}

/// Whether the environment sends the SDK's telemetry somewhere of the user's choosing.
fn names_a_destination(get: &dyn Fn(&str) -> Option<String>) -> bool {
    let endpoint = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ]
    .iter()
    .any(|k| is_set(get, k));
    let exporter = [
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_LOGS_EXPORTER",
    ]
    .iter()
    .filter_map(|k| get(k))
    .any(|v| {
        v.split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .any(|e| !e.is_empty() && e != "otlp" && e != "none")
    });
    let java = get("JAVA_TOOL_OPTIONS").is_some_and(|o| o.contains("-Dotel."));
    endpoint || exporter || java
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

    /// The extension on its default ports: the proxy (9009) and the receiver (4318) answer as
    /// otel-xray; every other port refuses.
    fn proxy_on_9009(port: u16) -> Result<(), ProbeError> {
        listeners(&[9009, 4318], &[])(port)
    }

    /// A probe for listeners that answer as otel-xray on `ours`, as something else on `others`;
    /// nobody listens on the other ports.
    fn listeners<'a>(
        ours: &'a [u16],
        others: &'a [u16],
    ) -> impl Fn(u16) -> Result<(), ProbeError> + 'a {
        move |port| {
            if ours.contains(&port) {
                Ok(())
            } else if others.contains(&port) {
                Err(ProbeError::NotOurs(format!(
                    "status line \"HTTP/1.1 404 Not Found\" from 127.0.0.1:{port}"
                )))
            } else {
                Err(ProbeError::Refused(format!(
                    "connect 127.0.0.1:{port}: Connection refused (os error 111)"
                )))
            }
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

    /// A Python function's Lambda environment, for the plans with and without the extension.
    const LAMBDA_ENV: [(&str, &str); 4] = [
        ("AWS_LAMBDA_FUNCTION_NAME", "orders"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
    ];
    const PY_ARGV: [&str; 4] = [
        "/var/lang/bin/python3.12",
        "-m",
        "awslambdaric",
        "app.handler",
    ];

    /// The one line of a plan made without the extension.
    fn the_absent_line(p: &Plan) -> &str {
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
        let line = p.notes[0].as_str();
        assert!(
            line.contains(
                "the otel-xray extension is not answering, so the function runs without otel-xray"
            ),
            "{line}"
        );
        line
    }

    fn sdk_disabled_only(p: &Plan) {
        assert_eq!(
            p.set,
            [("OTEL_SDK_DISABLED".to_owned(), "true".to_owned())],
            "{:?}",
            p.set
        );
    }

    #[test]
    fn extension_answering_gets_the_whole_plan() {
        let p = run_full(&LAMBDA_ENV, &PY_ARGV, &[PY_SITE], &proxy_on_9009);
        for k in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_PROPAGATORS",
            "OTEL_SERVICE_NAME",
            "OTEL_RESOURCE_ATTRIBUTES",
            "PYTHONPATH",
        ] {
            assert!(get(&p, k).is_some(), "{k}: {:?}", p.set);
        }
        assert_eq!(get(&p, "AWS_LAMBDA_RUNTIME_API"), Some("127.0.0.1:9009"));
        assert_eq!(get(&p, "OTEL_SDK_DISABLED"), None);
        assert!(
            !p.notes.iter().any(|n| n.contains("not answering")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn nothing_answering_leaves_the_environment_alone() {
        // Nobody on any port: the only variable is the SDK's off switch (below).
        let p = run_full(&LAMBDA_ENV, &PY_ARGV, &[PY_SITE], &listeners(&[], &[]));
        sdk_disabled_only(&p);
        let line = the_absent_line(&p);
        assert!(
            line.starts_with(
                "Runtime API proxy not used (connect 127.0.0.1:9009: Connection refused"
            ),
            "{line}"
        );
        assert!(
            line.contains(
                "OTLP/HTTP receiver not answering (connect 127.0.0.1:4318: Connection refused"
            ),
            "{line}"
        );
        assert!(line.contains("OTEL_SDK_DISABLED=true"), "{line}");
        // Something that is not otel-xray on every port (another collector on 4318, say): not
        // even the SDK's switch, since the SDK's default endpoint may well work.
        let all = [9009, 4318, 4317];
        let p = run_full(&LAMBDA_ENV, &PY_ARGV, &[PY_SITE], &listeners(&[], &all));
        assert_eq!(p.set, [], "untouched");
        let line = the_absent_line(&p);
        assert!(line.contains("not otel-xray"), "{line}");
        assert!(line.ends_with("its environment untouched"), "{line}");
        // Only 4317 taken: the gRPC default may work, the SDK stays on.
        let p = run_full(&LAMBDA_ENV, &PY_ARGV, &[], &listeners(&[], &[4317]));
        assert_eq!(p.set, []);
    }

    #[test]
    fn the_users_own_destination_is_left_alone() {
        for (k, v) in [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.example.com:4318",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://x.example.com/v1/traces",
            ),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "https://x.example.com/v1/logs",
            ),
            ("OTEL_TRACES_EXPORTER", "console"),
            ("OTEL_METRICS_EXPORTER", "otlp,prometheus"),
            (
                "JAVA_TOOL_OPTIONS",
                "-Dotel.exporter.otlp.endpoint=https://x.example.com",
            ),
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_SDK_DISABLED", "true"),
        ] {
            let p = run_full(&[(k, v)], &PY_ARGV, &[], &listeners(&[], &[]));
            assert_eq!(p.set, [], "{k}={v}");
            the_absent_line(&p);
        }
        // `otlp` and `none` name no destination: the SDK's default endpoint is dead.
        for (k, v) in [
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_LOGS_EXPORTER", "none"),
        ] {
            let p = run_full(&[(k, v)], &PY_ARGV, &[], &listeners(&[], &[]));
            sdk_disabled_only(&p);
        }
        // With the extension answering, the user's endpoint wins as always.
        let p = run_full(
            &[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.example.com",
            )],
            &["/x"],
            &[],
            &proxy_on_9009,
        );
        assert_eq!(get(&p, "OTEL_EXPORTER_OTLP_ENDPOINT"), None);
        assert_eq!(get(&p, "AWS_LAMBDA_RUNTIME_API"), Some("127.0.0.1:9009"));
    }

    #[test]
    fn proxy_off_asks_the_receiver() {
        let probed = std::cell::RefCell::new(Vec::new());
        let receiver_on = |port: u16| {
            probed.borrow_mut().push(port);
            listeners(&[5318, 9009], &[])(port)
        };
        let env = [
            ("OTEL_XRAY_PROXY", "false"),
            ("OTEL_XRAY_HTTP_PORT", "5318"),
        ];
        let p = run_full(&env, &["/x"], &[], &receiver_on);
        assert_eq!(probed.take(), [5318], "the proxy is not probed");
        assert_eq!(
            get(&p, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://127.0.0.1:5318")
        );
        assert_eq!(get(&p, "AWS_LAMBDA_RUNTIME_API"), None);
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }

    #[test]
    fn proxy_off_and_nothing_answering() {
        let env = [
            ("OTEL_XRAY_PROXY", "false"),
            ("OTEL_XRAY_HTTP_PORT", "5318"),
        ];
        // 9009 would answer, but the proxy is off: not asked.
        let p = run_full(&env, &PY_ARGV, &[PY_SITE], &listeners(&[9009], &[]));
        sdk_disabled_only(&p); // 4318 and 4317 probed for the SDK: nobody there
        let line = the_absent_line(&p);
        assert!(
            line.starts_with("OTLP/HTTP receiver not answering (connect 127.0.0.1:5318"),
            "{line}"
        );
        assert!(
            line.contains("Runtime API proxy off (OTEL_XRAY_PROXY=false)"),
            "{line}"
        );
        assert!(!line.contains("9009"), "{line}");
    }

    #[test]
    fn a_proxy_not_answering_with_the_receiver_up_keeps_the_sdk_plan() {
        // The proxy's port taken by another server: the runtime talks to Lambda directly, the
        // SDK still exports to the extension.
        let p = run_full(
            &[("OTEL_XRAY_PROXY_PORT", "9100")],
            &["/x"],
            &[],
            &listeners(&[4318], &[9100]),
        );
        assert_eq!(
            get(&p, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(get(&p, "AWS_LAMBDA_RUNTIME_API"), None);
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
        assert!(
            p.notes[0].starts_with("Runtime API proxy not used (not otel-xray: "),
            "{:?}",
            p.notes
        );
        assert!(p.notes[0].contains("127.0.0.1:9100"), "{:?}", p.notes);
    }

    #[test]
    fn malformed_values_fall_back_to_the_defaults_for_the_probes() {
        let env = [
            ("OTEL_XRAY_HTTP_PORT", "nope"),
            ("OTEL_XRAY_PROXY", "maybe"),
            ("OTEL_XRAY_PROXY_PORT", "70000"),
        ];
        // The extension on its defaults: found there, each bad value said once.
        let p = run_full(&env, &["/x"], &[], &proxy_on_9009);
        assert_eq!(get(&p, "AWS_LAMBDA_RUNTIME_API"), Some("127.0.0.1:9009"));
        assert_eq!(
            get(&p, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(p.notes.len(), 3, "{:?}", p.notes);
        for name in [
            "OTEL_XRAY_HTTP_PORT",
            "OTEL_XRAY_PROXY",
            "OTEL_XRAY_PROXY_PORT",
        ] {
            assert!(
                p.notes.iter().any(|n| n.starts_with(name)),
                "{name}: {:?}",
                p.notes
            );
        }
        // Nothing answering: the same three, then the one line.
        let p = run_full(&env, &["/x"], &[], &listeners(&[], &[]));
        sdk_disabled_only(&p);
        assert_eq!(p.notes.len(), 4, "{:?}", p.notes);
        assert!(p.notes[3].starts_with("Runtime API proxy not used (connect 127.0.0.1:9009"));
        assert!(p.notes[3].contains("127.0.0.1:9009") && p.notes[3].contains("127.0.0.1:4318"));
        // A malformed OTEL_SDK_DISABLED is the user's decision too: left to the SDK.
        let p = run_full(
            &[("OTEL_SDK_DISABLED", "perhaps")],
            &["/x"],
            &[],
            &listeners(&[], &[]),
        );
        assert_eq!(p.set, []);
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
