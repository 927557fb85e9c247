//! Finding what a provider sent or emitted, however it was encoded.
//!
//! A credential rarely travels as the bare secret: it is inside HTTP Basic auth
//! (`base64(account:token)`), a query parameter, a form field, a JSON body, a path segment,
//! percent-encoded, JSON-escaped, or base64-encoded at whatever alignment the bytes around it
//! left it. [`views`] lists every decoded form of a text the suite looks in, [`contains`] looks
//! for a secret in all of them, and [`credentials`] lists what an upstream request carries in
//! the places credentials go, so each can be attributed to the tenant whose secret it holds.

use base64::Engine as _;

use crate::upstream::Seen;

/// The shortest base64 run decoded (shorter runs are words, not encodings).
const MIN_RUN: usize = 8;
/// The most views made of one text (a hostile text cannot make the scan quadratic).
const MAX_VIEWS: usize = 4096;

/// `text` with `%XX` sequences decoded (and `+` as a space, as forms write it).
pub fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with JSON string escapes (`\"`, `\\`, `\/`, `\n`, `\uXXXX`, surrogate pairs)
/// decoded; anything else kept as it is.
pub fn json_unescaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let Ok(mut code) = u32::from_str_radix(&hex, 16) else {
                    out.push_str("\\u");
                    out.push_str(&hex);
                    continue;
                };
                // A high surrogate followed by `\uDC00..`: one character.
                if (0xD800..0xDC00).contains(&code) {
                    let rest: String = chars.clone().take(6).collect();
                    if let Some(low) = rest
                        .strip_prefix("\\u")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .filter(|l| (0xDC00..0xE000).contains(l))
                    {
                        for _ in 0..6 {
                            chars.next();
                        }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    }
                }
                out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// What every base64 (or base64url) run of `text` decodes to, at every alignment: a secret
/// inside `base64("account:" + secret)` is found whatever bytes came before it.
pub fn base64_decodings(text: &str) -> Vec<String> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let mut out = Vec::new();
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_');
    for run in text
        .split(|c: char| !is_b64(c))
        .filter(|r| r.len() >= MIN_RUN)
    {
        // One alphabet: base64url's `-` and `_` are base64's `+` and `/`.
        let normal: String = run
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                c => c,
            })
            .collect();
        for skip in 0..4 {
            let Some(part) = normal.get(skip..) else {
                continue;
            };
            // A last group of one character holds no whole byte; two or three hold one or two
            // (unpadded base64).
            let whole = if part.len() % 4 == 1 {
                &part[..part.len() - 1]
            } else {
                part
            };
            if whole.len() < MIN_RUN {
                continue;
            }
            if let Ok(bytes) = engine.decode(whole) {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
            if out.len() >= MAX_VIEWS {
                return out;
            }
        }
    }
    out
}

/// Every form of `text` the suite looks in: as it is, percent-decoded, JSON-unescaped, and
/// each of those with its base64 runs decoded at every alignment (and decoded once more, for a
/// credential encoded twice).
pub fn views(text: &str) -> Vec<String> {
    let mut out = vec![text.to_string()];
    let push = |v: String, out: &mut Vec<String>| {
        if out.len() < MAX_VIEWS && !out.contains(&v) {
            out.push(v);
        }
    };
    push(percent_decoded(text), &mut out);
    push(json_unescaped(text), &mut out);
    push(json_unescaped(&percent_decoded(text)), &mut out);
    let plain = out.clone();
    for v in plain {
        for decoded in base64_decodings(&v) {
            push(percent_decoded(&decoded), &mut out);
            for again in base64_decodings(&decoded) {
                push(again, &mut out);
            }
            push(decoded, &mut out);
        }
    }
    out
}

/// A text with its decoded forms made once, to look for many secrets in.
pub struct Decoded {
    lower: String,
    views: Vec<String>,
}

impl Decoded {
    /// `text` and its [`views`].
    pub fn new(text: &str) -> Decoded {
        Decoded {
            lower: text.to_ascii_lowercase(),
            views: views(text),
        }
    }

    /// Whether `secret` is in any view, or hex-encoded (either case).
    pub fn contains(&self, secret: &str) -> bool {
        !secret.is_empty()
            && (self.lower.contains(&hex::encode(secret))
                || self.views.iter().any(|v| v.contains(secret)))
    }
}

/// Whether `secret` is in `text` in any form of [`views`], or hex-encoded.
pub fn contains(text: &str, secret: &str) -> bool {
    Decoded::new(text).contains(secret)
}

/// A credential an upstream request carries: where, and its value (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Where it was: `bearer`, `basic`, `header x-api-key`, `query token`, `form password`,
    /// `json $.auth.token`, `path segment 2`.
    pub place: String,
    /// The value, decoded from its encoding.
    pub value: String,
}

/// Header names that carry credentials, besides `Authorization`.
fn credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n != "idempotency-key"
        && !n.contains("signature")
        && [
            "token", "key", "secret", "auth", "password", "session", "cookie",
        ]
        .iter()
        .any(|w| n.contains(w))
}

