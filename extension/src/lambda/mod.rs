//! Lambda APIs: Extensions API client, Telemetry API subscription and listener (being written).
