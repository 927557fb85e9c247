//! Mapping upstream HTTP outcomes onto [`ProviderError`], the same way in every provider.

use crate::types::{ProviderError, RateLimit, UnavailableInfo};

/// Delay assumed for a 429 that carries no usable `Retry-After`.
pub const DEFAULT_RATE_LIMIT_DELAY_MS: u64 = 1_000;

/// Maps an upstream HTTP status to a provider error; `None` for success (1xx–3xx).
///
/// - 400, 422 and other 4xx: `invalid-input`; 404, 410: `not-found`
/// - 401, 403: `unauthorized`
/// - 408: `timeout`
/// - 429: `rate-limited`, with `Retry-After` (seconds or HTTP date) or 1 s
/// - 5xx: `unavailable`, with `Retry-After` if given
///
/// `now_ms` (milliseconds since the Unix epoch) turns an HTTP-date `Retry-After` into a delay.
/// `detail` (e.g. an excerpt of the response body) goes into the message; never pass secrets.
pub fn from_status(
    status: u16,
    retry_after: Option<&str>,
    now_ms: u64,
    detail: &str,
) -> Option<ProviderError> {
    let message = if detail.is_empty() {
        format!("upstream answered {status}")
    } else {
        format!("upstream answered {status}: {detail}")
    };
    let retry = retry_after.and_then(|v| parse_retry_after(v, now_ms));
    Some(match status {
        100..=399 => return None,
        401 | 403 => ProviderError::Unauthorized(message),
        404 | 410 => ProviderError::NotFound(message),
        408 => ProviderError::Timeout,
        429 => ProviderError::RateLimited(RateLimit {
            retry_after_ms: retry.unwrap_or(DEFAULT_RATE_LIMIT_DELAY_MS),
        }),
        400..=499 => ProviderError::InvalidInput(message),
        _ => ProviderError::Unavailable(UnavailableInfo {
            retry_after_ms: retry,
            message,
        }),
    })
}

/// Parses a `Retry-After` value (RFC 9110): delay-seconds, or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) relative to `now_ms`. Dates in the past give 0.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(|s| s.saturating_mul(1_000));
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.saturating_sub(now_ms))
}

/// Parses an IMF-fixdate into milliseconds since the Unix epoch.
fn parse_imf_fixdate(value: &str) -> Option<u64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let rest = value.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let (h, m, s): (u64, u64, u64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if parts.next()? != "GMT"
        || parts.next().is_some()
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
        || s > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day as i64);
    if days < 0 {
        return None;
    }
    Some(((days as u64 * 86_400) + h * 3_600 + m * 60 + s) * 1_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether the host may retry a call that failed with `e` (given an idempotency key).
pub fn is_retryable(e: &ProviderError) -> bool {
    matches!(
        e,
        ProviderError::RateLimited(_) | ProviderError::Unavailable(_) | ProviderError::Timeout
    )
}

/// The stable code of a provider error, for span attributes and metrics (the same codes the
/// host reports).
pub fn code(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::InvalidInput(_) => "invalid-input",
        ProviderError::Unauthorized(_) => "unauthorized",
        ProviderError::NotFound(_) => "not-found",
        ProviderError::RateLimited(_) => "rate-limited",
        ProviderError::Unavailable(_) => "unavailable",
        ProviderError::Timeout => "timeout",
        ProviderError::Internal(_) => "internal",
    }
}

/// A short, single-line excerpt of an upstream body for error messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    flat.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn success_is_not_an_error() {
        for status in [100, 200, 201, 202, 204, 301] {
            assert!(from_status(status, None, NOW, "").is_none(), "{status}");
        }
    }

    #[test]
    fn client_errors_map_by_meaning() {
        assert!(
            matches!(from_status(400, None, NOW, "bad"), Some(ProviderError::InvalidInput(m)) if m.contains("400: bad"))
        );
        assert!(matches!(
            from_status(422, None, NOW, ""),
            Some(ProviderError::InvalidInput(_))
        ));
        assert!(matches!(
            from_status(401, None, NOW, ""),
            Some(ProviderError::Unauthorized(_))
        ));
        assert!(matches!(
            from_status(403, None, NOW, ""),
            Some(ProviderError::Unauthorized(_))
        ));
        assert!(matches!(
            from_status(404, None, NOW, ""),
            Some(ProviderError::NotFound(_))
        ));
        assert!(matches!(
            from_status(410, None, NOW, ""),
            Some(ProviderError::NotFound(_))
        ));
        assert!(matches!(
            from_status(408, None, NOW, ""),
            Some(ProviderError::Timeout)
        ));
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let delay = |v| match from_status(429, v, NOW, "") {
            Some(ProviderError::RateLimited(RateLimit { retry_after_ms })) => retry_after_ms,
            other => panic!("{other:?}"),
        };
        assert_eq!(delay(Some("7")), 7_000);
        assert_eq!(delay(Some("Sun, 06 Nov 1994 08:49:47 GMT")), 10_000);
        assert_eq!(delay(Some("Sun, 06 Nov 1994 08:49:00 GMT")), 0);
        assert_eq!(delay(Some("soon")), DEFAULT_RATE_LIMIT_DELAY_MS);
        assert_eq!(delay(None), DEFAULT_RATE_LIMIT_DELAY_MS);
    }

    #[test]
    fn server_errors_are_unavailable() {
        for status in [500, 502, 503, 504] {
            match from_status(status, Some("3"), NOW, "") {
                Some(ProviderError::Unavailable(info)) => {
                    assert_eq!(info.retry_after_ms, Some(3_000));
                    assert!(info.message.contains(&status.to_string()));
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        assert!(matches!(
            from_status(503, None, NOW, ""),
            Some(ProviderError::Unavailable(UnavailableInfo {
                retry_after_ms: None,
                ..
            }))
        ));
    }

    #[test]
    fn imf_fixdate_parses_and_rejects_junk() {
        assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(NOW)
        );
        assert_eq!(
            parse_imf_fixdate("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600_000)
        );
        for junk in [
            "",
            "Sun 06 Nov 1994",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
        ] {
            assert_eq!(parse_imf_fixdate(junk), None, "{junk}");
        }
    }

    #[test]
    fn retryable_errors() {
        assert!(is_retryable(&ProviderError::Timeout));
        assert!(!is_retryable(&ProviderError::Unauthorized(String::new())));
    }
}
