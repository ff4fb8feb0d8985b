//! Host-side bindings generated from `wit/plugin.wit`.
//!
//! The host interfaces (`log`, `config`, `clock`, `crypto`) and the shared `types` are generated
//! once, from world `host`; each plugin world reuses them through `with`, so one implementation
//! of the host interfaces (the private `sandbox` module) serves every kind of plugin.

#![allow(missing_docs)]

/// Host interfaces and shared types.
pub mod host {
    wasmtime::component::bindgen!({
        world: "host",
        path: "../wit",
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    });
}

/// Bindings for one plugin world, sharing the host interfaces and types generated above.
macro_rules! plugin_world {
    ($world:tt) => {
        wasmtime::component::bindgen!({
            world: $world,
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
    };
}

/// World `scorer`.
pub mod scorer {
    plugin_world!("scorer");
}

/// World `authorizer`.
pub mod authorizer {
    plugin_world!("authorizer");
}

/// World `adapter`.
pub mod adapter {
    plugin_world!("adapter");
}

pub use adapter::exports::skybridge::plugin::adapting;
pub use authorizer::exports::skybridge::plugin::authorization;
pub use host::skybridge::plugin::{clock, config, crypto, log, types};
pub use scorer::exports::skybridge::plugin::scoring;
