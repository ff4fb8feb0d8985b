//! `no-world` — test-only, never shipped. A valid component that implements none of Skybridge's
//! worlds; loading it must fail with a message naming what is missing.

#![allow(unsafe_code, missing_docs, dead_code)] // generated export glue

wit_bindgen::generate!({ world: "stray", path: "wit" });

struct Stray;

impl Guest for Stray {
    fn hello() -> String {
        "hello from a stray world".to_owned()
    }
}

#[cfg(target_family = "wasm")]
export!(Stray);
