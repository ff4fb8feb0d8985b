//! Configuration files: any text is a config or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skybridge_gateway::config::{ControllerConfig, RelayConfig, SiteConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = toml::from_str::<ControllerConfig>(text);
    let _ = toml::from_str::<RelayConfig>(text);
    let _ = toml::from_str::<SiteConfig>(text);
});
