//! Placeholder until written.
/// Placeholder.
#[derive(Debug)]
pub struct MariaDbSource;
