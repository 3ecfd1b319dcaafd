//! Errors that point into a file: `path:line:column: message`.

use std::{fmt, ops::Range, path::PathBuf};

/// One problem in a file, located by line and column (both 1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

/// A file's text, kept to turn byte spans into lines and columns.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// A diagnostic at the start of `span` (the whole file when `None`).
    pub fn diagnostic(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        let offset = span.map_or(0, |s| s.start.min(self.text.len()));
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Diagnostic { file: self.path.clone(), line, column, message: message.into() }
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Several diagnostics, printed one per line.
#[derive(Debug)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let src = SourceFile { path: "p.toml".into(), text: "a = 1\nbé = \"x\"\n".into() };
        let d = src.diagnostic(Some(10..11), "here");
        assert_eq!((d.line, d.column), (2, 4));
        assert_eq!(d.to_string(), "p.toml:2:4: here");
        assert_eq!(src.diagnostic(None, "top").line, 1);
    }
}
