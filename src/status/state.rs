//! What `kubeecr status` says about one opted-in Secret, decided without I/O by the same
//! plan the refresher follows, and how the list is printed.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::contract::annotation::SecretRef;
use crate::contract::kept::KeptSecret;
use crate::contract::marks::Marks;
use crate::contract::plan::{Plan, plan};
use crate::contract::policy::Policy;
use crate::contract::secret_update::{DuePolicy, DueReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Holds kubeecr's token, not due yet.
    Filled,
    /// Needs a write: never filled, a registry missing, or expiring within the margin.
    Due,
    /// kubeecr will not write it: bad annotation, wrong type, policy, immutable, corrupt data.
    Invalid,
    /// Holds credentials kubeecr did not write (hand-edited, or an expiry no ECR token has).
    Foreign,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filled => "filled",
            Self::Due => "due",
            Self::Invalid => "invalid",
            Self::Foreign => "foreign",
        }
    }
}

/// One line of the status.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// The annotation as written (at most `MAX_SHOWN` characters).
    pub registries: String,
    /// The recorded expiry, when it reads as a time.
    pub expires_at: Option<Timestamp>,
    /// Seconds until `expires_at` (negative once expired).
    pub seconds_left: Option<i64>,
    pub state: State,
    /// Why it is not `filled`.
    pub reason: Option<String>,
}

impl Row {
    /// A Secret that could not be read: it needs a look, so it counts as `invalid`.
    pub fn unreadable(secret: &SecretRef, why: &str) -> Self {
        Self {
            namespace: secret.namespace.clone(),
            name: secret.name.clone(),
            registries: String::new(),
            expires_at: None,
            seconds_left: None,
            state: State::Invalid,
            reason: Some(format!("reading it: {why}")),
        }
    }
}

/// Longest annotation value quoted in a row; longer ones are cut with `…`.
const MAX_SHOWN: usize = 80;

fn shorten(value: &str) -> String {
    match value.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}

/// Where an opted-in Secret stands, judged as the refresher would judge it now.
pub fn classify(
    secret: &SecretRef,
    object: &KeptSecret,
    policy: &Policy,
    refresh_before: Duration,
    now: Timestamp,
) -> Row {
    let due = DuePolicy {
        refresh_before,
        force: false,
    };
    row(
        secret,
        &object.marks,
        plan(secret, object, policy, due, now),
        now,
    )
}

/// The row for a Secret and the refresher's plan for it.
pub fn row(secret: &SecretRef, marks: &Marks, plan: Plan, now: Timestamp) -> Row {
    let expires_at: Option<Timestamp> = marks.expires_at().and_then(|v| v.parse().ok());
    let (state, reason) = match plan {
        Plan::UpToDate { .. } => (State::Filled, None),
        Plan::Skip(why) => (State::Invalid, Some(why.to_string())),
        // Only opted-in Secrets are classified; one that is not has nothing to hold.
        Plan::Release(_) => (State::Invalid, Some("not opted in".to_string())),
        Plan::Fill { reason, .. } => {
            let state = match reason {
                DueReason::NotWrittenByKubeecr(_) | DueReason::UnbelievableExpiry(_) => {
                    State::Foreign
                }
                _ => State::Due,
            };
            (state, Some(reason.to_string()))
        }
    };
    Row {
        namespace: secret.namespace.clone(),
        name: secret.name.clone(),
        registries: shorten(marks.registries().unwrap_or("")),
        expires_at,
        seconds_left: expires_at.map(|at| at.as_second() - now.as_second()),
        state,
        reason,
    }
}

/// How many Secrets are in each state.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub total: usize,
    pub filled: usize,
    pub due: usize,
    pub invalid: usize,
    pub foreign: usize,
}

impl Summary {
    pub fn of(rows: &[Row]) -> Self {
        let mut s = Self {
            total: rows.len(),
            ..Self::default()
        };
        for row in rows {
            *match row.state {
                State::Filled => &mut s.filled,
                State::Due => &mut s.due,
                State::Invalid => &mut s.invalid,
                State::Foreign => &mut s.foreign,
            } += 1;
        }
        s
    }

    /// Anything but `filled` wants a look.
    pub fn needs_attention(&self) -> bool {
        self.filled < self.total
    }

    pub fn line(&self) -> String {
        format!(
            "{} opted-in Secret{}: {} filled, {} due, {} invalid, {} foreign",
            self.total,
            if self.total == 1 { "" } else { "s" },
            self.filled,
            self.due,
            self.invalid,
            self.foreign
        )
    }
}

/// A cell with control characters escaped, so that a tenant's annotation cannot put terminal
/// escape sequences in front of the operator.
fn printable(cell: &str) -> String {
    cell.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `7h12m`, `45m`, or `expired 3m ago`.
pub fn time_left(seconds: i64) -> String {
    let minutes = seconds.unsigned_abs() / 60;
    let text = match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h{m:02}m"),
    };
    if seconds < 0 {
        format!("expired {text} ago")
    } else {
        text
    }
}

