//! The `relay-sync` command (being written).
fn main() {}
