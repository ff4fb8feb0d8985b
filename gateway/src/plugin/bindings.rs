//! Host-side bindings generated from `wit/plugin.wit`.
//!
//! The host interfaces (`log`, `config`, `clock`, `crypto`) and the shared `types` are generated
//! once, from world `host`; each plugin world reuses them through `with`, so one implementation
//! of the host interfaces ([`super::sandbox`]) serves every kind of plugin.

#![allow(missing_docs)]

/// Host interfaces and shared types.
pub mod host {
    wasmtime::component::bindgen!({
        world: "host",
        path: "../wit",
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    });
}

/// World `scorer`.
pub mod scorer {
    wasmtime::component::bindgen!({
        world: "scorer",
        path: "../wit",
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
        with: {
            "skybridge:plugin/types": super::host::skybridge::plugin::types,
            "skybridge:plugin/log": super::host::skybridge::plugin::log,
            "skybridge:plugin/config": super::host::skybridge::plugin::config,
            "skybridge:plugin/clock": super::host::skybridge::plugin::clock,
            "skybridge:plugin/crypto": super::host::skybridge::plugin::crypto,
        },
    });
}

/// World `authorizer`.
pub mod authorizer {
    wasmtime::component::bindgen!({
        world: "authorizer",
        path: "../wit",
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
        with: {
            "skybridge:plugin/types": super::host::skybridge::plugin::types,
            "skybridge:plugin/log": super::host::skybridge::plugin::log,
            "skybridge:plugin/config": super::host::skybridge::plugin::config,
            "skybridge:plugin/clock": super::host::skybridge::plugin::clock,
            "skybridge:plugin/crypto": super::host::skybridge::plugin::crypto,
        },
    });
}

/// World `adapter`.
pub mod adapter {
    wasmtime::component::bindgen!({
        world: "adapter",
        path: "../wit",
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
        with: {
            "skybridge:plugin/types": super::host::skybridge::plugin::types,
            "skybridge:plugin/log": super::host::skybridge::plugin::log,
            "skybridge:plugin/config": super::host::skybridge::plugin::config,
            "skybridge:plugin/clock": super::host::skybridge::plugin::clock,
            "skybridge:plugin/crypto": super::host::skybridge::plugin::crypto,
        },
    });
}

pub use adapter::exports::skybridge::plugin::adapting;
pub use authorizer::exports::skybridge::plugin::authorization;
pub use host::skybridge::plugin::{clock, config, crypto, log, types};
pub use scorer::exports::skybridge::plugin::scoring;
