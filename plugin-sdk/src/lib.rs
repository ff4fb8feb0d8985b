//! # Skybridge plugin SDK
//!
//! Write Skybridge plugins in Rust: implement one trait, call one export macro, build to a
//! WebAssembly component. The contract is `wit/plugin.wit` (package `skybridge:plugin@0.1.0`);
//! this crate hides its generated bindings behind plain Rust types.
//!
//! | plugin kind | trait | export macro | WIT world |
//! | --- | --- | --- | --- |
//! | path scorer | [`Scorer`] | [`export_scorer!`] | `scorer` |
//! | capability authorizer | [`Authorizer`] | [`export_authorizer!`] | `authorizer` |
//! | cloud adapter | [`Adapter`] | [`export_adapter!`] | `adapter` |
//!
//! A complete scorer:
//!
//! ```
//! use skybridge_plugin_sdk::{export_scorer, PathMetrics, Score, Scorer, WeightInfo, Weights};
//!
//! pub struct FewestHops;
//!
//! const WEIGHTS: &[WeightInfo] = &[WeightInfo::new("hops", 1.0, "penalty per hop")];
//!
//! impl Scorer for FewestHops {
//!     fn weights() -> &'static [WeightInfo] {
//!         WEIGHTS
//!     }
//!     fn score(m: &PathMetrics, w: &Weights) -> Result<Score, String> {
//!         Ok(Score::new(-w.get("hops") * f64::from(m.hops), format!("{} hops", m.hops)))
//!     }
//! }
//!
//! export_scorer!(FewestHops);
//! ```
//!
//! # How data flows
//!
//! The gateway calls an export of the component (`score`, `authorize`, …). The code generated
//! by the export macro converts the WIT records into this crate's [`types`], calls your trait,
//! and converts the answer back. The plugin's name and version in `describe()` come from its
//! `Cargo.toml`. What the plugin may use of the outside world is in [`host`]: log, config,
//! clock and crypto — there is no file system, network or ambient clock in the sandbox.
//!
//! # Layout
//!
//! - [`types`]: the values plugins see; [`host`]: the host imports;
//! - [`testing`]: the native test harness — run your plugin's logic with `cargo test`;
//! - `__private`: the generated bindings and the glue the macros expand to (not API).
//!
//! # Building
//!
//! `cargo build --target wasm32-wasip2 --release` yields a component directly; in this
//! repository `cargo xtask plugins` builds every plugin (with an offline fallback toolchain).

#[cfg(any(test, all(target_family = "wasm", feature = "arena")))]
mod arena;
pub mod host;
#[cfg(not(target_family = "wasm"))]
pub mod testing;

#[cfg(all(target_family = "wasm", feature = "arena"))]
#[global_allocator]
static ALLOCATOR: arena::ArenaAllocator = arena::ArenaAllocator;
pub mod types;
#[cfg(feature = "xml")]
pub mod xml;

pub use host::{Level, clock, config, crypto, debug, error, info, log, warn};
pub use types::*;

/// A path scorer: one path's metrics and the operator's weights in, a preference value out.
pub trait Scorer {
    /// The weights this scorer understands, with their defaults. Default: none.
    fn weights() -> &'static [WeightInfo] {
        &[]
    }

    /// Whether weights not listed in [`Scorer::weights`] are accepted (for scorers that weigh
    /// arbitrary extra metrics). Default: no — an unknown weight is an error naming it.
    fn accepts_unknown_weights() -> bool {
        false
    }

    /// Score one path; higher is better. `weights` already holds the defaults.
    fn score(metrics: &PathMetrics, weights: &Weights) -> Result<Score, String>;
}

/// A capability authorizer.
pub trait Authorizer {
    /// Grant or refuse one request, with a reason either way — or say it is not decided yet
    /// ([`Decision::Pending`]).
    fn authorize(request: &AuthorizationRequest) -> Decision;
}

/// A cloud adapter: one cloud's knowledge.
pub trait Adapter {
    /// The cloud it speaks for: `"aws"`, `"azure"`, `"openstack"`, ….
    const CLOUD_KIND: &'static str;

    /// Whether [`Adapter::rewrite_request`] needs the body's SHA-256 in
    /// [`RequestHead::body_sha256`]. Default: no (the host then streams bodies unhashed).
    fn needs_body_sha256() -> bool {
        false
    }

    /// Turn the cloud's native service description into service records.
    fn parse_service_info(document: &[u8], content_type: &str) -> Result<Vec<ServiceRecord>, String>;

