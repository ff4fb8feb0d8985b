//! HTTP request heads as an `http` binding's clients send them, and the credentials in them:
//! parsed, turned into the head adapters see (hop-by-hop headers, `Connection` names, two
//! Host headers), and credentials read — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skybridge_gateway::session::client_auth::ClientCredentials;
use skybridge_gateway::session::translate::request_head;

fuzz_target!(|data: &[u8]| {
    let _ = ClientCredentials::parse(data);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else { return };
    let mut builder =
        http::Request::builder().method(parsed.method.unwrap_or("GET")).uri(parsed.path.unwrap_or("/"));
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let Ok(request) = builder.body(()) else { return };
    let (parts, ()) = request.into_parts();
    if let Ok(head) = request_head(&parts, None) {
        for pair in &head.headers {
            let _ = ClientCredentials::parse(pair.value.as_bytes());
        }
    }
});
