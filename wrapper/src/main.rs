//! `otel-xray-wrapper`: named by `AWS_LAMBDA_EXEC_WRAPPER`; execs the runtime (being written).

fn main() {}
