//! Log setup: plain or JSON lines on stderr, filtered by tracing's EnvFilter syntax.
//!
//! Whatever filter is given, the targets that log wire-level detail (the AWS SDK, hyper, h2,
//! rustls, tower, kube's client) are capped at DEBUG: at TRACE they log raw request and
//! response bodies, and GetAuthorizationToken's response holds the token. kube's client's
//! warnings are dropped too: one of them holds the body of an answer it could not decode.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// EnvFilter directives, e.g. `info,kubeecr=debug`.
    pub filter: String,
    /// Where the filter came from (`--log-level`, `RUST_LOG`), for an error about it.
    pub source: &'static str,
}

/// Target prefixes never logged at TRACE.
pub const WIRE_TARGETS: &[&str] = &[
    "aws_",
    "hyper",
    "h2",
    "rustls",
    "tokio_rustls",
    "tower",
    "kube_client",
];

fn is_wire_trace(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() == Level::TRACE && WIRE_TARGETS.iter().any(|t| meta.target().starts_with(t))
}

/// kube's client logs the whole body of an answer it cannot decode, at WARN, and that body
/// can be a Secret or a list of them. Its warnings never reach the log; kubeecr logs its own
/// short error instead (`k8s::describe`).
fn is_kube_client_warning(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() == Level::WARN && meta.target() == "kube_client::client"
}

/// Whether an event is dropped, whatever the filter.
fn is_capped(meta: &tracing::Metadata<'_>) -> bool {
    is_wire_trace(meta) || is_kube_client_warning(meta)
}

pub fn init(settings: &LogSettings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.filter).map_err(|e| {
        anyhow::anyhow!(
            "{} {:?}: {e}; use e.g. info or info,kubeecr=debug",
            settings.source,
            settings.filter
        )
    })?;
    let filter = filter.and(filter_fn(|meta| !is_capped(meta)));
    // Colours only for a person at a terminal, never in `kubectl logs`.
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let layer = match settings.format {
        LogFormat::Plain => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(layer).try_init()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_targets_are_capped_at_debug() {
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;
        struct Cs;
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Cs = Cs;
        let meta = |target: &'static str, level: Level| {
            tracing::Metadata::new(
                "e",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&CS)),
                Kind::EVENT,
            )
        };
        assert!(is_wire_trace(&meta(
            "aws_smithy_runtime::client::orchestrator",
            Level::TRACE
        )));
        assert!(is_wire_trace(&meta("hyper_util::client", Level::TRACE)));
        assert!(!is_wire_trace(&meta("aws_smithy_runtime", Level::DEBUG)));
        assert!(!is_wire_trace(&meta("kubeecr::refresher", Level::TRACE)));
        // The warning that carries an undecodable answer's body.
        assert!(is_capped(&meta("kube_client::client", Level::WARN)));
        assert!(!is_capped(&meta(
            "kube_client::client::builder",
            Level::ERROR
        )));
        assert!(!is_capped(&meta("kubeecr::k8s", Level::WARN)));
    }
}
