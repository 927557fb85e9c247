//! What a run found: a table for people, JSON and JUnit XML for machines.

use serde::{Deserialize, Serialize};

/// One case's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    /// Case id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// What it checks and why.
    pub why: String,
    /// Whether the provider passed.
    pub passed: bool,
    /// What was observed.
    pub detail: String,
    /// How long it took.
    pub duration_ms: u64,
}

/// The run's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Provider name (from its manifest).
    pub provider: String,
    /// Provider version.
    pub version: String,
    /// The domain whose cases ran.
    pub domain: String,
    /// The component file or reference.
    pub file: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// Wall time of all cases.
    pub duration_ms: u64,
    /// One entry per case, in run order.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }

    /// Ids of the failed cases.
    pub fn failed(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.id.as_str())
            .collect()
    }

    /// A table: case, result, why (what was observed).
    pub fn table(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|r| r.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = format!(
            "conformance of {} {} ({} domain) {}\n\n{:<width$}  {:<6}  why\n",
            self.provider, self.version, self.domain, self.digest, "case", "result"
        );
        for r in &self.results {
            out.push_str(&format!(
                "{:<width$}  {:<6}  {}\n",
                r.id,
                if r.passed { "pass" } else { "FAIL" },
                r.detail
            ));
        }
        let failed = self.failed().len();
        out.push_str(&format!(
            "\n{} case(s): {} passed, {failed} failed, in {:.2} s\n",
            self.results.len(),
            self.results.len() - failed,
            self.duration_ms as f64 / 1000.0
        ));
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["passed"] = serde_json::Value::Bool(self.passed());
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// The report as JUnit XML (one testsuite, one testcase per case).
    pub fn junit(&self) -> String {
        let failures = self.failed().len();
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"greentic-conformance\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{:.3}\">\n    <properties>\n      <property name=\"version\" value=\"{}\"/>\n      <property name=\"domain\" value=\"{}\"/>\n      <property name=\"digest\" value=\"{}\"/>\n    </properties>\n",
            self.results.len(),
            self.duration_ms as f64 / 1000.0,
            xml(&self.provider),
            self.results.len(),
            self.duration_ms as f64 / 1000.0,
            xml(&self.version),
            xml(&self.domain),
            xml(&self.digest),
        );
        for r in &self.results {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
                xml(&r.group),
                xml(&r.id),
                r.duration_ms as f64 / 1000.0
            ));
            if r.passed {
                out.push_str(&format!("<system-out>{}</system-out>", xml(&r.detail)));
            } else {
                out.push_str(&format!(
                    "<failure message=\"{}\">{}</failure>",
                    xml(&r.detail),
                    xml(&r.why)
                ));
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

/// Escapes text for XML attributes and content; drops characters XML 1.0 cannot carry.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            provider: "p".into(),
            version: "1.0.0".into(),
            domain: "messaging".into(),
            file: "p.wasm".into(),
            digest: "sha256:00".into(),
            duration_ms: 1500,
            results: vec![
                CaseResult {
                    id: "a.one".into(),
                    group: "a".into(),
                    why: "because".into(),
                    passed: true,
                    detail: "fine".into(),
                    duration_ms: 10,
                },
                CaseResult {
                    id: "b.two".into(),
                    group: "b".into(),
                    why: "x < y & \"z\"".into(),
                    passed: false,
                    detail: "got <internal>\u{1}".into(),
                    duration_ms: 20,
                },
            ],
        }
    }

    #[test]
    fn table_json_and_junit_say_what_failed() {
        let r = report();
        assert!(!r.passed());
        assert_eq!(r.failed(), vec!["b.two"]);
        let t = r.table();
        assert!(t.contains("b.two  FAIL    got <internal>"), "{t}");
        assert!(t.contains("2 case(s): 1 passed, 1 failed"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["passed"], false);
        assert_eq!(j["results"][1]["id"], "b.two");
        let x = r.junit();
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(
            x.contains(
                "<failure message=\"got &lt;internal&gt;\">x &lt; y &amp; &quot;z&quot;</failure>"
            ),
            "{x}"
        );
        assert!(!x.contains('\u{1}'));
    }
}
