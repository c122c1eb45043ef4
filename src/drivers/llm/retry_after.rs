//! Reading a `Retry-After` header as RFC 9110 §10.2.3 defines it: either delay-seconds (one or
//! more ASCII digits) or an HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms
//! recipients must accept). Anything else — `-1`, `NaN`, `1.5`, a number too large for any
//! clock — is treated as absent, so the caller falls back to its own backoff. A valid delay
//! beyond `MAX_RETRY_AFTER` is clamped to it: a server cannot park an agent for a day.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

/// The longest wait a Retry-After can impose (the same bound as an unlimited call's timeout).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The delay a `Retry-After` value asks for. `date` is the response's `Date` header (an HTTP-date
/// is measured from the server's own clock when it sent one, so clock skew does not matter);
/// `now` is our wall clock, used without it. A date in the past means "now".
pub fn parse(value: &str, date: Option<&str>, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse::<u64>().ok()?)
    } else {
        let at = http_date(value)?;
        let from = date.and_then(http_date).unwrap_or(now);
        (at - from).to_std().unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// An HTTP-date in any of its three forms (RFC 9110 §5.6.7), always GMT.
fn http_date(s: &str) -> Option<DateTime<Utc>> {
    const FORMS: [&str; 3] = [
        "%a, %d %b %Y %H:%M:%S GMT", // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        "%A, %d-%b-%y %H:%M:%S GMT", // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        "%a %b %e %H:%M:%S %Y",      // asctime: Sun Nov  6 08:49:37 1994
    ];
    let s = s.trim();
    FORMS.iter().find_map(|f| NaiveDateTime::parse_from_str(s, f).ok()).map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap()
    }

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn delay_seconds_are_digits_only() {
        assert_eq!(parse("5", None, now()), secs(5));
        assert_eq!(parse(" 120 ", None, now()), secs(120));
        assert_eq!(parse("0", None, now()), secs(0));
        for garbage in ["-1", "NaN", "nan", "inf", "1.5", "1e3", "", "  ", "+5", "5s", "0x10"] {
            assert_eq!(parse(garbage, None, now()), None, "{garbage:?}");
        }
    }

    #[test]
    fn huge_values_are_absent_and_long_ones_clamped() {
        assert_eq!(parse("99999999999999999999999", None, now()), None);
        assert_eq!(parse("86400", None, now()), Some(MAX_RETRY_AFTER));
        assert_eq!(parse(&u64::MAX.to_string(), None, now()), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn an_http_date_in_any_of_its_three_forms() {
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:40 GMT", None, now()), secs(3));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:47 GMT", None, now()), secs(10));
        assert_eq!(parse("Sun Nov  6 08:50:37 1994", None, now()), secs(60));
        assert_eq!(parse("Sun, 06 Nov 1994 08:00:00 GMT", None, now()), secs(0), "a past date means now");
        assert_eq!(parse("Mon, 07 Nov 1994 08:49:37 GMT", None, now()), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:40 CET", None, now()), None, "HTTP dates are GMT");
        assert_eq!(parse("Sun, 32 Nov 1994 08:49:40 GMT", None, now()), None);
    }

    #[test]
    fn an_http_date_is_measured_from_the_servers_date() {
        let far_away = http_date("Wed, 01 Jan 2031 00:00:00 GMT").unwrap();
        let got = parse("Sun, 06 Nov 1994 08:49:40 GMT", Some("Sun, 06 Nov 1994 08:49:37 GMT"), far_away);
        assert_eq!(got, secs(3));
        // An unreadable Date header falls back to our clock.
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:40 GMT", Some("yesterday"), now()), secs(3));
    }
}
