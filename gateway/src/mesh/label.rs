//! Labelled packets, sans-IO: the wire format of the tunnels' forwarding data plane.
//!
//! A tunnel's end-to-end QUIC packets travel between nodes on the mesh's UDP sockets with a
//! 9-byte header in front — a tag byte and the tunnel's label (its id, big-endian):
//!
//! ```text
//! ┌─────┬──────────────────┬──────────────────────────────┐
//! │ TAG │ label (u64, BE)  │ QUIC packet (end-to-end)     │
//! └─────┴──────────────────┴──────────────────────────────┘
//! ```
//!
//! The tag has the two top bits clear, which no QUIC packet the mesh's endpoints send has (the
//! long-header bit or the fixed bit is always set, since the mesh never greases the fixed bit),
//! so one socket carries both the mesh's own QUIC connections and labelled packets.
//!
//! An endpoint (ingress or site) hands its QUIC stack each tunnel's packets as coming from a
//! *virtual address* derived from a label, in a range no real neighbour has: IPv4's reserved
//! `240.0.0.0/4`, or a unique-local IPv6 prefix.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The first byte of a labelled packet.
pub const TAG: u8 = 0x2B;
/// The label header's length.
pub const HEADER: usize = 9;

/// What a datagram arriving on a mesh socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A packet of the mesh's own QUIC connections.
    Mesh,
    /// A labelled packet of tunnel `label`.
    Labelled(u64),
    /// Neither: dropped.
    Junk,
}

/// Classify a datagram by its first bytes.
pub fn kind(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(&first) if first & 0xC0 != 0 => Kind::Mesh,
        Some(&TAG) if datagram.len() > HEADER => {
            let mut label = [0u8; 8];
            label.copy_from_slice(&datagram[1..HEADER]);
            Kind::Labelled(u64::from_be_bytes(label))
        }
        _ => Kind::Junk,
    }
}

/// The header to put in front of a packet of tunnel `label`.
pub fn header(label: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0] = TAG;
    h[1..].copy_from_slice(&label.to_be_bytes());
    h
}

/// The unique-local prefix of IPv6 virtual addresses (`fd5b:7b1d:6e00::/64`).
const VIRTUAL_PREFIX: [u16; 4] = [0xfd5b, 0x7b1d, 0x6e00, 0];
/// The port every IPv6 virtual address carries (QUIC refuses port 0).
const VIRTUAL_PORT: u16 = 1;
/// The largest label an IPv4 socket can stand for: 28 bits in an address of the reserved
/// `240.0.0.0/4`, 15 in the port (whose top bit is set, so it is never 0).
pub const MAX_IPV4_LABEL: u64 = (1 << 43) - 1;

/// The virtual address standing for tunnel `label`'s far end, for a socket of the given family
/// (QUIC takes only addresses of its socket's family); `None` for a label over
/// [`MAX_IPV4_LABEL`] on an IPv4 socket.
pub fn virtual_addr(label: u64, ipv6: bool) -> Option<SocketAddr> {
    if ipv6 {
        let [a, b, c, d] = VIRTUAL_PREFIX;
        let l = label.to_be_bytes();
        let word = |i: usize| u16::from_be_bytes([l[i], l[i + 1]]);
        let ip = Ipv6Addr::new(a, b, c, d, word(0), word(2), word(4), word(6));
        return Some(SocketAddr::V6(SocketAddrV6::new(ip, VIRTUAL_PORT, 0, 0)));
    }
    (label <= MAX_IPV4_LABEL).then(|| {
        let ip = Ipv4Addr::from(0xF000_0000 | (label >> 15) as u32);
        SocketAddr::V4(SocketAddrV4::new(ip, 0x8000 | (label & 0x7FFF) as u16))
    })
}

/// The label a virtual address stands for; `None` for a real address.
pub fn label_of(addr: SocketAddr) -> Option<u64> {
    match addr {
        SocketAddr::V6(v6) => {
            let s = v6.ip().segments();
            (s[..4] == VIRTUAL_PREFIX && v6.port() == VIRTUAL_PORT)
                .then(|| s[4..].iter().fold(0u64, |label, word| label << 16 | u64::from(*word)))
        }
        SocketAddr::V4(v4) => {
            let ip = u32::from(*v4.ip());
            (ip >> 28 == 0xF && v4.port() & 0x8000 != 0)
                .then(|| u64::from(ip & 0x0FFF_FFFF) << 15 | u64::from(v4.port() & 0x7FFF))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_labelled_packet_is_told_from_quic_and_junk() {
        let mut p = header(0x0102_0304_0506_0708).to_vec();
        assert_eq!(kind(&p), Kind::Junk, "a header alone carries nothing");
        p.push(0x40);
        assert_eq!(kind(&p), Kind::Labelled(0x0102_0304_0506_0708));
        // Short and long QUIC headers (fixed bit, long-header bit) are the mesh's.
        assert_eq!(kind(&[0x40, 1, 2]), Kind::Mesh);
        assert_eq!(kind(&[0xC3, 0, 0, 0, 1]), Kind::Mesh);
        assert_eq!(kind(&[0x80]), Kind::Mesh);
        // A greased QUIC bit, another tag, or nothing at all is junk.
        for junk in [&[0x00u8, 1, 2, 3, 4, 5, 6, 7, 8, 9][..], &[0x2A; 12][..], &[][..]] {
            assert_eq!(kind(junk), Kind::Junk, "{junk:?}");
        }
    }

    #[test]
    fn a_virtual_address_round_trips_its_label_and_no_real_address_has_one() {
        for label in [0, 1, 7, 0x7FFF, 0x8000, u64::from(u32::MAX) + 5, MAX_IPV4_LABEL, u64::MAX] {
            let v6 = virtual_addr(label, true).unwrap();
            assert_eq!(label_of(v6), Some(label), "{v6}");
            match virtual_addr(label, false) {
                Some(v4) => assert_eq!((label_of(v4), v4.is_ipv4()), (Some(label), true), "{v4}"),
                None => assert!(label > MAX_IPV4_LABEL),
            }
        }
        assert_eq!(virtual_addr(MAX_IPV4_LABEL + 1, false), None);
        assert_ne!(virtual_addr(1, false), virtual_addr(2, false));
        assert_ne!(virtual_addr(1, false), virtual_addr(1 << 15 | 1, false));
        for real in [
            "127.0.0.1:1",
            "[::1]:1",
            "[fd5b:7b1d:6e00::1]:2",
            "[fd5b:7b1d:6e01::1]:1",
            "240.0.0.1:1",
            "10.0.0.1:40000",
        ] {
            assert_eq!(label_of(real.parse().unwrap()), None, "{real}");
        }
    }
}
