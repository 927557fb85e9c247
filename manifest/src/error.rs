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
