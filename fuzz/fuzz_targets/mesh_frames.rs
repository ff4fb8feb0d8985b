//! Mesh frames and the control messages in them, as a peer's stream delivers them: any bytes,
//! cut anywhere, must yield messages or a clean error — never a panic or an unbounded buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skybridge_gateway::mesh::frame::FrameDecoder;
use skybridge_gateway::mesh::messages::Control;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is cut, so reads of every size are tried.
    let Some((&cut, bytes)) = data.split_first() else { return };
    let mut decoder = FrameDecoder::new(64 << 10);
    for chunk in bytes.chunks(usize::from(cut).max(1)) {
        decoder.push(chunk);
        loop {
            match decoder.decode::<Control>() {
                Ok(Some(message)) => {
                    // What decodes encodes again.
                    let _ = serde_json::to_vec(&message).expect("a decoded message encodes");
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = serde_json::from_slice::<Control>(bytes);
});