fn json_strings(value: &serde_json::Value, at: &str, out: &mut Vec<Credential>) {
    match value {
        serde_json::Value::String(s) => out.push(Credential {
            place: format!("json {at}"),
            value: s.clone(),
        }),
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                json_strings(v, &format!("{at}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                json_strings(v, &format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn pairs(text: &str, place: &str, out: &mut Vec<Credential>) {
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push(Credential {
            place: format!("{place} {}", percent_decoded(k)),
            value: percent_decoded(v),
        });
    }
}

/// What `request` carries where credentials go: the bearer token; Basic auth's user and
/// password (decoded); other credential headers; query parameters; form fields; JSON string
/// values; path segments.
pub fn credentials(request: &Seen) -> Vec<Credential> {
    let mut out = Vec::new();
    for (name, value) in &request.headers {
        if name.eq_ignore_ascii_case("authorization") {
            let (scheme, rest) = value.split_once(' ').unwrap_or((value.as_str(), ""));
            let rest = rest.trim();
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
                out.push(Credential {
                    place: "basic user".into(),
                    value: user.to_string(),
                });
                out.push(Credential {
                    place: "basic password".into(),
                    value: password.to_string(),
                });
            } else {
                out.push(Credential {
                    place: scheme.to_ascii_lowercase(),
                    value: rest.to_string(),
                });
            }
        } else if credential_header(name) {
            out.push(Credential {
                place: format!("header {name}"),
                value: value.clone(),
            });
        }
    }
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    pairs(query, "query", &mut out);
    for (i, segment) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        out.push(Credential {
            place: format!("path segment {}", i + 1),
            value: percent_decoded(segment),
        });
    }
    let body = String::from_utf8_lossy(&request.body);
    let content_type = request.header("content-type").unwrap_or("");
    if content_type.starts_with("application/x-www-form-urlencoded") {
        pairs(&body, "form", &mut out);
    } else if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&request.body) {
        json_strings(&json, "$", &mut out);
    }
    out.retain(|c| !c.value.is_empty());
    out
}

/// Whether `credential` holds `secret` (in any of its decoded forms).
pub fn holds(credential: &Credential, secret: &str) -> bool {
    contains(&credential.value, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "gcsa0123456789abcdef";

    fn seen(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Seen {
        Seen {
            method: "POST".into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            at: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_secret_is_found_in_every_encoding_and_at_every_alignment() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let url = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for prefix in ["", "a", "ab", "abc", "account:", "user-12:"] {
            let basic = format!("Authorization: Basic {}", b64(&format!("{prefix}{SECRET}")));
            assert!(contains(&basic, SECRET), "{prefix}: {basic}");
            let token = format!("t={}&x=1", url(&format!("{prefix}{SECRET}--suffix")));
            assert!(contains(&token, SECRET), "{prefix}: {token}");
        }
        assert!(contains(&format!("p=%67%63%73{}", &SECRET[3..]), SECRET));
        assert!(contains(
            r#"{"k":"gcs\u0061\u00301234\u0035\u0036789abcdef"}"#,
            SECRET
        ));
        assert!(contains(&hex::encode(SECRET).to_uppercase(), SECRET));
        let twice = b64(&format!("Basic {}", b64(&format!("u:{SECRET}"))));
        assert!(contains(&twice, SECRET), "{twice}");
        assert!(!contains("nothing to see here, YWJjZGVmZ2hpams=", SECRET));
        assert!(!contains("", SECRET) && !contains("x", ""));
    }

    #[test]
    fn credentials_are_read_where_they_travel() {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("acct:{SECRET}"));
        let r = seen(
            "/bot123%3Atok/send?api_key=k%2B1&q=",
            &[
                ("authorization", &format!("Basic {basic}")),
                ("x-api-key", "hk"),
                ("idempotency-key", "not-a-credential"),
                ("content-type", "application/json"),
            ],
            br#"{"auth": {"token": "jt"}, "list": ["a"]}"#,
        );
        let found = credentials(&r);
        let at = |place: &str| {
            found
                .iter()
                .find(|c| c.place == place)
                .map(|c| c.value.clone())
        };
        assert_eq!(at("basic password").as_deref(), Some(SECRET));
        assert_eq!(at("basic user").as_deref(), Some("acct"));
        assert_eq!(at("header x-api-key").as_deref(), Some("hk"));
        assert_eq!(at("query api_key").as_deref(), Some("k+1"));
        assert_eq!(at("path segment 1").as_deref(), Some("bot123:tok"));
        assert_eq!(at("json $.auth.token").as_deref(), Some("jt"));
        assert!(at("header idempotency-key").is_none());
        let form = seen(
            "/",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"user=me&password=p%40ss",
        );
        let found = credentials(&form);
        assert!(
            found
                .iter()
                .any(|c| c.place == "form password" && c.value == "p@ss")
        );
        let bearer = seen("/", &[("authorization", "Bearer abc")], b"");
        assert_eq!(credentials(&bearer)[0].place, "bearer");
    }
}