    /// The capabilities a service offers. Default: one capability of the service's kind and
    /// name, carrying its region and attributes.
    fn select_capabilities(service: &ServiceRecord) -> Vec<Capability> {
        let mut attributes = service.attributes.clone();
        if let Some(region) = &service.region {
            attributes.push(("region".to_owned(), region.clone()));
        }
        vec![Capability { kind: service.kind.clone(), name: service.name.clone(), attributes }]
    }

    /// Rewrite a proxied request for the target session (re-sign, inject a token, fix Host).
    fn rewrite_request(head: RequestHead, credentials: &TargetCredentials) -> Result<RequestHead, String>;

    /// The Skybridge account a client's request claims in the cloud's native authentication
    /// (for AWS, the SigV4 access key id). Default: `None` — clients then authenticate with
    /// HTTP Basic `account:secret`, which the host checks itself.
    fn claimed_account(_head: &RequestHead) -> Option<String> {
        None
    }

    /// Check the client's native authentication with its account's secret (for AWS: recompute
    /// the SigV4 signature). Only called after [`Adapter::claimed_account`] named an account.
    fn verify_client(_head: &RequestHead, _account_secret: &str) -> Result<(), String> {
        Err("this adapter does not authenticate clients".into())
    }

    /// The token request the host should send for `credentials` (e.g. Keystone's
    /// `POST /v3/auth/tokens`), or `None` (the default) when requests need no token. The host
    /// caches the token and passes it to [`Adapter::rewrite_request`] as the `token` attribute.
    fn request_token(_credentials: &TargetCredentials) -> Option<TokenRequest> {
        None
    }

    /// Read the token from the identity service's answer.
    fn read_token(_status: u16, _headers: &[(String, String)], _body: &[u8]) -> Result<Token, String> {
        Err("this adapter does not exchange tokens".into())
    }

    /// Begin discovering the cloud's services: usually the first request to make. `context`
    /// holds the site's cloud attributes (`region`, …) and `platform`. Default: this adapter
    /// does not discover (an error saying so).
    fn start_discovery(_context: &[(String, String)]) -> Result<DiscoveryStep, String> {
        Err("this adapter does not discover services".into())
    }

    /// Read the answer to the previous step's request (the step's `cursor` comes back) and say
    /// what was found and what to ask next — and, with [`DiscoveryStep::with_gone`], which
    /// services the cloud itself says no longer exist (withdrawn at once; a service merely
    /// absent from the listing is withdrawn only after a grace period).
    fn continue_discovery(
        _context: &[(String, String)],
        _cursor: &str,
        _response: &CloudResponse,
    ) -> Result<DiscoveryStep, String> {
        Err("this adapter does not discover services".into())
    }
}

/// Export a [`Scorer`] as this component's `scorer` world.
#[macro_export]
macro_rules! export_scorer {
    ($ty:ty) => {
        const _: () = {
            use $crate::__private::scorer::exports::skybridge::plugin::scoring as wit;
            struct __SkybridgeScorer;
            impl wit::Guest for __SkybridgeScorer {
                fn describe() -> wit::ScorerInfo {
                    $crate::__private::describe_scorer::<$ty>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    )
                }
                fn score(
                    metrics: wit::PathMetrics,
                    weights: ::std::vec::Vec<wit::NamedValue>,
                ) -> ::std::result::Result<wit::Preference, ::std::string::String> {
                    $crate::__private::score::<$ty>(metrics, weights)
                }
            }
            // Export symbols only exist in wasm builds; natively the glue is tested as plain code.
            #[cfg(target_family = "wasm")]
            $crate::__private::scorer::__export_scorer_world!(
                __SkybridgeScorer with_types_in $crate::__private::scorer
            );
        };
    };
}

/// Export an [`Authorizer`] as this component's `authorizer` world.
#[macro_export]
macro_rules! export_authorizer {
    ($ty:ty) => {
        const _: () = {
            use $crate::__private::authorizer::exports::skybridge::plugin::authorization as wit;
            struct __SkybridgeAuthorizer;
            impl wit::Guest for __SkybridgeAuthorizer {
                fn describe() -> wit::AuthorizerInfo {
                    $crate::__private::install_panic_hook();
                    wit::AuthorizerInfo {
                        name: env!("CARGO_PKG_NAME").into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }
                }
                fn authorize(request: wit::AuthorizationRequest) -> wit::Decision {
                    $crate::__private::authorize::<$ty>(request)
                }
            }
            impl $crate::__private::authorizer::exports::skybridge::plugin::deferring::Guest
                for __SkybridgeAuthorizer
            {
                fn decide(
                    request: wit::AuthorizationRequest,
                ) -> $crate::__private::authorizer::exports::skybridge::plugin::deferring::Consent {
                    $crate::__private::decide::<$ty>(request)
                }
            }
            // Export symbols only exist in wasm builds; natively the glue is tested as plain code.
            #[cfg(target_family = "wasm")]
            $crate::__private::authorizer::__export_full_authorizer_world!(
                __SkybridgeAuthorizer with_types_in $crate::__private::authorizer
            );
        };
    };
}

