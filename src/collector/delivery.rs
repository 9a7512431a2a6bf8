//! End-to-end acknowledgement: a receiver answers its client only once every piece of the
//! request is in every exporter's queue (for a persistent queue: written and fsynced).
//!
//! The receiver creates one [`Delivery`] per request and hands out [`AckRef`]s: each
//! piece of data in flight (a batch in a pipeline, a copy per exporter, the halves of a
//! split batch) holds one. A holder either [`commit`](AckRef::commit)s (its piece is
//! safe) or [`fail`](AckRef::fail)s with the reason; dropping an uncommitted `AckRef`
//! counts as a failure (`Closed`), so data lost to a bug or a shutdown deadline can never
//! be acknowledged. When the last `AckRef` is gone the `Delivery` resolves: `Ok` if
//! every holder committed, else the first error.
//!
//! Memory held for the request (in-flight byte permits) is released at the same moment,
//! so the receiver-side bound covers everything between the receiver and the queues.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::receiver::ConsumeError;

/// The receiver's side: resolves once every [`AckRef`] of the request is gone.
#[derive(Debug)]
pub(crate) struct Delivery {
    result_rx: oneshot::Receiver<Result<(), ConsumeError>>,
}

/// One holder's share of a request's acknowledgement.
#[derive(Debug)]
pub(crate) struct AckRef {
    shared: Arc<Shared>,
    settled: bool,
}

#[derive(Debug)]
struct Shared {
    first_error: Mutex<Option<ConsumeError>>,
    result_tx: Mutex<Option<oneshot::Sender<Result<(), ConsumeError>>>>,
    /// In-flight accounting, released when the request is settled.
    _permits: Vec<OwnedSemaphorePermit>,
}

impl Delivery {
    /// A new request holding `permits` until it is settled.
    pub(crate) fn new(permits: Vec<OwnedSemaphorePermit>) -> (Delivery, AckRef) {
        let (result_tx, result_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            first_error: Mutex::new(None),
            result_tx: Mutex::new(Some(result_tx)),
            _permits: permits,
        });
        (
            Delivery { result_rx },
            AckRef {
                shared,
                settled: false,
            },
        )
    }

    /// Waits until every holder has committed or failed.
    pub(crate) async fn wait(self) -> Result<(), ConsumeError> {
        // The sender lives in `Shared`, which always sends before it is dropped.
        self.result_rx.await.unwrap_or(Err(ConsumeError::Closed))
    }
}

impl AckRef {
    /// This holder's piece is safe.
    pub(crate) fn commit(mut self) {
        self.settled = true;
    }

    /// This holder's piece could not be made safe; the request fails with `error` unless
    /// an earlier holder already failed.
    pub(crate) fn fail(mut self, error: ConsumeError) {
        self.record(error);
        self.settled = true;
    }

    fn record(&self, error: ConsumeError) {
        let mut first_error = self.shared.first_error.lock();
        if first_error.is_none() {
            *first_error = Some(error);
        }
    }
}

impl Clone for AckRef {
    /// Another holder, which must itself commit or fail.
    fn clone(&self) -> Self {
        AckRef {
            shared: Arc::clone(&self.shared),
            settled: false,
        }
    }
}

impl Drop for AckRef {
    fn drop(&mut self) {
        if !self.settled {
            self.record(ConsumeError::Closed);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let result = match self.first_error.get_mut().take() {
            Some(error) => Err(error),
            None => Ok(()),
        };
        if let Some(result_tx) = self.result_tx.get_mut().take() {
            // The receiver may have gone (client disconnected); nothing to tell then.
            let _ = result_tx.send(result);
        }
    }
}

/// Commits every ref.
pub(crate) fn commit_all(acks: Vec<AckRef>) {
    acks.into_iter().for_each(AckRef::commit);
}

/// Fails every ref with `error`.
pub(crate) fn fail_all(acks: Vec<AckRef>, error: &ConsumeError) {
    for ack in acks {
        ack.fail(error.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn full() -> ConsumeError {
        ConsumeError::Full {
            what: "test queue",
            retry_after: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn resolves_ok_once_every_holder_committed() {
        let (delivery, ack) = Delivery::new(Vec::new());
        let copy = ack.clone();
        let half = copy.clone();
        ack.commit();
        copy.commit();
        let mut delivery = Box::pin(delivery.wait());
        assert!(futures::poll!(&mut delivery).is_pending());
        half.commit();
        assert!(delivery.await.is_ok());
    }

    #[tokio::test]
    async fn first_failure_wins() {
        let (delivery, ack) = Delivery::new(Vec::new());
        let other = ack.clone();
        ack.fail(full());
        other.fail(ConsumeError::Invalid("late".into()));
        assert!(matches!(
            delivery.wait().await,
            Err(ConsumeError::Full { .. })
        ));
    }

    #[tokio::test]
    async fn a_dropped_holder_is_never_an_acknowledgement() {
        let (delivery, ack) = Delivery::new(Vec::new());
        let lost = ack.clone();
        ack.commit();
        drop(lost);
        assert!(matches!(delivery.wait().await, Err(ConsumeError::Closed)));
    }

    #[tokio::test]
    async fn permits_are_released_when_settled() {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(4));
        let permit = Arc::clone(&semaphore)
            .try_acquire_many_owned(3)
            .expect("permits");
        let (delivery, ack) = Delivery::new(vec![permit]);
        assert_eq!(semaphore.available_permits(), 1);
        ack.commit();
        assert!(delivery.wait().await.is_ok());
        assert_eq!(semaphore.available_permits(), 4);
    }
}
