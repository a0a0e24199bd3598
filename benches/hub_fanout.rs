//! Fan-out benchmark of the hub against tokio broadcast.
fn main() {}
