//! Figures sampled from the process for `/metrics`: its resident memory, and when the
//! certificate it serves expires.

use crate::telemetry::metrics::Metrics;

/// How often they are sampled.
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Resident memory in bytes, from `/proc/self/status` (`VmRSS`); `None` off Linux.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Sets the gauges; `certificate_expiry` in Unix seconds.
pub fn sample(metrics: &Metrics, certificate_expiry: Option<i64>) {
    if let Some(bytes) = resident_bytes() {
        metrics
            .resident_memory
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    if let Some(at) = certificate_expiry {
        metrics.tls_certificate_expiry.set(at as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status = "Name:\tkubeecr\nVmPeak:\t  90000 kB\nVmRSS:\t   35840 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(35840 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(
            resident_bytes().is_some_and(|b| b > 1024 * 1024),
            "this test's own"
        );
    }
}
