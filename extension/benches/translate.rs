//! Decode + translate throughput (being written).
fn main() {}
