//! A binding's own listener: every accepted client is carried over the binding's tunnel —
//! as one tunnel stream (`tcp`), or as an HTTP connection whose requests are translated
//! ([`super::http`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::controller::bindings::Stats;
use crate::controller::budget::ClientSlot;
use crate::controller::{Controller, Mode};
use crate::tunnel::hop;
use crate::tunnel::splice::Side;

/// Accept the binding's connections until it is closed (or the controller shuts down).
pub(super) async fn serve_binding(
    controller: Arc<Controller>,
    listener: tokio::net::TcpListener,
    id: u64,
    mode: Mode,
    cancelled: watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let mut watch = cancelled.clone();
    let closed = async move {
        let _ = watch.wait_for(|c| *c).await;
    };
    let mut closed = std::pin::pin!(closed);
    let max = controller.ingress_config().max_connections;
    while let Some((client, remote)) = crate::shutdown::accept(&listener, closed.as_mut()).await {
        // Over either cap the client is closed at once: it costs no task and no descriptor.
        let Some(place) = controller.budget().admit("binding") else { continue };
        let Some(slot) = ClientSlot::take(&stats.clients, max) else {
            controller.budget().closed("binding", &format!("binding {id} holds max_connections ({max})"));
            continue;
        };
        let _ = client.set_nodelay(true);
        let (cancel, stats) = (cancelled.clone(), Arc::clone(&stats));
        // Debug level: a span lives as long as its connection, and an enabled one costs a few
        // KiB of the log's state per idle connection. Events name the session instead.
        let span = tracing::debug_span!("client", %remote, session = tracing::field::Empty);
        let controller_ = Arc::clone(&controller);
        let task = async move {
            let _held = (place, slot);
            match mode {
                Mode::Http => super::http::serve(controller_, id, client, remote, cancel, stats).await,
                _ => carry_tcp(controller_, id, client, remote, cancel, stats).await,
            }
        };
        controller.spawner().spawn(in_spans(task, span));
    }
}

/// `task` in the client's `span`, itself inside the binding's span (the current one): a task
/// spawned from here keeps its binding's context even while the client span is disabled.
fn in_spans<F: std::future::Future>(
    task: F,
    span: tracing::Span,
) -> impl std::future::Future<Output = F::Output> {
    use tracing::Instrument;
    task.instrument(span).in_current_span()
}

/// Carry one `tcp` client of binding `id` over a new tunnel stream.
async fn carry_tcp(
    controller: Arc<Controller>,
    id: u64,
    client: tokio::net::TcpStream,
    remote: SocketAddr,
    cancel: watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let ingress = client.local_addr().unwrap_or(remote);
    let session = controller.start_session(id, remote, ingress, None).await;
    tracing::Span::current().record("session", session);
    let early = already_sent(&client);
    let early_len = early.len() as u64;
    let (send, recv, _slot) = match controller.open_stream(id, &stats, early).await {
        Ok(opened) => opened,
        Err(e) => {
            // Reset the client rather than close cleanly: it must see a failure.
            let _ = client.set_zero_linger();
            tracing::warn!(session, %remote, "connection refused: {e:#}");
            controller.end_session(session, 0, 0, format!("{e:#}"));
            return;
        }
    };
    super::carry(&controller, session, Side::Tcp(client), (send, recv, early_len), cancel, &stats).await;
}

/// What a new client has already sent, without waiting (at most [`hop::EARLY_MAX`] bytes),
/// to go with the tunnel's opening frame. Read from the socket directly: tokio learns of a new
/// socket's first bytes only at its next poll of the kernel, after this would have run.
pub(super) fn already_sent(client: &tokio::net::TcpStream) -> Bytes {
    use std::io::Read;
    let mut buf = [0u8; hop::EARLY_MAX];
    // The socket is non-blocking: nothing there yet is `WouldBlock`, and the client's bytes
    // then travel after the opening, as any later ones do. A real error shows at the next read.
    match (&*socket2::SockRef::from(client)).read(&mut buf) {
        Ok(n) => Bytes::copy_from_slice(&buf[..n]),
        Err(_) => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn already_sent_takes_what_arrived_and_never_waits() {
        let (mut client, server) = pair().await;
        assert!(already_sent(&server).is_empty(), "nothing sent yet: nothing, at once");
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = Bytes::new();
        for _ in 0..100 {
            got = already_sent(&server);
            if !got.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(&got[..], b"GET / HTTP/1.1\r\n\r\n");
        assert!(already_sent(&server).is_empty(), "taken once");
    }
}
