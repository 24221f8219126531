//! SPEC §3, one case a line: `check(raw, expected)`.

use relay_core::{normalize_rows, DomainName, InvalidDomain};

fn check(raw: &str, expected: Result<&str, InvalidDomain>) {
    let got = DomainName::parse(raw);
    assert_eq!(
        got.as_ref().map(DomainName::as_str).map_err(Clone::clone),
        expected,
        "input {raw:?}"
    );
}

#[test]
fn normalization() {
    check("example.com", Ok("example.com"));
    check("  Example.COM. ", Ok("example.com"));
    check("\tsub.Example.org\n", Ok("sub.example.org"));
    check("bücher.example", Ok("xn--bcher-kva.example"));
    check("例え.テスト", Ok("xn--r8jz45g.xn--zckzah"));
    check("xn--bcher-kva.example", Ok("xn--bcher-kva.example"));
    check("a-b.c-d.example", Ok("a-b.c-d.example"));
    check("123.example", Ok("123.example"));
}

#[test]
fn rejections() {
    check("", Err(InvalidDomain::Empty));
    check("   ", Err(InvalidDomain::Empty));
    check("localhost", Err(InvalidDomain::LabelCount(1)));
    // An IP address is not a domain name: relay_domains would relay for no domain, and the
    // transport line would route a literal that no recipient address uses.
    check("192.168.0.1", Err(InvalidDomain::NumericTopLabel));
    check("10.0.0.1.", Err(InvalidDomain::NumericTopLabel));
    check("mail.123", Err(InvalidDomain::NumericTopLabel));
    check("a..example", Err(InvalidDomain::EmptyLabel));
    check(".example.com", Err(InvalidDomain::EmptyLabel));
    check("example.com..", Err(InvalidDomain::EmptyLabel));
    check("-a.example", Err(InvalidDomain::Hyphen));
    check("a-.example", Err(InvalidDomain::Hyphen));
    check("exa mple.com", Err(InvalidDomain::ForbiddenChar(' ')));
    check("a.com, b.com", Err(InvalidDomain::ForbiddenChar(',')));
    check(
        "a.com\nrelay_domains=*",
        Err(InvalidDomain::ForbiddenChar('\n')),
    );
    check("a.com\r", Ok("a.com"));
    check("a\r.com", Err(InvalidDomain::ForbiddenChar('\r')));
    check(
        "evil.com smtp:[10.0.0.1]",
        Err(InvalidDomain::ForbiddenChar(' ')),
    );
    check("smtp:[10.0.0.1]", Err(InvalidDomain::ForbiddenChar(':')));
    check("[127.0.0.1]", Err(InvalidDomain::ForbiddenChar('[')));
    check("$mydestination", Err(InvalidDomain::ForbiddenChar('$')));
    check(
        "hash:/etc/postfix/x",
        Err(InvalidDomain::ForbiddenChar(':')),
    );
    check(
        "under_score.example",
        Err(InvalidDomain::ForbiddenChar('_')),
    );
    check("a\u{0}.example", Err(InvalidDomain::ForbiddenChar('\u{0}')));
    check(
        "a\u{2028}b.example",
        Err(InvalidDomain::ForbiddenChar('\u{2028}')),
    );
    check("a\u{ff0c}b.example", Err(InvalidDomain::Idna));
    check(
        &format!("{}.example", "a".repeat(64)),
        Err(InvalidDomain::LabelTooLong(64)),
    );
    check(
        &format!("{}.example", "a".repeat(63)),
        Ok(&format!("{}.example", "a".repeat(63))),
    );
    let long = vec!["abcdefghi"; 26].join(".");
    check(&long, Err(InvalidDomain::TooLong(long.len())));
    // 127 one-letter labels are exactly 253 characters; a 128th label breaks the length limit.
    let most = vec!["a"; 127].join(".");
    check(&most, Ok(&most));
    let many = vec!["a"; 128].join(".");
    check(&many, Err(InvalidDomain::TooLong(255)));
}

#[test]
fn rows_collapse_duplicates_and_keep_rejects() {
    let rows = normalize_rows(&["Example.COM", "example.com.", "b.example", "bad row", ""]);
    let valid: Vec<&str> = rows.valid.iter().map(DomainName::as_str).collect();
    assert_eq!(valid, ["b.example", "example.com"]);
    assert_eq!(rows.duplicates, 1);
    let rejected: Vec<&str> = rows.rejected.iter().map(|r| r.raw.as_str()).collect();
    assert_eq!(rejected, ["bad row", ""]);
}
