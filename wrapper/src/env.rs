//! The environment the runtime gets: pure, from an injected lookup, so it is tested without
//! touching the process environment.

use std::ffi::OsString;

/// What the wrapper will do before exec.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Variables to set for the runtime.
    pub set: Vec<(String, String)>,
    /// Lines to log once.
    pub notes: Vec<String>,
}

const DEFAULT_HTTP_PORT: u16 = 4318;

/// Decides the runtime's OpenTelemetry environment. `get` reads the current environment,
/// `exists` tells whether a path exists (to find the X-Ray propagator of Python functions).
pub fn plan(
    get: &dyn Fn(&str) -> Option<String>,
    program: &OsString,
    args: &[OsString],
    exists: &dyn Fn(&str) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let is_set = |k: &str| get(k).is_some_and(|v| !v.trim().is_empty());

    let port = match get("OTEL_XRAY_HTTP_PORT") {
        None => DEFAULT_HTTP_PORT,
        Some(raw) => match raw.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                plan.notes.push(format!(
                    "OTEL_XRAY_HTTP_PORT={raw:?} is not a port; using {DEFAULT_HTTP_PORT}"
                ));
                DEFAULT_HTTP_PORT
            }
        },
    };

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
    }

    if !is_set("OTEL_PROPAGATORS") {
        // Python's SDK refuses to import when a named propagator is not installed, which would
        // break the function: name `xray` only where its package can be found.
        let python = is_python(program, args);
        if python && !python_has_xray_propagator(get, exists) {
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

fn is_python(program: &OsString, args: &[OsString]) -> bool {
    std::iter::once(program)
        .chain(args.iter().take(2))
        .any(|a| {
            let s = a.to_string_lossy();
            let base = s.rsplit('/').next().unwrap_or(&s);
            base.starts_with("python") || s.contains("awslambdaric")
        })
}

fn python_has_xray_propagator(
    get: &dyn Fn(&str) -> Option<String>,
    exists: &dyn Fn(&str) -> bool,
) -> bool {
    let mut dirs: Vec<String> = Vec::new();
    if let Some(root) = get("LAMBDA_TASK_ROOT") {
        dirs.push(root);
    }
    dirs.push("/opt/python".into());
    if let Some(pp) = get("PYTHONPATH") {
        dirs.extend(pp.split(':').filter(|d| !d.is_empty()).map(str::to_owned));
    }
    dirs.iter().any(|d| {
        exists(&format!(
            "{d}/opentelemetry/propagators/aws/aws_xray_propagator.py"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(env: &[(&str, &str)], program: &str, existing: &[&str]) -> Plan {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let existing: Vec<String> = existing.iter().map(|s| (*s).to_owned()).collect();
        plan(
            &|k| map.get(k).cloned(),
            &OsString::from(program),
            &[],
            &|p| existing.iter().any(|e| e == p),
        )
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
}
