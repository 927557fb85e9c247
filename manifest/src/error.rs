use std::fmt;

/// One thing wrong with a manifest: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// JSON Pointer of the offending field (`/compat/wit`); empty for the whole document.
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() {
            "(document)"
        } else {
            &self.field
        };
        write!(f, "field `{field}`: {}; fix: {}", self.problem, self.fix)
    }
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not JSON.
    #[error(
        "{file}: not valid JSON at line {line}, column {column}: {message}; fix the syntax there (provider.json must be one JSON object)"
    )]
    Syntax {
        /// The file (or component) the manifest came from.
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The JSON is well-formed but fields are missing, of the wrong type or inconsistent.
    #[error("{file}: invalid provider manifest:\n{}", list(.problems))]
    Invalid {
        /// The file (or component) the manifest came from.
        file: String,
        /// Every problem found (not just the first).
        problems: Vec<FieldProblem>,
    },
}

impl ManifestError {
    /// The problems behind an [`ManifestError::Invalid`] error (empty for syntax errors).
    pub fn problems(&self) -> &[FieldProblem] {
        match self {
            ManifestError::Invalid { problems, .. } => problems,
            ManifestError::Syntax { .. } => &[],
        }
    }
}

fn list(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` shortened to about `max` characters by cutting out its middle (the start names the
/// value, the end usually says what is wrong with it), noting how long it was. Error messages
/// quote offending values; a multi-megabyte value must not become a multi-megabyte message.
pub fn clip_middle(text: &str, max: usize) -> String {
    let chars = text.chars().count();
    if chars <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max / 3).collect();
    let tail: String = text.chars().skip(chars - (max - max / 3)).collect();
    format!("{head}… ({} characters cut) …{tail}", chars - max)
}

/// The candidate closest to `word` by edit distance, if it is a near miss (at most a third of
/// the word's length, and at least one edit, away): what a "did you mean …?" names.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance between `a` and `b`, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod clip_tests {
    use super::clip_middle;

    #[test]
    fn long_values_are_cut_in_the_middle() {
        assert_eq!(clip_middle("short", 10), "short");
        let long = format!(
            "\"{}\" is longer than 200 characters",
            "d".repeat(1_000_000)
        );
        let clipped = clip_middle(&long, 240);
        assert!(clipped.len() < 400, "{}", clipped.len());
        assert!(clipped.starts_with("\"ddd"));
        assert!(clipped.ends_with("is longer than 200 characters"));
        assert!(clipped.contains("characters cut"));
    }

    #[test]
    fn nearest_names_a_near_miss_only() {
        let keys = ["max_concurrent", "memory_bytes", "deadline_ms"];
        assert_eq!(
            super::nearest("max_concurent", keys),
            Some("max_concurrent")
        );
        assert_eq!(super::nearest("deadline", keys), None);
        assert_eq!(super::nearest("colour", ["color"]), Some("color"));
    }
}
