//! CONNECT request heads, as anyone who reaches the proxy may send them: a request with its
//! target and credentials, or a refusal — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skybridge_gateway::ingress::connect_proxy::{parse_request, split_target};
use skybridge_gateway::session::client_auth::ClientCredentials;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse_request(data) {
        if let Some((platform, endpoint)) = split_target(&request.target) {
            assert!(!platform.is_empty() && !endpoint.is_empty());
        }
        if let Some(value) = &request.credentials {
            let _ = ClientCredentials::parse(value);
        }
    }
});
