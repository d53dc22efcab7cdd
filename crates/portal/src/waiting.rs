//! A page waiting for a citizen's device: a server-sent event stream that
//! follows a state in a watch channel until it is final or its deadline.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

use crate::sessions::now_ms;

/// How often the stream says it is still waiting.
pub const WAIT_EVENT_INTERVAL: Duration = Duration::from_secs(15);

pub type EventStream = ReceiverStream<Result<Event, Infallible>>;

/// Sends `render(state)` now and at every change (and every
/// [`WAIT_EVENT_INTERVAL`]) until `render` says the state is final, or
/// `expired` once `expires_ms` passes. The task ends when the browser goes
/// away.
pub fn follow<S, F>(mut state: watch::Receiver<S>, expires_ms: u64, render: F) -> Sse<EventStream>
where
    S: Send + Sync + 'static,
    F: Fn(&S) -> (Event, bool) + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(expires_ms.saturating_sub(now_ms()));
        loop {
            let (event, last) = render(&state.borrow_and_update());
            if sender.send(Ok(event)).await.is_err() || last {
                return;
            }
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(WAIT_EVENT_INTERVAL) => {}
                () = tokio::time::sleep_until(deadline) => {
                    let expired = Event::default().event("expired").data("the code expired");
                    let _ = sender.send(Ok(expired)).await;
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(receiver))
}
