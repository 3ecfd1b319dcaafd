//! Escaping of agent-controlled strings (paths, argv, comm) before they
//! reach a terminal: a file name holding escape sequences must not
//! recolour the operator's terminal or move its cursor.

use std::fmt::Write as _;

/// Returns `text` with every control character (C0, DEL, C1) and
/// backslash escaped as `\n`, `\t`, `\\`, `\e` or `\u{..}`. Printable
/// Unicode passes through unchanged.
pub fn for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            // Bidi overrides and isolates can reorder what the operator reads.
            c if c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Like [`for_terminal`] for bytes that may not be UTF-8: invalid bytes
/// are shown as `\xNN`.
pub fn bytes_for_terminal(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&for_terminal(chunk.valid()));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls() {
        assert_eq!(for_terminal("a\x1b[31mred\x07"), "a\\e[31mred\\u{7}");
        assert_eq!(for_terminal("tab\there\\"), "tab\\there\\\\");
        assert_eq!(for_terminal("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(for_terminal("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(for_terminal("plain/путь"), "plain/путь");
        assert_eq!(bytes_for_terminal(b"ok\xff\x1b"), "ok\\xff\\e");
    }
}
