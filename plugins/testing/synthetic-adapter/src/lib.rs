//! `synthetic-adapter` — test-only, never shipped. Its discovery first asks the cloud for
//! `GET /spec`, a JSON object, and then does what it says, so that one loaded adapter can
//! report tens of thousands of services, change some of them, or misbehave — and then behave
//! again:
//!
//! | field | meaning |
//! | --- | --- |
//! | `count` | services to report (`svc-0` …), `per_page` per step (each step asks `GET /page/N`) |
//! | `changed` | the first this-many services carry `version = generation` (the rest `0`) |
//! | `generation` | see `changed` |
//! | `mode` | `ok`; `trap` (panics); `loop` (spins to the deadline); `hog` (allocates without end); `endless` (always asks one more page); `huge` (a 10 KiB attribute); `bad-kind` (kind `warp-drive`); `duplicate` (every id twice); `cursor-bomb` (a 1 MiB cursor) |

use skybridge_plugin_sdk::{
    Adapter, CloudRequest, CloudResponse, DiscoveredService, DiscoveryStep, RequestHead, ServiceRecord,
    TargetCredentials, export_adapter,
};

/// The synthetic adapter.
pub struct Synthetic;

struct Spec {
    count: u64,
    per_page: u64,
    changed: u64,
    generation: u64,
    mode: String,
}

fn spec_of(cursor: &str) -> Result<(Spec, u64), String> {
    // cursor: count/per_page/changed/generation/mode/next-index
    let p: Vec<&str> = cursor.split('/').collect();
    let n = |i: usize| p.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or(format!("bad cursor {cursor}"));
    Ok((
        Spec {
            count: n(0)?,
            per_page: n(1)?.max(1),
            changed: n(2)?,
            generation: n(3)?,
            mode: p.get(4).unwrap_or(&"ok").to_string(),
        },
        n(5)?,
    ))
}

fn page(spec: &Spec, from: u64) -> Result<DiscoveryStep, String> {
    match spec.mode.as_str() {
        "trap" => panic!("synthetic-adapter told to trap"),
        "loop" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "hog" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        _ => {}
    }
    let to = (from + spec.per_page).min(spec.count);
    let mut services = Vec::new();
    for i in from..to {
        let mut attributes =
            vec![("version".to_owned(), if i < spec.changed { spec.generation } else { 0 }.to_string())];
        if spec.mode == "huge" {
            attributes.push(("blob".to_owned(), "x".repeat(10 << 10)));
        }
        let service = DiscoveredService {
            native_id: format!("svc-{i}"),
            service: ServiceRecord {
                kind: if spec.mode == "bad-kind" { "warp-drive".into() } else { "object-store".into() },
                name: format!("svc-{i}"),
                endpoint: format!("http://synthetic/{i}"),
                region: Some("lab".into()),
                attributes,
            },
        };
        if spec.mode == "duplicate" {
            services.push(service.clone());
        }
        services.push(service);
    }
    let more = to < spec.count || spec.mode == "endless";
    let mut cursor =
        format!("{}/{}/{}/{}/{}/{to}", spec.count, spec.per_page, spec.changed, spec.generation, spec.mode);
    if spec.mode == "cursor-bomb" {
        cursor.push_str(&"#".repeat(1 << 20));
    }
    let step = if more {
        DiscoveryStep::fetch(CloudRequest::get(format!("/page/{to}"), ""), cursor)
    } else {
        DiscoveryStep::done()
    };
    Ok(step.with_services(services))
}

impl Adapter for Synthetic {
    const CLOUD_KIND: &'static str = "synthetic";

    fn parse_service_info(_document: &[u8], _content_type: &str) -> Result<Vec<ServiceRecord>, String> {
        Err("synthetic-adapter parses no documents".into())
    }

    fn rewrite_request(head: RequestHead, _creds: &TargetCredentials) -> Result<RequestHead, String> {
        Ok(head)
    }

    fn start_discovery(_context: &[(String, String)]) -> Result<DiscoveryStep, String> {
        Ok(DiscoveryStep::fetch(CloudRequest::get("/spec", ""), "spec"))
    }

    fn continue_discovery(
        _context: &[(String, String)],
        cursor: &str,
        response: &CloudResponse,
    ) -> Result<DiscoveryStep, String> {
        if cursor == "spec" {
            let text = response.success("GET /spec")?.text("GET /spec")?;
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("/spec: {e}"))?;
            let n = |k: &str, d: u64| v[k].as_u64().unwrap_or(d);
            let spec = Spec {
                count: n("count", 10),
                per_page: n("per_page", 1000),
                changed: n("changed", 0),
                generation: n("generation", 0),
                mode: v["mode"].as_str().unwrap_or("ok").to_owned(),
            };
            return page(&spec, 0);
        }
        let (spec, next) = spec_of(cursor.trim_end_matches('#'))?;
        page(&spec, next)
    }
}

export_adapter!(Synthetic);
