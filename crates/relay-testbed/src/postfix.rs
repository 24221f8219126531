//! Placeholder until written.
/// Placeholder.
#[derive(Debug)]
pub struct Postfix;
/// Placeholder.
#[derive(Debug)]
pub struct SmtpSink;
