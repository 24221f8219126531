//! The one log escaper: what makes text safe for a log line of SPEC §8.
//!
//! Values from the database (and from Postfix's output) are untrusted. Written raw into a log
//! line, a newline would start a forged line of its own, an ESC sequence would rewrite the
//! operator's terminal, and a bidirectional override would make a viewer show the text in a
//! different order than it is stored. Escaping every such character keeps each event on one
//! honest line.
//!
//! It comes in two forms built on the same character rules:
//!
//! - [`escape_for_log`] quotes one untrusted value inside a message, so that it reads as one
//!   token and the operator sees exactly where it begins and ends (even when empty or full of
//!   spaces); it also escapes `"` and `\`, so the quoting cannot be broken out of.
//! - [`escape_log_line`] escapes a whole line as the log writer emits it, leaving everything
//!   else (backslashes, quotes, non-ASCII text) as it is, so that it never escapes a value that
//!   [`escape_for_log`] already escaped a second time.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a log line raw: it could end the line, drive a terminal, reorder
/// what a viewer shows, or hide in the text unseen.
///
/// These are the control characters (C0, DEL and C1, among them `\n`, `\r`, `\u{85}` and ESC),
/// the Unicode line and paragraph separators, the bidirectional controls (the Bidi_Control
/// property: U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), and the invisible
/// characters a name could hide behind (soft hyphen, zero-width space and joiners, word joiner
/// and invisible operators, byte order mark).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{61c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{ad}'
                | '\u{200b}'..='\u{200d}'
                | '\u{2060}'..='\u{2064}'
                | '\u{feff}'
        )
}

/// Writes the escape of one character that [`needs_escape`]: `\n`, `\r`, `\t` and `\0` as in
/// Rust string literals, `\u{..}` (lowercase hex) for the others. These are the escapes Rust's
/// `Debug` uses, so a value logged before the escaper was unified reads the same.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c => {
            // Writing to a `String` cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// Quotes and escapes an untrusted value for a log message, so that it cannot forge a line of
/// its own: newlines, carriage returns, every other control character, the Unicode line
/// separators, bidirectional controls and invisible characters come out as escapes, and `"`
/// and `\` are escaped so that the quotes always delimit the whole value.
///
/// Printable text, non-ASCII included, is kept as it is. For ASCII input the result is what
/// Rust's `{:?}` gives.
///
/// ```
/// assert_eq!(relay_core::escape_for_log("a\nb"), r#""a\nb""#);
/// assert_eq!(relay_core::escape_for_log(r#"say "hi"\"#), r#""say \"hi\"\\""#);
/// assert_eq!(relay_core::escape_for_log("rtl\u{202e}moc.example"), r#""rtl\u{202e}moc.example""#);
/// assert_eq!(relay_core::escape_for_log(""), r#""""#);
/// ```
pub fn escape_for_log(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    out.push('"');
    for c in raw.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if needs_escape(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Escapes the characters of a whole log line (or a piece of one) that could forge a line or
/// change what a terminal or viewer shows, with the same rules as [`escape_for_log`] but
/// without quoting: quotes and backslashes stay as they are, so a value [`escape_for_log`]
/// already quoted passes through unchanged.
///
/// Text with nothing to escape is borrowed, not copied. Each character is escaped on its own,
/// so escaping a line piece by piece gives the same result as escaping it whole.
///
/// ```
/// use relay_core::{escape_for_log, escape_log_line};
///
/// assert_eq!(escape_log_line("x\n[2026-01-01 00:00:00] INFO: forged"), r"x\n[2026-01-01 00:00:00] INFO: forged");
/// let message = format!("Invalid domain skipped: {}", escape_for_log("a\nb"));
/// assert_eq!(escape_log_line(&message), message);
/// ```
pub fn escape_log_line(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(needs_escape) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks both forms on one input: the line form, and the quoted form.
    fn check(input: &str, line: &str, quoted: &str) {
        assert_eq!(escape_log_line(input), line, "line form of {input:?}");
        assert_eq!(escape_for_log(input), quoted, "quoted form of {input:?}");
    }

    #[test]
    fn each_class_of_character() {
        check("example.com", "example.com", r#""example.com""#);
        check("", "", r#""""#);
        check("two words", "two words", r#""two words""#);
        check("a\nb\rc\td", r"a\nb\rc\td", r#""a\nb\rc\td""#);
        check("nul\0bell\u{7}", r"nul\0bell\u{7}", r#""nul\0bell\u{7}""#);
        check(
            "esc\u{1b}[2Jdel\u{7f}nel\u{85}",
            r"esc\u{1b}[2Jdel\u{7f}nel\u{85}",
            r#""esc\u{1b}[2Jdel\u{7f}nel\u{85}""#,
        );
        check(
            "ls\u{2028}ps\u{2029}",
            r"ls\u{2028}ps\u{2029}",
            r#""ls\u{2028}ps\u{2029}""#,
        );
        check(
            "\u{202a}\u{202e}\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}",
            r"\u{202a}\u{202e}\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}",
            r#""\u{202a}\u{202e}\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}""#,
        );
        check(
            "exa\u{200b}mple\u{ad}\u{feff}\u{2060}",
            r"exa\u{200b}mple\u{ad}\u{feff}\u{2060}",
            r#""exa\u{200b}mple\u{ad}\u{feff}\u{2060}""#,
        );
        check(r#"q"b\"#, r#"q"b\"#, r#""q\"b\\""#);
        check(
            "bücher 日本.jp é",
            "bücher 日本.jp é",
            r#""bücher 日本.jp é""#,
        );
    }

    #[test]
    fn characters_next_to_the_escaped_ones_are_left_alone() {
        for c in [
            '\u{a0}', '\u{2027}', '\u{202f}', '\u{2065}', '\u{206a}', '\u{fefe}',
        ] {
            assert!(!needs_escape(c), "{:x}", u32::from(c));
        }
        for c in ['\u{9f}', '\u{200b}', '\u{200f}', '\u{2064}'] {
            assert!(needs_escape(c), "{:x}", u32::from(c));
        }
    }

    #[test]
    fn text_without_escapes_is_borrowed() {
        assert!(matches!(
            escape_log_line("Domain changes detected: +1, -0 (日本.jp) \"q\" a\\nb"),
            Cow::Borrowed(_)
        ));
    }
}
