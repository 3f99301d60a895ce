//! A cancellation future a session may poll at every turn of its I/O loop for the cost of an atomic load.
//!
//! Polling tokio-util's `WaitForCancellationFutureOwned` takes the token's mutex and the `Notify`'s waiter
//! lock every time, and a session polls its kill token several times per transaction (it polled a drain
//! token too, then): ~4% of pgwarden's CPU at pgbench -S with 100 clients, mostly cache misses on the
//! locks. [`Signal`] polls the inner future once, with a waker of its own that raises a flag before waking
//! the task, and polls it again only when that flag is up (or when the task's waker changed).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Resolves once its token is cancelled; cheap to poll while it is not.
pub struct Signal {
    inner: Pin<Box<WaitForCancellationFutureOwned>>,
    flag: Arc<Flag>,
    /// The task waker `flag` forwards to, as of the last registration (compared, never woken, here).
    task: Option<Waker>,
    /// `flag` wrapped as a waker, built once.
    waker: Waker,
    /// Resolved already: stays resolved, as the inner future does.
    done: bool,
}

/// Raised by the inner future's wake-up, then passed on to the task.
struct Flag {
    raised: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raised.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl Signal {
    pub fn new(token: CancellationToken) -> Self {
        let flag = Arc::new(Flag {
            raised: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        Self {
            inner: Box::pin(token.cancelled_owned()),
            waker: Waker::from(Arc::clone(&flag)),
            flag,
            task: None,
            done: false,
        }
    }
}

impl Future for Signal {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        let same_task = this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()));
        // Registered for this task and not woken since: nothing can have happened.
        if same_task && !this.flag.raised.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        if !same_task {
            *this.flag.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            this.task = Some(cx.waker().clone());
        }
        // Lowered before polling: a cancellation from here on raises it again.
        this.flag.raised.store(false, Ordering::Release);
        let poll = this
            .inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker));
        this.done = poll.is_ready();
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_on_cancel_after_being_polled_pending() {
        let token = CancellationToken::new();
        let mut signal = Signal::new(token.child_token());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut signal).poll(&mut cx).is_pending());
        // The cheap path: registered, nothing raised.
        assert!(Pin::new(&mut signal).poll(&mut cx).is_pending());
        let waiter = tokio::spawn(signal);
        tokio::task::yield_now().await;
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the signal resolved")
            .expect("the task ran");
    }

    #[tokio::test]
    async fn resolves_at_once_when_already_cancelled() {
        let token = CancellationToken::new();
        token.cancel();
        let mut signal = Signal::new(token);
        (&mut signal).await;
        // Stays resolved.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut signal).poll(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn works_inside_select_polled_many_times() {
        let token = CancellationToken::new();
        let mut signal = Signal::new(token.clone());
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            token.cancel();
        });
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                () = &mut signal => break,
                () = tokio::time::sleep(std::time::Duration::from_millis(1)) => ticks += 1,
            }
        }
        assert!(ticks > 0);
        canceller.await.expect("canceller");
    }
}
