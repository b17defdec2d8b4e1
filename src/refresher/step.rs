//! The controller's state machine as pure functions: from a decision on a Secret, or from
//! the outcome of its refresh, to where it goes on the schedule and how it stands (the idea
//! behind kube-runtime's `Action`). `controller` applies the step; these only say what it is.

use std::time::Duration;

use jiff::Timestamp;

use crate::contract::plan::Plan;
use crate::contract::standing::NotFilled;
use crate::refresher::write::Outcome;
use crate::telemetry::metrics::SecretState;

/// Where a Secret goes on the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Due now.
    Now,
    /// Due at this time (the controller spreads it with jitter).
    At(Timestamp),
    /// Off the schedule until it changes; its failures are remembered.
    UntilChanged,
    /// Off the schedule, its failures forgotten.
    Forget,
    /// Failed: retried after the next backoff step.
    Backoff,
    /// Where it was.
    Stay,
}

/// What one decision or one finished refresh does to a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub requeue: Requeue,
    /// Its backoff starts over.
    pub succeeded: bool,
    /// `None`: no longer counted (opted out, released).
    pub state: Option<SecretState>,
    /// Why kubeecr will not fill it, for one Event.
    pub not_filled: Option<NotFilled>,
}

impl Step {
    fn new(requeue: Requeue, state: Option<SecretState>) -> Self {
        Self {
            requeue,
            succeeded: false,
            state,
            not_filled: None,
        }
    }

    fn succeeded(mut self) -> Self {
        self.succeeded = true;
        self
    }

    fn skipped(why: NotFilled) -> Self {
        Self {
            not_filled: Some(why),
            ..Self::new(Requeue::Forget, Some(SecretState::Invalid))
        }
    }
}

/// After deciding on a Secret. `failing`: its last refresh failed, so a Secret that is due
/// counts as failing until a refresh succeeds.
pub fn after_decision(plan: Plan, now: Timestamp, failing: bool) -> Step {
    let due = if failing {
        SecretState::Failing
    } else {
        SecretState::Due
    };
    match plan {
        Plan::UpToDate { due_at: Some(at) } if at <= now => Step::new(Requeue::Now, Some(due)),
        Plan::UpToDate { due_at: Some(at) } => {
            Step::new(Requeue::At(at), Some(SecretState::Filled))
        }
        Plan::UpToDate { due_at: None } => {
            Step::new(Requeue::UntilChanged, Some(SecretState::Filled))
        }
        Plan::Fill { .. } | Plan::Release(_) => Step::new(Requeue::Now, Some(due)),
        Plan::Skip(why) => Step::skipped(why),
    }
}

/// After a refresh finished. A write is due again `refresh_before` ahead of the new expiry;
/// until the watch brings the written object (and with it the next decision), that stands.
pub fn after_refresh(outcome: Outcome, now: Timestamp, refresh_before: Duration) -> Step {
    match outcome {
        Outcome::Refreshed { expires_at, .. } => {
            let requeue = expires_at
                .checked_sub(refresh_before)
                .map_or(Requeue::Stay, Requeue::At);
            Step::new(requeue, Some(SecretState::Filled)).succeeded()
        }
        Outcome::Released => Step::new(Requeue::Forget, None),
        // Up to date, yet due already: nothing better can be written now. Back off rather
        // than come straight back.
        Outcome::Unchanged { due_at: Some(at) } if at <= now => {
            Step::new(Requeue::Backoff, Some(SecretState::Failing))
        }
        Outcome::Unchanged { due_at: Some(at) } => {
            Step::new(Requeue::At(at), Some(SecretState::Filled)).succeeded()
        }
        Outcome::Unchanged { due_at: None } => {
            Step::new(Requeue::Stay, Some(SecretState::Filled)).succeeded()
        }
        Outcome::Skipped(why) => Step::skipped(why),
        Outcome::Failed(_) => Step::new(Requeue::Backoff, Some(SecretState::Failing)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::secret_update::DueReason;
    use crate::contract::standing::Leftovers;
    use crate::refresher::write::{Failure, FailureKind};

    const MARGIN: Duration = Duration::from_secs(4 * 3600);

    fn now() -> Timestamp {
        "2026-12-05T08:00:00Z".parse().unwrap()
    }

    fn at(hours: i64) -> Timestamp {
        now() + jiff::SignedDuration::from_hours(hours)
    }

    #[test]
    fn a_decision_schedules_what_is_due_and_forgets_what_is_refused() {
        let up_to_date = |due_at| Plan::UpToDate { due_at };
        assert_eq!(
            after_decision(up_to_date(Some(at(5))), now(), false),
            Step::new(Requeue::At(at(5)), Some(SecretState::Filled))
        );
        assert_eq!(
            after_decision(up_to_date(Some(at(-1))), now(), false),
            Step::new(Requeue::Now, Some(SecretState::Due))
        );
        assert_eq!(
            after_decision(up_to_date(None), now(), false),
            Step::new(Requeue::UntilChanged, Some(SecretState::Filled))
        );
        assert_eq!(
            after_decision(Plan::Release(Leftovers::default()), now(), true),
            Step::new(Requeue::Now, Some(SecretState::Failing)),
            "due and failing counts as failing"
        );
        let step = after_decision(Plan::Skip(NotFilled::Immutable), now(), true);
        assert_eq!(
            (step.requeue, step.state, step.not_filled),
            (
                Requeue::Forget,
                Some(SecretState::Invalid),
                Some(NotFilled::Immutable)
            )
        );
        assert!(!step.succeeded);
    }

    #[test]
    fn a_refresh_is_due_again_its_margin_ahead_of_the_new_expiry() {
        let step = after_refresh(
            Outcome::Refreshed {
                reason: DueReason::NeverFilled,
                expires_at: at(12),
                first_fill: true,
            },
            now(),
            MARGIN,
        );
        assert_eq!(
            step,
            Step::new(Requeue::At(at(8)), Some(SecretState::Filled)).succeeded()
        );
    }

    #[test]
    fn nothing_newer_when_due_backs_off_instead_of_spinning() {
        assert_eq!(
            after_refresh(
                Outcome::Unchanged {
                    due_at: Some(now())
                },
                now(),
                MARGIN
            ),
            Step::new(Requeue::Backoff, Some(SecretState::Failing))
        );
        assert_eq!(
            after_refresh(
                Outcome::Unchanged {
                    due_at: Some(at(3))
                },
                now(),
                MARGIN
            ),
            Step::new(Requeue::At(at(3)), Some(SecretState::Filled)).succeeded()
        );
        assert_eq!(
            after_refresh(Outcome::Unchanged { due_at: None }, now(), MARGIN),
            Step::new(Requeue::Stay, Some(SecretState::Filled)).succeeded()
        );
    }

    #[test]
    fn failures_back_off_releases_and_refusals_are_forgotten() {
        let failed = Outcome::Failed(Failure {
            kind: FailureKind::Api,
            message: "ns/s: patching it: timeout".into(),
            note: "patching it: timeout".into(),
        });
        assert_eq!(
            after_refresh(failed, now(), MARGIN),
            Step::new(Requeue::Backoff, Some(SecretState::Failing))
        );
        assert_eq!(
            after_refresh(Outcome::Released, now(), MARGIN),
            Step::new(Requeue::Forget, None)
        );
        let skipped = after_refresh(Outcome::Skipped(NotFilled::Deleted), now(), MARGIN);
        assert_eq!(skipped.requeue, Requeue::Forget);
        assert_eq!(skipped.not_filled, Some(NotFilled::Deleted));
    }
}
