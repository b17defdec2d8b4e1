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
    let digits = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let (year, rest) = match *tag {
        UTC_TIME if digits.len() == 12 => {
            let yy: i16 = digits[..2].parse().ok()?;
            // RFC 5280: 50-99 are 19xx, 00-49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        GENERALIZED_TIME if digits.len() == 14 => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<i8>().ok();
    let at = jiff::civil::date(year, field(0)?, field(2)?)
        .at(field(4)?, field(6)?, field(8)?, 0)
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
