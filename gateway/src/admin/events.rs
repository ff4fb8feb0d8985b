//! `GET /v1/events`: the controller's events as they happen, as server-sent events — what a
//! dashboard's live feed and `skybridge ctl watch` read. Each event is one message: `event:`
//! its type (`node-down`, `rerouted`, …), `data:` its JSON (with `at_unix_ms`). A subscriber
//! that falls behind by more than the channel holds gets a `lagged` message saying how many
//! it missed; an idle stream carries a comment every [`KEEP_ALIVE`] so proxies keep it open.
//! At most [`MAX_STREAMS`] streams at once (a 503 beyond); each ends at the controller's
//! shutdown or when its client goes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};

use crate::controller::Controller;
use crate::controller::events::Stamped;

/// Event streams served at once.
pub const MAX_STREAMS: usize = 32;

/// An idle stream carries a comment this often.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The content type of the stream.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// A response body fed by a channel: it ends when the sender goes.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// One event as a server-sent-events message.
pub fn message(stamped: &Stamped) -> Bytes {
    let data = serde_json::to_string(stamped).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let kind = serde_json::to_value(stamped)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "event".to_owned());
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// Start a stream of `controller`'s events — the latest `recent` first (`?recent=N`, at most
/// [`crate::controller::events::RECENT`]; none by default), then each as it happens — if there
/// is room: its body.
pub fn stream(controller: &Controller, room: &Arc<Semaphore>, recent: usize) -> Option<ChannelBody> {
    let permit = Arc::clone(room).try_acquire_owned().ok()?;
    let (recent, events) = controller.subscribe_with_recent(recent);
    let (tx, rx) = mpsc::channel(64);
    controller.spawner().spawn(forward(recent, events, tx, permit));
    Some(ChannelBody(rx))
}

async fn forward(
    recent: Vec<Stamped>,
    mut events: broadcast::Receiver<Stamped>,
    tx: mpsc::Sender<Bytes>,
    _permit: OwnedSemaphorePermit,
) {
    // A first comment, so that the client sees the stream is open before any event.
    if tx.send(Bytes::from_static(b": events from now on\n\n")).await.is_err() {
        return;
    }
    for stamped in &recent {
        if tx.send(message(stamped)).await.is_err() {
            return;
        }
    }
    loop {
        let chunk = tokio::select! {
            got = events.recv() => match got {
                Ok(stamped) => message(&stamped),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Bytes::from(format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n"))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
            () = tx.closed() => return,
        };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::events::Event;

    #[test]
    fn an_event_is_one_message_named_by_its_type() {
        let stamped = Stamped { at_unix_ms: 7, event: Event::NodeDown { node: "r2".into(), silent_ms: 505 } };
        assert_eq!(
            message(&stamped),
            Bytes::from_static(
                b"event: node-down\ndata: {\"at_unix_ms\":7,\"type\":\"node-down\",\"node\":\"r2\",\"silent_ms\":505}\n\n"
            )
        );
    }
}
