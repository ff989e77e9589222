//! OTLP receivers on loopback: HTTP `/v1/traces` and gRPC TraceService/Export (being written).
