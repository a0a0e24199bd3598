//! Throughput benchmark (placeholder).
fn main() {}