/// Export an [`Adapter`] as this component's `adapter` world.
#[macro_export]
macro_rules! export_adapter {
    ($ty:ty) => {
        const _: () = {
            use $crate::__private::adapter::exports::skybridge::plugin::adapting as wit;
            struct __SkybridgeAdapter;
            impl wit::Guest for __SkybridgeAdapter {
                fn describe() -> wit::AdapterInfo {
                    $crate::__private::describe_adapter::<$ty>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    )
                }
                fn parse_service_info(
                    document: ::std::vec::Vec<u8>,
                    content_type: ::std::string::String,
                ) -> ::std::result::Result<::std::vec::Vec<wit::ServiceRecord>, ::std::string::String>
                {
                    $crate::__private::parse_service_info::<$ty>(document, content_type)
                }
                fn select_capabilities(service: wit::ServiceRecord) -> ::std::vec::Vec<wit::Capability> {
                    $crate::__private::select_capabilities::<$ty>(service)
                }
                fn rewrite_request(
                    head: wit::RequestHead,
                    credentials: wit::TargetCredentials,
                ) -> ::std::result::Result<wit::RequestHead, ::std::string::String> {
                    $crate::__private::rewrite_request::<$ty>(head, credentials)
                }
            }
            impl $crate::__private::adapter::exports::skybridge::plugin::authenticating::Guest
                for __SkybridgeAdapter
            {
                fn claimed_account(head: wit::RequestHead) -> ::std::option::Option<::std::string::String> {
                    $crate::__private::claimed_account::<$ty>(head)
                }
                fn verify_client(
                    head: wit::RequestHead,
                    account_secret: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::verify_client::<$ty>(head, account_secret)
                }
            }
            impl $crate::__private::adapter::exports::skybridge::plugin::token_exchange::Guest
                for __SkybridgeAdapter
            {
                fn request_token(
                    credentials: wit::TargetCredentials,
                ) -> ::std::option::Option<
                    $crate::__private::adapter::exports::skybridge::plugin::token_exchange::TokenRequest,
                > {
                    $crate::__private::request_token::<$ty>(credentials)
                }
                fn read_token(
                    status: u16,
                    headers: ::std::vec::Vec<$crate::__private::adapter::skybridge::plugin::types::Pair>,
                    body: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<
                    $crate::__private::adapter::exports::skybridge::plugin::token_exchange::Token,
                    ::std::string::String,
                > {
                    $crate::__private::read_token::<$ty>(status, headers, body)
                }
            }
            impl $crate::__private::adapter::exports::skybridge::plugin::discovering::Guest
                for __SkybridgeAdapter
            {
                fn start_discovery(
                    context: ::std::vec::Vec<$crate::__private::adapter::skybridge::plugin::types::Pair>,
                ) -> ::std::result::Result<
                    $crate::__private::adapter::exports::skybridge::plugin::discovering::DiscoveryStep,
                    ::std::string::String,
                > {
                    $crate::__private::start_discovery::<$ty>(context)
                }
                fn continue_discovery(
                    context: ::std::vec::Vec<$crate::__private::adapter::skybridge::plugin::types::Pair>,
                    cursor: ::std::string::String,
                    response: $crate::__private::adapter::exports::skybridge::plugin::discovering::CloudResponse,
                ) -> ::std::result::Result<
                    $crate::__private::adapter::exports::skybridge::plugin::discovering::DiscoveryStep,
                    ::std::string::String,
                > {
                    $crate::__private::continue_discovery::<$ty>(context, cursor, response)
                }
            }
            // Export symbols only exist in wasm builds; natively the glue is tested as plain code.
            #[cfg(target_family = "wasm")]
            $crate::__private::adapter::__export_full_adapter_world!(
                __SkybridgeAdapter with_types_in $crate::__private::adapter
            );
        };
    };
}

#[doc(hidden)]
pub mod __private;
