//! A page waiting for a citizen's (or officer's) device: what it waits
//! for, kept by id ([`Waits`]), and a server-sent event stream that follows
//! its state until it is final or its deadline ([`follow`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

use crate::sessions::now_ms;

/// Waits held at once, of one kind (logins, signing requests).
pub const WAITS_MAX: usize = 10_000;

/// One page's wait: its browser session, its deadline, its state (which
/// the device's answer advances) and what the answer must match.
pub struct Wait<T, S> {
    pub session_token: String,
    pub expires_ms: u64,
    pub state: watch::Sender<S>,
    pub expected: T,
}

/// The waits of one kind, by id (a login nonce, a request id); a browser
/// session has at most one, its latest page's.
pub struct Waits<T, S> {
    by_id: Mutex<HashMap<String, Wait<T, S>>>,
}

impl<T, S> Default for Waits<T, S> {
    fn default() -> Self {
        Self {
            by_id: Mutex::new(HashMap::new()),
        }
    }
}

impl<T, S> Waits<T, S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Wait<T, S>>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `wait` in place of its session's earlier one, after forgetting
    /// the expired; false when [`WAITS_MAX`] are held.
    pub fn insert(&self, id: String, wait: Wait<T, S>) -> bool {
        let now = now_ms();
        let mut waits = self.lock();
        waits.retain(|_, kept| kept.expires_ms > now && kept.session_token != wait.session_token);
        if waits.len() >= WAITS_MAX {
            return false;
        }
        waits.insert(id, wait);
        true
    }

    /// The state of the session's wait and when it expires.
    pub fn of_session(&self, token: &str) -> Option<(watch::Receiver<S>, u64)> {
        self.lock()
            .values()
            .find(|wait| wait.session_token == token)
            .map(|wait| (wait.state.subscribe(), wait.expires_ms))
    }

    /// `read` of the wait `id`, if there is one.
    pub fn find<R>(&self, id: &str, read: impl FnOnce(&Wait<T, S>) -> R) -> Option<R> {
        self.lock().get(id).map(read)
    }

    /// Removes the session's wait when `take` returns something for it.
    pub fn take_of_session<R>(
        &self,
        token: &str,
        take: impl FnOnce(&Wait<T, S>) -> Option<R>,
    ) -> Option<R> {
        let mut waits = self.lock();
        let id = waits
            .iter()
            .find(|(_, wait)| wait.session_token == token)
            .map(|(id, _)| id.clone())?;
        let taken = take(waits.get(&id)?)?;
        waits.remove(&id);
        Some(taken)
    }
}

/// The event stream of the wait of the request's browser session:
/// `render` gives a final state's event; a state that is not final is
/// `waiting`, or `refused` with the reason of the last refused answer.
pub fn stream_of_session<T, S, F>(
    waits: &Waits<T, S>,
    sessions: &crate::sessions::Sessions,
    headers: &http::HeaderMap,
    render: F,
) -> Result<Sse<EventStream>, http::StatusCode>
where
    S: Send + Sync + 'static,
    F: Fn(&S) -> Result<Event, Option<String>> + Send + 'static,
{
    let session = sessions
        .get(headers)
        .ok_or(http::StatusCode::UNAUTHORIZED)?;
    let (state, expires_ms) = waits
        .of_session(&session.token)
        .ok_or(http::StatusCode::NOT_FOUND)?;
    Ok(follow(state, expires_ms, move |state| {
        match render(state) {
            Ok(done) => (done, true),
            Err(Some(reason)) => (
                Event::default()
                    .event("refused")
                    .data(reason.replace('\n', " ")),
                false,
            ),
            Err(None) => (Event::default().event("waiting").data("waiting"), false),
        }
    }))
}

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
