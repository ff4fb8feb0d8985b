//! The reference adapters' native parsers, through the `Adapter` trait exactly as the host
//! calls it: a client's native authentication (SigV4 `Authorization`, Azure Shared Key, …)
//! claimed and verified, a request re-signed, an identity service's token answer (Keystone's
//! token bodies), and the cloud's discovery answers page after page (S3 and EC2 XML, Blob
//! listings, Keystone's catalog, GCS JSON). None may panic, whatever the bytes.
//!
//! Input: byte 0 picks the adapter, byte 1 the operation; the rest is text — a request head
//! (`METHOD /path?query` then `name: value` lines), then after an empty line a body; for
//! discovery, the answers to successive pages separated by `\n--\n`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skybridge_plugin_sdk::{Adapter, CloudResponse, RequestHead, TargetCredentials};

/// At most this many discovery pages per input (the host bounds a run too).
const MAX_PAGES: usize = 8;

fn head(text: &str) -> (RequestHead, &str) {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let (method, target) = first.split_once(' ').unwrap_or((first, "/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let sha = body.lines().next().filter(|l| l.len() == 64).map(str::to_owned);
    let head = RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body_sha256: sha,
    };
    (head, body)
}

fn credentials(attributes: &RequestHead) -> TargetCredentials {
    TargetCredentials {
        platform: "site-b".into(),
        principal: "AKIDEXAMPLE".into(),
        secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        // The request's own headers double as the credential's attributes (region, token, …).
        attributes: attributes.headers.clone(),
    }
}

fn exercise<A: Adapter>(operation: u8, text: &str) {
    let (head, body) = head(text);
    match operation % 5 {
        0 => {
            if A::claimed_account(&head).is_some() {
                let _ = A::verify_client(&head, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
            }
        }
        1 => {
            let creds = credentials(&head);
            if let Ok(rewritten) = A::rewrite_request(head, &creds) {
                let _ = A::claimed_account(&rewritten);
            }
            let _ = A::request_token(&creds);
        }
        2 => {
            let status = u16::from_le_bytes([text.len() as u8, 0]) % 600;
            let _ = A::read_token(status, &head.headers, body.as_bytes());
        }
        3 => {
            let content_type = head.header("content-type").unwrap_or_default().to_owned();
            let _ = A::parse_service_info(body.as_bytes(), &content_type);
        }
        _ => {
            let context: Vec<(String, String)> = [("platform", "site-b"), ("region", "us-east-1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .chain(head.headers.iter().cloned())
                .collect();
            let Ok(mut step) = A::start_discovery(&context) else { return };
            for page in body.split("\n--\n").take(MAX_PAGES) {
                if step.next.is_none() {
                    break;
                }
                let (answer, page_body) = self::head(page);
                let response = CloudResponse {
                    status: answer.method.parse().unwrap_or(200),
                    headers: answer.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect(),
                    body: page_body.as_bytes().to_vec(),
                };
                match A::continue_discovery(&context, &step.cursor, &response) {
                    Ok(next) => step = next,
                    Err(_) => break,
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [adapter, operation, rest @ ..] = data else { return };
    let text = String::from_utf8_lossy(rest);
    match adapter % 4 {
        0 => exercise::<aws_adapter::AwsAdapter>(*operation, &text),
        1 => exercise::<azure_adapter::AzureAdapter>(*operation, &text),
        2 => exercise::<openstack_adapter::OpenStackAdapter>(*operation, &text),
        _ => exercise::<gcs_adapter::GcsAdapter>(*operation, &text),
    }
});