/// The rows as an aligned table, then the summary line.
pub fn table(rows: &[Row]) -> String {
    let header = ["SECRET", "REGISTRIES", "EXPIRES", "LEFT", "STATE", "REASON"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                format!("{}/{}", r.namespace, r.name),
                r.registries.clone(),
                r.expires_at.map_or("-".into(), |at| at.to_string()),
                r.seconds_left.map_or("-".into(), time_left),
                r.state.as_str().to_string(),
                r.reason.clone().unwrap_or_default(),
            ]
            .map(|cell| printable(&cell))
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        line(&row.each_ref().map(String::as_str));
    }
    out.push_str(&Summary::of(rows).line());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use k8s_openapi::api::core::v1::Secret;

    use super::*;
    use crate::contract::annotation::{
        EXPIRES_AT_ANNOTATION, FINGERPRINTS_ANNOTATION, REGISTRIES_ANNOTATION,
    };
    use crate::contract::dockerconfig::DOCKER_CONFIG_JSON_KEY;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> Timestamp {
        "2026-11-29T08:00:00Z".parse().unwrap()
    }

    fn secret(annotations: serde_json::Value, config: Option<&str>) -> Secret {
        let mut v = json!({
            "metadata": {"name": "pull", "namespace": "team-a", "annotations": annotations},
            "type": "kubernetes.io/dockerconfigjson",
        });
        if let Some(c) = config {
            v["data"] =
                json!({ DOCKER_CONFIG_JSON_KEY: k8s_openapi::ByteString(c.as_bytes().to_vec()) });
        }
        serde_json::from_value(v).unwrap()
    }

    fn state_of(s: &Secret) -> (State, Option<String>) {
        let kept = KeptSecret::of_secret(s, &Default::default());
        let row = classify(
            &SecretRef::new("team-a", "pull"),
            &kept,
            &Policy::default(),
            4 * HOUR,
            now(),
        );
        (row.state, row.reason)
    }

    #[test]
    fn states_follow_the_refreshers_plan() {
        let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
        let config = format!(r#"{{"auths":{{"{host}":{{"auth":"QVdTOnB3"}}}}}}"#);
        let fingerprint = crate::contract::dockerconfig::credentials(Some(config.as_bytes()))
            .unwrap()[host]
            .clone();
        let filled = |expires: &str, fp: &str| {
            secret(
                json!({
                    REGISTRIES_ANNOTATION: "123456789012/us-west-2",
                    EXPIRES_AT_ANNOTATION: expires,
                    FINGERPRINTS_ANNOTATION: format!("123456789012/us-west-2={fp}"),
                }),
                Some(&config),
            )
        };
        assert_eq!(
            state_of(&filled("2026-11-29T18:00:00Z", &fingerprint)),
            (State::Filled, None)
        );
        let (state, reason) = state_of(&filled("2026-11-29T10:00:00Z", &fingerprint));
        assert_eq!(state, State::Due);
        assert!(reason.unwrap().contains("expires at"));
        let (state, reason) = state_of(&filled("2026-11-29T18:00:00Z", "AAAAAAAA"));
        assert_eq!(state, State::Foreign, "{reason:?}");
        let (state, _) = state_of(&filled("2027-11-29T18:00:00Z", &fingerprint));
        assert_eq!(state, State::Foreign);
        let (state, reason) = state_of(&secret(
            json!({REGISTRIES_ANNOTATION: "12345/us-west-2"}),
            None,
        ));
        assert_eq!(state, State::Invalid);
        assert!(!reason.unwrap().starts_with("team-a/pull"));
        let (state, _) = state_of(&secret(
            json!({REGISTRIES_ANNOTATION: "123456789012/us-west-2"}),
            None,
        ));
        assert_eq!(state, State::Due);
    }

    #[test]
    fn summary_and_time_left_read_well() {
        let rows = [State::Filled, State::Due, State::Filled].map(|state| Row {
            namespace: "ns".into(),
            name: "s".into(),
            registries: String::new(),
            expires_at: None,
            seconds_left: None,
            state,
            reason: None,
        });
        let summary = Summary::of(&rows);
        assert!(summary.needs_attention());
        assert_eq!(
            summary.line(),
            "3 opted-in Secrets: 2 filled, 1 due, 0 invalid, 0 foreign"
        );
        assert!(!Summary::of(&rows[..1]).needs_attention());
        assert_eq!(time_left(7 * 3600 + 12 * 60 + 5), "7h12m");
        assert_eq!(time_left(45 * 60), "45m");
        assert_eq!(time_left(-180), "expired 3m ago");
        assert_eq!(shorten(&"x".repeat(200)).chars().count(), MAX_SHOWN + 1);
        let mut sneaky = rows[0].clone();
        sneaky.registries = "123456789012/us-west-2\u{1b}[2J\r".into();
        let out = table(&[sneaky]);
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
        assert!(out.contains("us-west-2\\u{1b}[2J\\r"), "{out:?}");
    }
}
