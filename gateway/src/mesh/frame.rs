//! Control frames, sans-IO: a versioned, length-prefixed serde encoding for the messages nodes
//! exchange on QUIC streams.
//!
//! ```text
//! ┌──────────────┬──────────────┬──────────────────────────┐
//! │ length: u32  │ version: u16 │ payload: JSON (length-2) │
//! └──────────────┴──────────────┴──────────────────────────┘
//!   big-endian     big-endian
//! ```
//!
//! `length` counts the version and the payload. The decoder checks it as soon as the header has
//! arrived — before buffering any payload — so a peer announcing a huge frame is refused at
//! once, and it never panics on bytes it cannot parse.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The largest frame accepted (version + payload), by default.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

const HEADER: usize = 6;

/// Why a frame could not be encoded or decoded. After a decode error the stream is unusable:
/// close it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced frame is larger than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer speaks a protocol version this build does not.
    #[error("protocol version {got} is not supported (this node speaks {supported})")]
    UnsupportedVersion {
        /// The peer's version.
        got: u16,
        /// Ours.
        supported: u16,
    },
    /// The frame's length is too small to hold a version.
    #[error("frame length {0} is too short")]
    TooShort(usize),
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({0} bytes pending)")]
    Truncated(usize),
}

/// Encode one message as a frame.
pub fn encode<T: Serialize>(message: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let payload = serde_json::to_vec(message).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = payload.len() + 2;
    if len > max {
        return Err(FrameError::Oversized { len, max });
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&u32::try_from(len).map_err(|_| FrameError::Oversized { len, max })?.to_be_bytes());
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Accumulates bytes from a stream and yields whole messages.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder { buf: Vec::new(), max }
    }

    /// Add bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or an error.
    pub fn decode<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            return Err(FrameError::Oversized { len, max: self.max });
        }
        if len < 2 {
            return Err(FrameError::TooShort(len));
        }
        if self.buf.len() >= HEADER {
            let version = u16::from_be_bytes([self.buf[4], self.buf[5]]);
            if version != PROTOCOL_VERSION {
                return Err(FrameError::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION });
            }
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let message = serde_json::from_slice(&self.buf[HEADER..4 + len])
            .map_err(|e| FrameError::Malformed(e.to_string()));
        self.buf.drain(..4 + len);
        message.map(Some)
    }

    /// Call at end of stream: an error if a frame was cut off.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() { Ok(()) } else { Err(FrameError::Truncated(self.buf.len())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Msg {
        Hello { node: String, role: String },
        Heartbeat { seq: u64 },
    }

    fn hello() -> Msg {
        Msg::Hello { node: "r1".into(), role: "relay".into() }
    }

    #[test]
    fn round_trip_across_arbitrary_splits() {
        let mut stream = encode(&hello(), DEFAULT_MAX_FRAME).unwrap();
        stream.extend(encode(&Msg::Heartbeat { seq: 7 }, DEFAULT_MAX_FRAME).unwrap());
        for chunk in [1, 2, 3, 5, 7, stream.len()] {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = vec![];
            for piece in stream.chunks(chunk) {
                d.push(piece);
                while let Some(m) = d.decode::<Msg>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, [hello(), Msg::Heartbeat { seq: 7 }], "chunk {chunk}");
            d.finish().unwrap();
        }
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        let mut d = FrameDecoder::new(1024);
        d.push(&(1u32 << 30).to_be_bytes());
        assert_eq!(d.decode::<Msg>(), Err(FrameError::Oversized { len: 1 << 30, max: 1024 }));
        let big = Msg::Hello { node: "x".repeat(2000), role: "relay".into() };
        assert!(matches!(encode(&big, 1024), Err(FrameError::Oversized { .. })));
    }

    #[test]
    fn wrong_version_short_and_malformed_frames_are_errors() {
        let mut frame = encode(&hello(), DEFAULT_MAX_FRAME).unwrap();
        frame[5] = 9;
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&frame[..6]);
        assert_eq!(d.decode::<Msg>(), Err(FrameError::UnsupportedVersion { got: 9, supported: 1 }));

        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&[0, 0, 0, 1, 0]);
        assert_eq!(d.decode::<Msg>(), Err(FrameError::TooShort(1)));

        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&[0, 0, 0, 5, 0, 1, b'{', b'x', b'}']);
        assert!(matches!(d.decode::<Msg>(), Err(FrameError::Malformed(_))));

        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&encode(&hello(), DEFAULT_MAX_FRAME).unwrap()[..10]);
        assert_eq!(d.decode::<Msg>(), Ok(None));
        assert!(matches!(d.finish(), Err(FrameError::Truncated(10))));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let mut d = FrameDecoder::new(4096);
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            d.push(&bytes);
            // Any outcome but a panic is fine; errors must stop the loop.
            while let Ok(Some(_)) = d.decode::<Msg>() {}
        }
    }
}
