//! Control frames on QUIC streams: a framed bidirectional stream ([`Framed`]), one-shot
//! requests ([`request`]), and single frames ahead of raw bytes ([`read_frame`],
//! [`write_frame`]) for tunnel streams.

use std::time::Duration;

use anyhow::{Context, bail};

use super::frame::{DEFAULT_MAX_FRAME, FrameDecoder, encode};
use super::messages::{Control, Refusal, RefusalCode};

/// How long a request may take before it is abandoned (path probes included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One bidirectional stream carrying control frames.
pub struct Framed {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl Framed {
    /// Wrap an open stream pair.
    pub fn new((send, recv): (quinn::SendStream, quinn::RecvStream)) -> Self {
        Framed { send, recv, decoder: FrameDecoder::new(DEFAULT_MAX_FRAME) }
    }

    /// Send one message.
    pub async fn send(&mut self, message: &Control) -> anyhow::Result<()> {
        let bytes = encode(message, DEFAULT_MAX_FRAME)?;
        self.send.write_all(&bytes).await.context("sending a control frame")?;
        Ok(())
    }

    /// The next message; `None` when the peer finished the stream cleanly. A malformed or
    /// oversized frame is an error: the caller closes the stream.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Control>> {
        loop {
            if let Some(message) = self.decoder.decode::<Control>()? {
                return Ok(Some(message));
            }
            match self.recv.read_chunk(64 * 1024, true).await.context("reading a control frame")? {
                Some(chunk) => self.decoder.push(&chunk.bytes),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// Refuse: tell the peer what kind of refusal and why, and close our side.
    pub async fn refuse(mut self, code: RefusalCode, reason: &str) {
        let _ = self.send(&Control::refused(code, reason)).await;
        let _ = self.send.finish();
        // Give the frame a moment to leave before the stream is dropped.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.send.stopped()).await;
    }

    /// Finish our side of the stream.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

/// Open a stream on `conn`, send `request`, and wait for one answer. A `Refused` answer is an
/// error holding a [`Refusal`] (find it with `downcast_ref`), so the caller can tell whether a
/// retry may help.
pub async fn request(conn: &quinn::Connection, request: &Control) -> anyhow::Result<Control> {
    let exchange = async {
        let mut stream = Framed::new(conn.open_bi().await.context("opening a control stream")?);
        stream.send(request).await?;
        stream.finish();
        match stream.recv().await? {
            Some(Control::Refused { code, retry, reason }) => Err(Refusal { code, retry, reason }.into()),
            Some(answer) => Ok(answer),
            None => bail!("the peer closed the stream without answering"),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.context("no answer in time")?
}

/// The largest first frame of a stream read with [`read_frame`] (requests, tunnel opens).
pub const MAX_HEADER_FRAME: usize = 64 * 1024;

/// Read exactly one frame from `recv` — no byte beyond it, so raw bytes may follow — within
/// `timeout`. End of stream before a whole frame is an error.
pub async fn read_frame(recv: &mut quinn::RecvStream, timeout: Duration) -> anyhow::Result<Control> {
    let read = async {
        let mut head = [0u8; 4];
        recv.read_exact(&mut head).await.context("reading a frame header")?;
        let len = u32::from_be_bytes(head) as usize;
        let mut decoder = FrameDecoder::new(MAX_HEADER_FRAME);
        decoder.push(&head);
        // The decoder refuses an oversized length before we allocate for it.
        if let Err(e) = decoder.decode::<Control>() {
            return Err(e.into());
        }
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.context("reading a frame")?;
        decoder.push(&body);
        decoder.decode::<Control>()?.context("incomplete frame")
    };
    tokio::time::timeout(timeout, read).await.context("no frame in time")?
}

/// Write one frame to `send`.
pub async fn write_frame(send: &mut quinn::SendStream, message: &Control) -> anyhow::Result<()> {
    let bytes = encode(message, DEFAULT_MAX_FRAME)?;
    send.write_all(&bytes).await.context("sending a frame")?;
    Ok(())
}
