//! Duration flags: parsed with humantime, and refused at parse time outside their bounds.

use std::time::Duration;

pub const ZERO: Duration = Duration::ZERO;
pub const MILLISECOND: Duration = Duration::from_millis(1);
pub const SECOND: Duration = Duration::from_secs(1);
pub const HALF_MINUTE: Duration = Duration::from_secs(30);
pub const FIVE_MINUTES: Duration = Duration::from_secs(5 * 60);
pub const TEN_MINUTES: Duration = Duration::from_secs(10 * 60);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(24 * 3600);
pub const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
pub const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Tokens live 12h; the longest margin that still leaves a fresh token room to be written.
pub const MAX_REFRESH_BEFORE: Duration = Duration::from_secs(10 * 3600);

/// A duration flag, refused at parse time outside `min..=max`: a zero interval panics a
/// timer, and a huge one overflows a timestamp.
pub fn duration_within(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}; use e.g. 30s, 5m or 1h"))?;
    if d < min || d > max {
        let range = |d: Duration| humantime::format_duration(d).to_string();
        return Err(if min.is_zero() {
            format!("{s} is too long; use at most {}", range(max))
        } else {
            format!(
                "{s} is out of range; use from {} to {}",
                range(min),
                range(max)
            )
        });
    }
    Ok(d)
}

pub fn parse_refresh_before(s: &str) -> Result<Duration, String> {
    let d = duration_within(s, ZERO, TEN_YEARS)?;
    if d > MAX_REFRESH_BEFORE {
        return Err(format!(
            "{s} is too long: ECR tokens live 12h, so use at most {}, e.g. 4h",
            humantime::format_duration(MAX_REFRESH_BEFORE)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_before_is_bounded() {
        assert!(parse_refresh_before("4h").is_ok());
        let msg = parse_refresh_before("11h").unwrap_err();
        assert!(msg.contains("at most 10h"), "{msg}");
    }
}
