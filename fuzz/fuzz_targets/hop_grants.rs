//! Hop grants and their tokens, as a tunnel setup or a tunnel stream's first frame carries
//! them: a token verifies only for the exact grant it signs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skybridge_gateway::tunnel::HopKey;
use skybridge_gateway::tunnel::grant::HopGrant;

fuzz_target!(|data: &[u8]| {
    let key = HopKey::derive(&[7u8; 32], "r1");
    let text = String::from_utf8_lossy(data);
    let (grant, token) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = HopKey::from_hex(token);
    if let Ok(grant) = serde_json::from_str::<HopGrant>(grant) {
        let signed = key.sign(&grant);
        assert!(key.verifies(&grant, &signed), "a grant verifies with its own token");
        if token != signed {
            assert!(!key.verifies(&grant, token), "only its own token verifies");
        }
    }
});
