//! `plain-adapter` — test-only, never shipped. An adapter built straight from the `adapter`
//! world with wit-bindgen, without the SDK: it exports `adapting` but not `authenticating`,
//! like adapters built before that interface was added. The host must still load and call it.
//! A request for `/spin` spins until the CPU deadline stops the call; `/huge` answers a 1 MiB
//! header, `/verbose` a 30,000-byte refusal (the host's answer bounds).

#![allow(unsafe_code, missing_docs, dead_code)] // generated export glue

wit_bindgen::generate!({ world: "adapter", path: "../../../wit" });

use exports::skybridge::plugin::adapting::{
    AdapterInfo, Guest, RequestHead, ServiceRecord, TargetCredentials,
};
use skybridge::plugin::types::{Capability, Pair};

struct Plain;

impl Guest for Plain {
    fn describe() -> AdapterInfo {
        AdapterInfo {
            cloud_kind: "plain".into(),
            name: "plain-adapter".into(),
            version: "0.0.1".into(),
            needs_body_sha256: false,
        }
    }

    fn parse_service_info(_document: Vec<u8>, _content_type: String) -> Result<Vec<ServiceRecord>, String> {
        Ok(vec![])
    }

    fn select_capabilities(_service: ServiceRecord) -> Vec<Capability> {
        vec![]
    }

    /// Injects the mapped principal as a bearer token. A request for `/spin` makes it spin
    /// until the host's CPU deadline stops it (tests of the host's blocking pool).
    fn rewrite_request(mut head: RequestHead, credentials: TargetCredentials) -> Result<RequestHead, String> {
        if head.path == "/spin" {
            let mut n = 0u64;
            loop {
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        if head.path == "/huge" {
            head.headers.push(Pair { key: "x-huge".into(), value: "x".repeat(1 << 20) });
            return Ok(head);
        }
        if head.path == "/verbose" {
            return Err("no ".repeat(10_000));
        }
        head.headers.retain(|p| !p.key.eq_ignore_ascii_case("authorization"));
        head.headers
            .push(Pair { key: "authorization".into(), value: format!("Bearer {}", credentials.principal) });
        Ok(head)
    }
}

#[cfg(target_family = "wasm")]
export!(Plain);
