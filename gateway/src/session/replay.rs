//! Replay refusal for requests signed in a cloud's native scheme (SigV4, Shared Key), sans-IO.
//!
//! A signature verifies for as long as its date is within 15 minutes of the clock, so a
//! captured request could be sent again — to the same binding or another — for up to 30
//! minutes. Each verified signature is remembered for that window with the address it came
//! from, and refused from any other address. The same address may repeat it: an SDK that
//! sends the same request twice within one second (its date's resolution) signs it
//! identically, and refusing that would break honest clients. The memory is bounded: past
//! [`MAX_REMEMBERED`] signatures in one window, the oldest are forgotten early (and the count
//! of those is kept, to be seen).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a signature is remembered: the 15-minute skew allowed either side of its date.
pub const WINDOW: Duration = Duration::from_secs(30 * 60);
/// Signatures remembered at most (about 20 MiB).
pub const MAX_REMEMBERED: usize = 1 << 18;

/// Signatures seen in the last [`WINDOW`], by a 128-bit digest, with where each came from.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<u128, IpAddr>,
    order: VecDeque<(u128, Instant)>,
    /// Signatures forgotten before their window ended, to make room.
    pub forgotten_early: u64,
}

impl ReplayGuard {
    /// Whether signature `digest`, sent from `source` at `now`, may be used: the first time,
    /// or again from the address that first sent it (remembering it).
    pub fn may_use(&mut self, digest: u128, source: IpAddr, now: Instant) -> bool {
        while let Some(&(old, at)) = self.order.front() {
            if now.duration_since(at) < WINDOW && self.order.len() < MAX_REMEMBERED {
                break;
            }
            if now.duration_since(at) < WINDOW {
                self.forgotten_early += 1;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        match self.seen.get(&digest) {
            Some(first) => *first == source,
            None => {
                self.seen.insert(digest, source);
                self.order.push_back((digest, now));
                true
            }
        }
    }

    /// Signatures remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The digest a signed request is remembered by: its `Authorization` values (which carry the
/// signature over the request and its date).
pub fn digest<'a>(authorization: impl Iterator<Item = &'a str>) -> u128 {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for value in authorization {
        hash.update(value.as_bytes());
        hash.update(b"\n");
    }
    let bytes: [u8; 32] = hash.finalize().into();
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes[..16]);
    u128::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_signature_from_another_address_is_refused_until_its_window_ends() {
        let (mut guard, now) = (ReplayGuard::default(), Instant::now());
        let a = digest(["AWS4-HMAC-SHA256 Credential=acme/…, Signature=aa"].into_iter());
        let b = digest(["AWS4-HMAC-SHA256 Credential=acme/…, Signature=ab"].into_iter());
        assert!(guard.may_use(a, ip(1), now));
        assert!(!guard.may_use(a, ip(2), now + Duration::from_secs(60)), "a replay from elsewhere");
        assert!(guard.may_use(a, ip(1), now + Duration::from_secs(1)), "the client repeating itself");
        assert!(guard.may_use(b, ip(2), now), "another signature");
        assert!(!guard.may_use(a, ip(3), now + WINDOW - Duration::from_secs(1)), "still in its window");
        assert!(guard.may_use(a, ip(3), now + WINDOW), "the signature no longer verifies anyway");
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_oldest_first() {
        let (mut guard, now) = (ReplayGuard::default(), Instant::now());
        for n in 0..(MAX_REMEMBERED as u128 + 10) {
            assert!(guard.may_use(n, ip(1), now));
        }
        assert_eq!(guard.len(), MAX_REMEMBERED);
        assert_eq!(guard.forgotten_early, 10);
        assert!(!guard.may_use(MAX_REMEMBERED as u128, ip(2), now), "the newest are remembered");
        assert!(guard.may_use(0, ip(2), now), "the oldest were forgotten");
    }
}
