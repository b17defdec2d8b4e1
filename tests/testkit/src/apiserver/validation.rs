//! Kubernetes' format checks (`k8s.io/apimachinery/pkg/util/validation`), with its messages,
//! and the Event validation of `pkg/apis/core/validation/events.go`.

use serde_json::Value;

use super::kinds::{CORE_EVENTS, ResourceKind};

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `IsDNS1123Subdomain`.
pub fn dns_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !s.split('.').all(label_ok) {
        errs.push(DNS1123_SUBDOMAIN.into());
    }
    errs
}

/// `NameIsDNSSubdomain`: with `prefix` (a generateName), a trailing '-' is allowed.
pub fn name_errors(name: &str, prefix: bool) -> Vec<String> {
    match name.strip_suffix('-') {
        Some(stem) if prefix => dns_subdomain_errors(&format!("{stem}a")),
        _ => dns_subdomain_errors(name),
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, or empty when `allow_empty`.
fn is_qualified_token(s: &str, allow_empty: bool) -> bool {
    if s.is_empty() {
        return allow_empty;
    }
    let b = s.as_bytes();
    b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// `IsQualifiedName`: label keys, annotation keys, an Event's reportingController.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".into());
            } else {
                errs.extend(
                    dns_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!("a qualified name {QUALIFIED_NAME} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    if !is_qualified_token(name, false) {
        errs.push(format!("name part {QUALIFIED_NAME}"));
    }
    errs
}

/// `IsValidLabelValue`.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".into());
    }
    if !is_qualified_token(value, true) {
        errs.push(LABEL_VALUE.into());
    }
    errs
}

/// A field problem as `field.Error` renders it: (field, message).
pub type Problem = (String, String);

fn required(field: &str) -> Problem {
    (field.into(), "Required value".into())
}

/// `field.Invalid(path, value, detail)` renders the value quoted when it is a string.
pub fn invalid(field: &str, value: &str, detail: &str) -> Problem {
    (field.into(), format!("Invalid value: {value:?}: {detail}"))
}

/// The Event's fields under their internal names (`pkg/apis/core`), from either API: the
/// real server converts both to the internal Event before validating, and its messages use
/// the internal field names.
struct InternalEvent<'a> {
    obj: &'a Value,
    core: bool,
}

impl InternalEvent<'_> {
    fn get(&self, internal: &str) -> &Value {
        let external = match (internal, self.core) {
            ("involvedObject", false) => "regarding",
            ("message", false) => "note",
            ("source", false) => "deprecatedSource",
            ("firstTimestamp", false) => "deprecatedFirstTimestamp",
            ("lastTimestamp", false) => "deprecatedLastTimestamp",
            ("count", false) => "deprecatedCount",
            ("reportingController", true) => "reportingComponent",
            (field, _) => field,
        };
        self.obj.get(external).unwrap_or(&Value::Null)
    }

    fn str(&self, internal: &str) -> &str {
        self.get(internal).as_str().unwrap_or("")
    }

    fn set(&self, internal: &str) -> bool {
        match self.get(internal) {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_i64() != Some(0),
            Value::Object(m) => m.values().any(|v| !v.is_null() && v != ""),
            _ => true,
        }
    }
}

/// `legacyValidateEvent`: both APIs.
fn legacy_event(e: &InternalEvent, problems: &mut Vec<Problem>) {
    let namespace = e.obj["metadata"]["namespace"].as_str().unwrap_or("");
    let involved_ns = e.get("involvedObject")["namespace"].as_str().unwrap_or("");
    let controller_field = if e.core {
        "reportingComponent"
    } else {
        "reportingController"
    };
    let ns_mismatch = invalid(
        "involvedObject.namespace",
        involved_ns,
        "does not match event.namespace",
    );
    if !e.set("eventTime") {
        // An "old" Event: the namespaces must agree.
        let agree = if involved_ns.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved_ns
        };
        if !agree {
            problems.push(ns_mismatch);
        }
    } else {
        if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
            problems.push(ns_mismatch);
        }
        let controller = e.str("reportingController");
        if controller.is_empty() {
            problems.push(required(controller_field));
        }
        for m in qualified_name_errors(controller) {
            problems.push(invalid(controller_field, controller, &m));
        }
        for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let value = e.str(field);
            if value.is_empty() {
                problems.push(required(field));
            }
            if value.len() > limit {
                problems.push(invalid(
                    field,
                    "",
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if e.str("message").len() > 1024 {
            problems.push(invalid("message", "", "can have at most 1024 characters"));
        }
    }
    for m in dns_subdomain_errors(namespace) {
        problems.push(invalid("namespace", namespace, &m));
    }
}

/// `validateV1EventSeries`.
fn event_series(e: &InternalEvent, problems: &mut Vec<Problem>) {
    let series = e.get("series");
    if series.is_null() {
        return;
    }
    if series["count"].as_i64().unwrap_or(0) < 2 {
        problems.push(invalid("series.count", "", "should be at least 2"));
    }
    if series["lastObservedTime"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        problems.push(required("series.lastObservedTime"));
    }
}

/// `ValidateEventCreate`/`ValidateEventUpdate`. `metadata` validates the object metadata,
/// which the strict (events.k8s.io) validation does at its place in the order.
pub fn validate_event(
    kind: &ResourceKind,
    obj: &Value,
    old: Option<&Value>,
    metadata: impl FnOnce(&mut Vec<Problem>),
) -> Vec<Problem> {
    let e = InternalEvent {
        obj,
        core: *kind == CORE_EVENTS,
    };
    let mut problems = Vec::new();
    legacy_event(&e, &mut problems);
    if e.core {
        // core/v1 gets the legacy checks only, for backwards compatibility.
        return problems;
    }
    metadata(&mut problems);
    match old {
        None => {
            event_series(&e, &mut problems);
            if !e.set("eventTime") {
                problems.push(required("eventTime"));
            }
            let type_ = e.str("type");
            if type_ != "Normal" && type_ != "Warning" {
                problems.push(invalid("type", "", &format!("has invalid value: {type_}")));
            }
            for field in ["firstTimestamp", "lastTimestamp", "count", "source"] {
                if e.set(field) {
                    problems.push(invalid(field, "", "needs to be unset"));
                }
            }
        }
        Some(old) => {
            let was = InternalEvent {
                obj: old,
                core: false,
            };
            if e.get("series") != was.get("series") {
                event_series(&e, &mut problems);
            }
            // Rendered with the JSON of the new value; the real server prints Go values.
            // eventTime is compared as sent (the real server tolerates sub-microsecond changes).
            for field in [
                "involvedObject",
                "reason",
                "message",
                "source",
                "firstTimestamp",
                "lastTimestamp",
                "count",
                "type",
                "eventTime",
                "action",
                "related",
                "reportingController",
                "reportingInstance",
            ] {
                if e.get(field) != was.get(field) {
                    problems.push((
                        field.into(),
                        format!("Invalid value: {}: field is immutable", e.get(field)),
                    ));
                }
            }
        }
    }
    problems
}
