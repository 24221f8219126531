//! Domain names as SPEC §3 defines them: normalized, validated, and impossible to build otherwise.

use compact_str::CompactString;
use std::fmt;

/// A valid, normalized domain name: lowercase ASCII (IDNA `xn--` form for Unicode names), no
/// trailing dot, 2–127 labels of 1–63 characters from `a-z 0-9 -`, not starting or ending with
/// `-`, at most 253 characters.
///
/// The only way to get one is [`DomainName::parse`], so anything holding a `DomainName` cannot
/// carry a newline, a comma, whitespace or a `smtp:` fragment into a rendered file.
///
/// ```
/// use relay_core::DomainName;
/// let name = DomainName::parse("  Example.COM. ").unwrap();
/// assert_eq!(name.as_str(), "example.com");
/// assert!(DomainName::parse("evil.com\nrelay_domains = *").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(CompactString);

/// Why a raw value is not a domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidDomain {
    /// Nothing left after trimming.
    #[error("empty name")]
    Empty,
    /// A character that can never appear in a domain name (whitespace, control, punctuation).
    #[error("forbidden character {0:?}")]
    ForbiddenChar(char),
    /// A Unicode name that IDNA cannot convert.
    #[error("not a valid internationalized name")]
    Idna,
    /// Fewer than 2 or more than 127 labels.
    #[error("{0} labels (2 to 127 allowed)")]
    LabelCount(usize),
    /// An empty label (`a..b`, a leading dot).
    #[error("empty label")]
    EmptyLabel,
    /// A label longer than 63 characters.
    #[error("label of {0} characters (63 allowed)")]
    LabelTooLong(usize),
    /// A label starting or ending with `-`.
    #[error("label starts or ends with '-'")]
    Hyphen,
    /// More than 253 characters in all.
    #[error("{0} characters (253 allowed)")]
    TooLong(usize),
    /// An all-numeric top label, as in `192.168.0.1`: an IP address, not a domain name (no
    /// top-level domain is all digits, RFC 3696 §2).
    #[error("all-numeric top label (an IP address is not a domain name)")]
    NumericTopLabel,
}

impl DomainName {
    /// Normalizes (trim, lowercase, drop one trailing dot, IDNA to ASCII) and validates `raw`.
    pub fn parse(raw: &str) -> Result<DomainName, InvalidDomain> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidDomain::Empty);
        }
        // Reject anything that is never part of a name before IDNA gets a chance to map it:
        // IDNA would, for instance, turn a full-width comma into a comma-free string silently.
        if let Some(c) = trimmed
            .chars()
            .find(|&c| c.is_whitespace() || c.is_control() || (c.is_ascii() && !is_name_ascii(c)))
        {
            return Err(InvalidDomain::ForbiddenChar(c));
        }
        let lower = trimmed.to_ascii_lowercase();
        let without_dot = lower.strip_suffix('.').unwrap_or(&lower);
        let ascii = if without_dot.is_ascii() {
            without_dot.to_owned()
        } else {
            idna::domain_to_ascii_strict(without_dot).map_err(|_| InvalidDomain::Idna)?
        };
        validate_ascii(&ascii)?;
        Ok(DomainName(CompactString::from(ascii)))
    }

    /// [`DomainName::parse`] for an owned value: a name that is already normal keeps its
    /// allocation (a million database rows are not copied once more).
    pub fn parse_owned(raw: String) -> Result<DomainName, (String, InvalidDomain)> {
        let already_normal = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !raw.is_empty()
            && !raw.ends_with('.');
        if already_normal {
            return match validate_ascii(&raw) {
                Ok(()) => Ok(DomainName(CompactString::from(raw))),
                Err(reason) => Err((raw, reason)),
            };
        }
        match DomainName::parse(&raw) {
            Ok(name) => Ok(name),
            Err(reason) => Err((raw, reason)),
        }
    }

    /// The name as written to Postfix files.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DomainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn is_name_ascii(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.'
}

fn validate_ascii(name: &str) -> Result<(), InvalidDomain> {
    if name.len() > 253 {
        return Err(InvalidDomain::TooLong(name.len()));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if !(2..=127).contains(&labels.len()) {
        return Err(InvalidDomain::LabelCount(labels.len()));
    }
    for label in labels {
        if label.is_empty() {
            return Err(InvalidDomain::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(InvalidDomain::LabelTooLong(label.len()));
        }
        if let Some(c) = label
            .chars()
            .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(InvalidDomain::ForbiddenChar(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(InvalidDomain::Hyphen);
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(InvalidDomain::NumericTopLabel);
    }
    Ok(())
}
