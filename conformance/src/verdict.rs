//! A case's verdict, and the small helpers every evaluator uses to word one.

use crate::host::CapturedSpan;
use crate::outcome::CallOutcome;

/// A case's verdict.
pub(crate) struct Verdict {
    pub passed: bool,
    pub detail: String,
}

pub(crate) fn pass(detail: impl Into<String>) -> Verdict {
    Verdict {
        passed: true,
        detail: detail.into(),
    }
}

pub(crate) fn fail(detail: impl Into<String>) -> Verdict {
    Verdict {
        passed: false,
        detail: detail.into(),
    }
}

pub(crate) fn describe(o: &CallOutcome) -> String {
    let mut s = format!("got `{}`", o.code);
    if let Some(ms) = o.retry_after_ms {
        s.push_str(&format!(" (retry after {ms} ms)"));
    }
    if o.code != "ok" && !o.message.is_empty() {
        s.push_str(&format!(": {}", clip(&o.message, 160)));
    }
    s
}

pub(crate) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

pub(crate) fn new_key() -> String {
    format!("conformance-key-{:016x}", fastrand::u64(..))
}

pub(crate) fn is_guest(span: &CapturedSpan) -> bool {
    span.attributes.get("greentic.origin").map(String::as_str) == Some("guest")
}
