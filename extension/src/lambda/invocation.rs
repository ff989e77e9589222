//! End-of-invocation signals: how the lifecycle learns that the runtime has answered.
//!
//! Two sources feed one channel: the Telemetry API listener (`platform.runtimeDone`, forwarded by
//! the lifecycle itself) and, through [`InvocationEndSender`], the Runtime API proxy, which sees
//! the runtime's `POST /runtime/invocation/{id}/response|error` before Lambda does. The lifecycle
//! takes the first signal for the current request id and ignores the rest, so sending the same
//! end twice, or for a request that is already over, is harmless.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Who saw the invocation end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndSource {
    /// The Telemetry API's `platform.runtimeDone`.
    Telemetry,
    /// The Runtime API proxy saw the runtime post its response or error.
    RuntimeProxy,
}

impl EndSource {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndSource::Telemetry => "telemetry",
            EndSource::RuntimeProxy => "runtime_proxy",
        }
    }
}

/// Keeps the answer to whoever signalled an invocation's end (Lambda's Telemetry API delivery,
/// the runtime's `POST …/response`) from being written until it is dropped, or until
/// [`ANSWER_HOLD_MAX`] has passed. The lifecycle drops its holds once its `event/next` is handed
/// to its connection, so that request leaves first: an answer costs a write (and, on the
/// Telemetry API's connection, a shutdown and a close) that would otherwise come between the
/// end and `event/next` (docs/performance.md, "Answering after event/next").
#[derive(Debug)]
pub struct AnswerHold {
    _release: oneshot::Sender<()>,
}

/// The answering side of an [`AnswerHold`].
#[derive(Debug)]
pub struct HeldAnswer(oneshot::Receiver<()>);

/// The longest an answer is held: far beyond a flush to the daemon, well within what Lambda and
/// a runtime client wait for an answer.
pub const ANSWER_HOLD_MAX: Duration = Duration::from_millis(100);

/// A new hold and its answering side.
pub fn hold_answer() -> (AnswerHold, HeldAnswer) {
    let (tx, rx) = oneshot::channel();
    (AnswerHold { _release: tx }, HeldAnswer(rx))
}

impl HeldAnswer {
    /// Waits until the hold is dropped, at most [`ANSWER_HOLD_MAX`].
    pub async fn released(self) {
        let _ = tokio::time::timeout(ANSWER_HOLD_MAX, self.0).await;
    }
}

/// The runtime has finished one invocation.
#[derive(Debug)]
pub struct InvocationEnd {
    /// The request id (`Lambda-Runtime-Aws-Request-Id` / the INVOKE event's `requestId`).
    pub request_id: String,
    /// Who saw it.
    pub source: EndSource,
    /// `None` for a response, the error type (e.g. `Runtime.HandlerError`) for an error.
    pub error_type: Option<String>,
    /// The hold on the signaller's answer, for the lifecycle to drop.
    pub hold: Option<AnswerHold>,
}

/// How many signals may wait in the channel; more are dropped (the deadline still ends the wait).
pub const END_CHANNEL_CAPACITY: usize = 64;

/// Cloneable sender for end-of-invocation signals. The Runtime API proxy holds one.
#[derive(Debug, Clone)]
pub struct InvocationEndSender {
    tx: mpsc::Sender<InvocationEnd>,
}

/// The lifecycle's end of the channel.
#[derive(Debug)]
pub struct InvocationEndReceiver {
    rx: mpsc::Receiver<InvocationEnd>,
}

/// A new channel.
pub fn invocation_end_channel() -> (InvocationEndSender, InvocationEndReceiver) {
    let (tx, rx) = mpsc::channel(END_CHANNEL_CAPACITY);
    (InvocationEndSender { tx }, InvocationEndReceiver { rx })
}

impl InvocationEndSender {
    /// Signals that `request_id` is over. Never blocks: returns `None` when the signal could not
    /// be queued (the lifecycle is gone or far behind), in which case the Telemetry API or the
    /// invocation deadline ends the wait instead; otherwise the answer to await before answering
    /// the runtime ([`AnswerHold`]).
    pub fn invocation_ended(
        &self,
        request_id: impl Into<String>,
        source: EndSource,
        error_type: Option<String>,
    ) -> Option<HeldAnswer> {
        let (hold, held) = hold_answer();
        self.tx
            .try_send(InvocationEnd {
                request_id: request_id.into(),
                source,
                error_type,
                hold: Some(hold),
            })
            .ok()
            .map(|()| held)
    }
}

impl InvocationEndReceiver {
    /// The next signal; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<InvocationEnd> {
        self.rx.recv().await
    }
}

/// A small set of the most recent request ids, oldest evicted first. Used to remember ends that
/// arrive before their INVOKE is processed and to keep duplicated telemetry idempotent.
#[derive(Debug, Clone)]
pub struct RecentIds {
    ids: VecDeque<String>,
    cap: usize,
}

impl RecentIds {
    /// Keeps at most `cap` ids (at least one).
    pub fn new(cap: usize) -> Self {
        RecentIds {
            ids: VecDeque::with_capacity(cap.max(1)),
            cap: cap.max(1),
        }
    }

    /// True when `id` is remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.iter().any(|x| x == id)
    }

    /// Remembers `id`; returns false when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.contains(id) {
            return false;
        }
        if self.ids.len() == self.cap {
            self.ids.pop_front();
        }
        self.ids.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_evict_oldest() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        assert!(r.insert("b"));
        assert!(r.insert("c"));
        assert!(!r.contains("a"));
        assert!(r.contains("b") && r.contains("c"));
    }

    #[tokio::test]
    async fn sender_never_blocks() {
        let (tx, mut rx) = invocation_end_channel();
        for i in 0..END_CHANNEL_CAPACITY {
            assert!(
                tx.invocation_ended(format!("r{i}"), EndSource::RuntimeProxy, None)
                    .is_some()
            );
        }
        assert!(
            tx.invocation_ended("overflow", EndSource::RuntimeProxy, None)
                .is_none()
        );
        let first = rx.recv().await.unwrap();
        assert_eq!(first.request_id, "r0");
        assert_eq!(first.source, EndSource::RuntimeProxy);
        drop(rx);
        assert!(
            tx.invocation_ended("late", EndSource::Telemetry, None)
                .is_none()
        );
    }
}
