//! Probe datagrams, as any host that reaches a relay's UDP port may send them: what decodes
//! encodes back to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skybridge_gateway::mesh::probe::Packet;

fuzz_target!(|data: &[u8]| {
    if let Some(packet) = Packet::decode(data) {
        assert_eq!(Packet::decode(&packet.encode()), Some(packet));
    }
});
