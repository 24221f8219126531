//! The log escaper (SPEC §3 and §8): a hostile value cannot forge a log line, and the two forms
//! of the escaper fit together.

use proptest::prelude::*;
use relay_core::{escape_for_log, escape_log_line};

use crate::strategies::hostile_string_strategy;

/// What must never reach a log line raw, stated independently of the escaper: anything that
/// ends a line for some reader, drives a terminal, or reorders the text in a viewer.
fn dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Any text, with the dangerous and the quoting characters drawn often.
fn text_strategy() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '\n', '\r', '\t', '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}',
        '\u{2067}', '\u{200b}', '"', '\\', ' ', 'u', '{', '}',
    ]);
    prop_oneof![
        prop::collection::vec(prop_oneof![any::<char>(), special], 0..40)
            .prop_map(String::from_iter),
        hostile_string_strategy(),
    ]
}

/// Reverses [`escape_for_log`], or says why `quoted` is not one of its results.
fn unquote(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or("not quoted")?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err("raw quote inside".into()),
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('0') => out.push('\0'),
                Some(c @ ('"' | '\\')) => out.push(c),
                Some('u') => {
                    let rest = chars.as_str();
                    let end = rest.find('}').ok_or("unterminated \\u")?;
                    let hex = rest.strip_prefix('{').ok_or("\\u without {")?;
                    let code =
                        u32::from_str_radix(&hex[..end - 1], 16).map_err(|e| e.to_string())?;
                    out.push(char::from_u32(code).ok_or("not a char")?);
                    chars = rest[end + 1..].chars();
                }
                other => return Err(format!("unknown escape {other:?}")),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

#[test]
fn log_escaping_cannot_forge_a_line() {
    let escaped = escape_for_log("x\n[2026-01-01 00:00:00] INFO: forged\r\u{1b}[2J");
    assert_eq!(
        escaped,
        r#""x\n[2026-01-01 00:00:00] INFO: forged\r\u{1b}[2J""#
    );
    let line = escape_log_line("Rejected x\n[2026-01-01 00:00:00] INFO: forged\u{2028}");
    assert_eq!(
        line,
        r"Rejected x\n[2026-01-01 00:00:00] INFO: forged\u{2028}"
    );
}

proptest! {
    #[test]
    fn prop_escaped_line_holds_nothing_dangerous(text in text_strategy()) {
        let line = escape_log_line(&text);
        prop_assert!(!line.contains(dangerous), "{:?}", line);
    }

    #[test]
    fn prop_quoted_value_holds_nothing_dangerous_and_round_trips(text in text_strategy()) {
        let quoted = escape_for_log(&text);
        prop_assert!(!quoted.contains(dangerous), "{:?}", quoted);
        prop_assert_eq!(unquote(&quoted), Ok(text));
    }

    #[test]
    fn prop_quoted_ascii_value_reads_as_debug(text in "[\\x00-\\x7f]{0,40}") {
        // The escaper used to be `{:?}`; logs of ASCII values read as they always did.
        prop_assert_eq!(escape_for_log(&text), format!("{text:?}"));
    }

    #[test]
    fn prop_line_escaping_leaves_quoted_values_alone(text in text_strategy()) {
        let quoted = escape_for_log(&text);
        prop_assert_eq!(escape_log_line(&quoted), quoted.as_str());
    }

    #[test]
    fn prop_line_escaping_by_pieces_is_escaping_whole(text in text_strategy(), at in any::<prop::sample::Index>()) {
        // The log writer escapes text as it is formatted, piece by piece.
        let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
        let (head, tail) = text.split_at(*at.get(&boundaries));
        prop_assert_eq!(escape_log_line(head).into_owned() + &escape_log_line(tail), escape_log_line(&text));
    }

    #[test]
    fn prop_line_escaping_keeps_ordinary_text(text in "[\\p{L}\\p{M}\\p{N}\\p{P}\\p{S} ]{0,40}") {
        // Letters, marks, digits, punctuation, symbols and spaces: a log line in any script.
        let line = escape_log_line(&text);
        prop_assert!(matches!(line, std::borrow::Cow::Borrowed(_)));
        prop_assert_eq!(line, text.as_str());
    }
}
