//! The one executor: every list of steps that changes Postfix runs through [`execute`], a sync's
//! ([`relay_core::sync_steps`]), its recovery ([`relay_core::RecoveryPlan`]) and a rollback to
//! a backup ([`relay_core::RollbackPlan`], from relay-ops). relay-core plans the order; this
//! module is the only code that turns a [`Step`] into a Postfix command, so an invariant checked
//! on the plans holds for every path that changes Postfix.
//!
//! What differs between the callers (the lines each logs, what is read back while Postfix
//! reloads, whether a failed reload stops the list) is an [`Observer`]. Its hooks are given the
//! Postfix adapter as a [`PostfixRead`] only: an observer reads back, it never changes anything.

use relay_core::{FirstWrites, Step};
use relay_postfix::{PostfixError, PostfixRead, PostfixWrite};

use crate::FailedStep;

/// What a caller of [`execute`] adds to the steps: its log lines and progress, the read-back
/// during and after the steps, and what a failed step means.
///
/// The step hooks are called after the step has succeeded; each has a default that does
/// nothing.
pub trait Observer<P: PostfixRead> {
    /// What a stopped execution reports.
    type Failure;

    /// The transport file now holds `text`, and its map is built.
    fn wrote_transport(&mut self, _postfix: &P, _text: &str) {}

    /// The transport map was rebuilt from its unchanged source.
    fn rebuilt_transport_map(&mut self, _postfix: &P) {}

    /// The relay-domains table now holds `text`, and its map is built.
    fn wrote_relay_domains_map(&mut self, _postfix: &P, _text: &str) {}

    /// The recipients table now holds `text`, and its map is built.
    fn wrote_recipients_map(&mut self, _postfix: &P, _text: &str) {}

    /// `relay_domains` is now `value` in main.cf.
    fn set_relay_domains(&mut self, _value: &str) {}

    /// `relay_recipient_maps` is now `value` in main.cf.
    fn set_relay_recipient_maps(&mut self, _value: &str) {}

    /// `postfix reload` succeeded.
    fn reloaded(&mut self) {}

    /// A step failed with `error`: `Err` stops the execution with that failure; `Ok` goes on
    /// with the next step (a recovery's reload, whose failure it reports at the end).
    fn failed(&mut self, step: FailedStep, error: PostfixError) -> Result<(), Self::Failure>;

    /// Runs `reload` (`postfix reload`) and whatever is to be read back meanwhile, and returns
    /// both results. The default reads nothing back. A sync reads main.cf and the maps beside
    /// the reload, which does not change them: both are processes that mostly wait.
    fn around_reload(
        &self,
        _postfix: &P,
        reload: impl FnOnce() -> Result<(), PostfixError>,
    ) -> (Result<(), PostfixError>, Result<(), Self::Failure>) {
        (reload(), Ok(()))
    }

    /// After the last step: the read-back of what the steps changed, or the failure of a step
    /// that did not stop the execution.
    fn finish(&mut self, _postfix: &P) -> Result<(), Self::Failure> {
        Ok(())
    }
}

/// An execution that stopped: its failure, and how many of the steps were carried out.
#[derive(Debug)]
pub struct Halted<F> {
    /// The steps carried out before it stopped (`steps[..done]`): the index of the step that
    /// failed; one past the reload when what was read back during it was wrong; all of them
    /// when [`Observer::finish`] failed.
    pub done: usize,
    /// What the observer reported.
    pub failure: F,
}

/// Runs `steps` in order through `postfix`, telling `observer` about each.
///
/// Every step either completes or leaves what it touches as it was ([`PostfixWrite`]'s
/// contract), so after a failure, `steps[..done]` ([`Halted::done`]) is exactly what changed.
pub fn execute<P, O>(
    postfix: &P,
    steps: &[Step<'_>],
    observer: &mut O,
) -> Result<(), Halted<O::Failure>>
where
    P: PostfixWrite,
    O: Observer<P>,
{
    for (index, step) in steps.iter().copied().enumerate() {
        let halt = |failure| Halted {
            done: index,
            failure,
        };
        let what = FailedStep::Plan(step.kind());
        // Each arm runs its step and, when it succeeded, tells the observer.
        let result = match step {
            Step::WriteTransport(text) => postfix
                .write_transport(text)
                .map(|()| observer.wrote_transport(postfix, text)),
            Step::RebuildTransportMap => postfix
                .rebuild_transport_map()
                .map(|()| observer.rebuilt_transport_map(postfix)),
            Step::WriteRelayDomainsMap(text) => postfix
                .write_relay_domains_map(text)
                .map(|()| observer.wrote_relay_domains_map(postfix, text)),
            Step::WriteRecipientsMap(text) => postfix
                .write_recipients_map(text)
                .map(|()| observer.wrote_recipients_map(postfix, text)),
            Step::SetRelayDomains(value) => postfix
                .set_relay_domains(value)
                .map(|()| observer.set_relay_domains(value)),
            Step::SetRelayRecipientMaps(value) => postfix
                .set_relay_recipient_maps(value)
                .map(|()| observer.set_relay_recipient_maps(value)),
            Step::Reload => {
                let (reload, read_back) = observer.around_reload(postfix, || postfix.reload());
                match reload {
                    Ok(()) => observer.reloaded(),
                    Err(error) => observer.failed(what, error).map_err(halt)?,
                }
                // A read-back beside the reload that found something wrong stops the steps
                // after the reload, which is done.
                read_back.map_err(|failure| Halted {
                    done: index + 1,
                    failure,
                })?;
                continue;
            }
        };
        if let Err(error) = result {
            observer.failed(what, error).map_err(halt)?;
        }
    }
    observer.finish(postfix).map_err(|failure| Halted {
        done: steps.len(),
        failure,
    })
}

/// Builds ahead, under temporary names, the map databases `steps` will write
/// ([`PostfixWrite::prepare_maps`]); nothing is installed. Run it beside other work that
/// waits (the backup): the steps then only rename each map into place, still in order.
pub fn prepare_maps<P: PostfixWrite>(postfix: &P, steps: &[Step<'_>]) {
    let first = FirstWrites::of(steps);
    if !first.is_empty() {
        postfix.prepare_maps(
            first.transport,
            first.relay_domains_map,
            first.recipients_map,
        );
    }
}
