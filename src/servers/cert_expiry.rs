//! When a certificate expires: its `notAfter`, read from the DER by walking just the fields
//! before it. Pure; enough for the one figure kubeecr reports (`/metrics`), without a full
//! X.509 parser.

/// The `notAfter` of a DER certificate, in Unix seconds; `None` when the bytes are not a
/// certificate this walk can read.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (certificate, _) = element(der, SEQUENCE)?;
    let (mut tbs, _) = element(certificate, SEQUENCE)?;
    // [0] EXPLICIT version, when present.
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs, 0xa0)?.1;
    }
    for tag in [INTEGER, SEQUENCE, SEQUENCE] {
        tbs = element(tbs, tag)?.1; // serialNumber, signature, issuer
    }
    let (validity, _) = element(tbs, SEQUENCE)?;
    let rest = skip_time(validity)?; // notBefore
    let (tag, value) = (rest.first()?, element(rest, *rest.first()?)?.0);
    let digits = value.strip_suffix(b"Z")?;
    // ASCII digits only, so that every slice below falls on a character boundary.
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |at: usize, len: usize| -> Option<i16> {
        std::str::from_utf8(digits.get(at..at + len)?)
            .ok()?
            .parse()
            .ok()
    };
    let (year, at) = match (*tag, digits.len()) {
        // RFC 5280: 50-99 are 19xx, 00-49 are 20xx.
        (UTC_TIME, 12) => (
            number(0, 2).map(|yy| if yy >= 50 { 1900 + yy } else { 2000 + yy })?,
            2,
        ),
        (GENERALIZED_TIME, 14) => (number(0, 4)?, 4),
        _ => return None,
    };
    let field = |i: usize| number(at + i, 2).and_then(|n| i8::try_from(n).ok());
    // Fallible constructors: a month 13 or a 30 February is no date, and must not panic.
    let date = jiff::civil::Date::new(year, field(0)?, field(2)?).ok()?;
    let time = jiff::civil::Time::new(field(4)?, field(6)?, field(8)?, 0).ok()?;
    let at = date
        .to_datetime(time)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?;
    Some(at.timestamp().as_second())
}

const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

fn skip_time(der: &[u8]) -> Option<&[u8]> {
    match der.first()? {
        &UTC_TIME | &GENERALIZED_TIME => element(der, der[0]).map(|(_, rest)| rest),
        _ => None,
    }
}

/// The value of the element at the start of `der`, if its tag is `tag`, and what follows it.
fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = der.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = if len < 0x80 {
        (usize::from(len), rest)
    } else {
        let n = usize::from(len & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(vec!["kubeecr-webhook.kubeecr.svc".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_not_after_in_both_time_forms() {
        // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050 on, as RFC 5280 says.
        for (date, expected) in [
            ((2027, 3, 9), "2027-03-09T00:00:00Z"),
            ((2051, 1, 2), "2051-01-02T00:00:00Z"),
        ] {
            let seconds = not_after(&certificate(date)).expect("read");
            let expected: jiff::Timestamp = expected.parse().unwrap();
            assert_eq!(seconds, expected.as_second(), "{date:?}");
        }
    }

    /// A certificate whose notAfter is `time` (tag and text), made by replacing the one rcgen
    /// wrote (same length, so every length before it still holds).
    fn with_not_after(tag: u8, time: &[u8]) -> Vec<u8> {
        let mut der = certificate((2027, 3, 9));
        let old: &[u8] = b"270309000000Z";
        let at = der
            .windows(old.len())
            .rposition(|w| w == old)
            .expect("the UTCTime");
        assert_eq!(time.len(), old.len());
        der[at - 2] = tag;
        der[at..at + old.len()].copy_from_slice(time);
        der
    }

    #[test]
    fn impossible_dates_and_characters_are_none_not_a_panic() {
        assert!(not_after(&with_not_after(UTC_TIME, b"270309000000Z")).is_some());
        for bad in [
            &b"271309000000Z"[..],     // month 13
            b"270230000000Z",          // 30 February
            b"270309250000Z",          // hour 25
            b"270309000060Z",          // second 60
            b"2\xe2\x82\xac09000000Z", // a three-byte character across the year's digits
            b"2703090000000",          // no Z
        ] {
            assert_eq!(not_after(&with_not_after(UTC_TIME, bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn anything_else_is_none() {
        let der = certificate((2027, 3, 9));
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(&der[..der.len() / 3]), None);
        assert_eq!(not_after(b"not a certificate"), None);
        for cut in 0..40 {
            assert_eq!(not_after(&der[..cut]), None, "cut at {cut}");
        }
    }
}
