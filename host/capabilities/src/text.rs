//! Guest-supplied text, bounded: what the host keeps of a string a provider hands it.

/// The longest guest-supplied string the host passes anywhere — an answer, a span, a log line,
/// a metric label — in bytes. Longer ones are cut at a character boundary; result ids, which
/// must arrive whole, are refused instead (`result-too-large`).
pub const MAX_GUEST_TEXT: usize = 4096;

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to [`MAX_GUEST_TEXT`] bytes, control characters other than tab and newline replaced
/// with U+FFFD (so its JSON or log form stays within a small multiple of its length).
pub fn clip_guest(mut s: String) -> String {
    let keep = clip(&s, MAX_GUEST_TEXT).len();
    s.truncate(keep);
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        let cleaned: String = s
            .chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                }
            })
            .collect();
        return clip(&cleaned, MAX_GUEST_TEXT).to_string();
    }
    s.shrink_to_fit();
    s
}
