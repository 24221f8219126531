//! The `relay_domains` parameter: parsed into the tokens relay-sync keeps as they are and the
//! domain names it manages, and rendered back (SPEC §4).

use std::collections::BTreeSet;

use crate::DomainName;

/// A `relay_domains` value split into its two kinds of token.
///
/// Postfix separates the tokens of a list parameter with commas and/or whitespace. Tokens that
/// are plain domain names are collected in [`RelayDomains::domains`]; everything else
/// (`$mydestination`, `hash:/etc/postfix/relay`, `/file/name`, `.example.com`, …) is a preserved
/// token, kept verbatim and in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayDomains {
    /// Tokens that are not plain domain names, in their original order.
    pub preserved_tokens: Vec<String>,
    /// The plain domain names, normalized.
    pub domains: BTreeSet<DomainName>,
}

/// A `relay_domains` value relay-sync refuses to rewrite, because rewriting it token by token
/// would change its meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayDomainsError {
    /// `{ … }` grouping or `${name?value}` expressions can hold separators inside one token.
    #[error("relay_domains uses {{ }} grouping or an expression, which relay-sync cannot rewrite safely; set it to a plain list by hand, keeping any table as a token")]
    Braces,
    /// `!pattern` exclusions depend on their order relative to the domains, which sorting would
    /// change (Postfix stops at the first match).
    #[error("relay_domains contains the exclusion {0:?}; its meaning depends on token order, which relay-sync does not keep: move the exclusion into a lookup table, or remove it")]
    Negation(String),
}

impl RelayDomains {
    /// Parses a raw value as `postconf -h relay_domains` prints it.
    ///
    /// ```
    /// use relay_core::RelayDomains;
    /// let rd = RelayDomains::parse("$mydestination, Example.com hash:/etc/postfix/relay").unwrap();
    /// assert_eq!(rd.preserved_tokens, ["$mydestination", "hash:/etc/postfix/relay"]);
    /// assert_eq!(rd.render(), "$mydestination, hash:/etc/postfix/relay, example.com");
    /// ```
    pub fn parse(value: &str) -> Result<RelayDomains, RelayDomainsError> {
        if value.contains(['{', '}']) {
            return Err(RelayDomainsError::Braces);
        }
        if let Some(token) = value
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .find(|t| t.starts_with('!'))
        {
            return Err(RelayDomainsError::Negation(token.to_owned()));
        }
        let mut out = RelayDomains::default();
        for token in value
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
        {
            match plain_domain(token) {
                Some(name) => {
                    out.domains.insert(name);
                }
                None => out.preserved_tokens.push(token.to_owned()),
            }
        }
        Ok(out)
    }

    /// Renders the value: preserved tokens first, in order, then the domains sorted, all
    /// separated by `, `.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let tokens = self
            .preserved_tokens
            .iter()
            .map(String::as_str)
            .chain(self.domains.iter().map(DomainName::as_str));
        for (i, token) in tokens.enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(token);
        }
        out
    }
}

/// A token is a managed domain only when it is a plain name; a table (`type:name`), a file
/// (`/path`), a parameter (`$name`) or a parent-domain pattern (`.example.com`) is not.
fn plain_domain(token: &str) -> Option<DomainName> {
    if token.starts_with(['$', '/', '.']) || token.contains(':') {
        return None;
    }
    DomainName::parse(token).ok()
}
