//! A loaded plugin: its compiled component pre-linked for its world, a small pool of warm
//! instances, and the typed calls of that world.
//!
//! Every call takes a warm instance (or instantiates one through `InstancePre` from the
//! pooling allocator), sets the CPU deadline, calls, and puts the instance back only if the
//! call succeeded: an instance that trapped or breached a limit is dropped, so the next call
//! starts clean.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{ComponentExportIndex, TypedFunc};
use wasmtime::{Engine, Store, Trap};

use super::bindings::{adapter, adapting, authorization, authorizer, scorer, scoring, types};
use super::engine::PluginEngine;
use super::error::{CallError, CallFailure, LoadError};
use super::optional::{CloudResponse, Consent, DiscoveryStep, Token, TokenRequest};
use super::sandbox::{LogBucket, PluginStats, Sandbox, StatsSnapshot, TIME_ONE_IN};
use super::{PluginLimits, PluginSpec, World};

mod calls;

/// Host interfaces a plugin may import (the `types` interface carries only types).
const HOST_IMPORTS: [&str; 5] = [
    "skybridge:plugin/types@0.1.0",
    "skybridge:plugin/log@0.1.0",
    "skybridge:plugin/config@0.1.0",
    "skybridge:plugin/clock@0.1.0",
    "skybridge:plugin/crypto@0.1.0",
];

/// The optional adapter interfaces: authenticating clients, exchanging tokens.
const AUTHENTICATING: &str = "skybridge:plugin/authenticating@0.1.0";
const TOKEN_EXCHANGE: &str = "skybridge:plugin/token-exchange@0.1.0";
const DISCOVERING: &str = "skybridge:plugin/discovering@0.1.0";
/// The optional authorizer interface: decisions that may wait for a person.
const DEFERRING: &str = "skybridge:plugin/deferring@0.1.0";

/// Warm instances kept per plugin; more concurrent calls instantiate fresh ones.
const MAX_WARM: usize = 16;

/// The longest explanation or reason a plugin may answer, bytes (the WIT asks for one line).
pub const MAX_ANSWER_TEXT: usize = 4 * 1024;
/// The largest request head an adapter's rewrite may answer (path, query and headers), and
/// the most headers in it: it is sent on to the target as is.
pub const MAX_REWRITTEN_HEAD: usize = 64 * 1024;
/// See [`MAX_REWRITTEN_HEAD`].
pub const MAX_REWRITTEN_HEADERS: usize = 256;
/// The longest account id an adapter may read from a client's request.
pub const MAX_CLAIMED_ACCOUNT: usize = 256;
/// The longest token an adapter may read from an identity service's answer: it is cached and
/// put in every request.
pub const MAX_TOKEN: usize = 16 * 1024;

/// What `describe()` said when the plugin was loaded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "world", rename_all = "lowercase")]
pub enum Description {
    /// A scorer's name, version and weights.
    Scorer(scoring::ScorerInfo),
    /// An authorizer's name and version.
    Authorizer(authorization::AuthorizerInfo),
    /// An adapter's cloud, name, version and needs.
    Adapter(adapting::AdapterInfo),
}

impl Description {
    /// The plugin's own name and version.
    pub fn name_version(&self) -> (&str, &str) {
        match self {
            Description::Scorer(i) => (&i.name, &i.version),
            Description::Authorizer(i) => (&i.name, &i.version),
            Description::Adapter(i) => (&i.name, &i.version),
        }
    }
}

/// What a plugin file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A WebAssembly component (e.g. built for `wasm32-wasip2`).
    Component,
    /// A core module carrying the SDK's WIT metadata (built for `wasm32-unknown-unknown`),
    /// wrapped into a component when loaded.
    CoreModule,
}

/// How an import of the component is satisfied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportStatus {
    /// A Skybridge host interface.
    Provided,
    /// A WASI interface (typically pulled in by a language's standard library). The sandbox
    /// withholds it: every function traps if called.
    WithheldTraps,
}

/// What is known about a loaded plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    /// The operator's name for this plugin instance.
    pub name: String,
    /// The world it implements.
    pub world: World,
    /// What `describe()` returned.
    pub description: Description,
    /// Lower-case hex SHA-256 of the component file.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: usize,
    /// What the file held.
    pub format: Format,
    /// The component's exports.
    pub exports: Vec<String>,
    /// The component's imports and how each is satisfied.
    pub imports: Vec<(String, ImportStatus)>,
}

enum WorldPre {
    Scorer(scorer::ScorerPre<Sandbox>),
    /// With where `deferring.decide` is, when the authorizer exports it.
    Authorizer(authorizer::AuthorizerPre<Sandbox>, Option<ComponentExportIndex>),
    Adapter(adapter::AdapterPre<Sandbox>, AdapterExtras),
}

/// Where an adapter's optional functions are (found once at load).
#[derive(Clone, Default)]
struct AdapterExtras {
    authenticating: Option<AuthenticatingIndices>,
    token_exchange: Option<TokenExchangeIndices>,
    discovering: Option<DiscoveringIndices>,
}

#[derive(Clone)]
struct DiscoveringIndices {
    start: ComponentExportIndex,
    next: ComponentExportIndex,
}

#[derive(Clone)]
struct TokenExchangeIndices {
    request_token: ComponentExportIndex,
    read_token: ComponentExportIndex,
}

/// Where an adapter's `authenticating` functions are (found once at load).
#[derive(Clone)]
struct AuthenticatingIndices {
    claimed_account: ComponentExportIndex,
    verify_client: ComponentExportIndex,
}

enum Exports {
    Scorer(scorer::Scorer),
    Authorizer(authorizer::Authorizer, Option<DecideFunc>),
    Adapter(adapter::Adapter, Box<AdapterFuncs>),
}

/// `deferring.decide`.
type DecideFunc = TypedFunc<(authorization::AuthorizationRequest,), (Consent,)>;

/// An adapter instance's optional functions.
#[derive(Default)]
struct AdapterFuncs {
    authenticating: Option<Authenticating>,
    token_exchange: Option<TokenExchange>,
    discovering: Option<Discovering>,
}

/// An adapter instance's `discovering` functions.
struct Discovering {
    start: TypedFunc<(Vec<types::Pair>,), (Result<DiscoveryStep, String>,)>,
    next: TypedFunc<ContinueDiscoveryArgs, (Result<DiscoveryStep, String>,)>,
}

/// `continue-discovery`'s parameters: context, cursor, the cloud's answer.
type ContinueDiscoveryArgs = (Vec<types::Pair>, String, CloudResponse);

/// An adapter instance's `token-exchange` functions.
struct TokenExchange {
    request_token: TypedFunc<(adapting::TargetCredentials,), (Option<TokenRequest>,)>,
    read_token: TypedFunc<ReadTokenArgs, (Result<Token, String>,)>,
}

/// `read-token`'s parameters: status, headers, body.
type ReadTokenArgs = (u16, Vec<types::Pair>, Vec<u8>);

/// An adapter instance's `authenticating` functions (hand-bound: bindgen's per-world types
/// would not share `request-head` with the `adapter` world's bindings).
struct Authenticating {
    claimed_account: TypedFunc<(adapting::RequestHead,), (Option<String>,)>,
    verify_client: TypedFunc<(adapting::RequestHead, String), (Result<(), String>,)>,
}

struct Warm {
    store: Store<Sandbox>,
    exports: Exports,
}

/// A plugin ready to be called. Cheap to share behind an `Arc`; calls may run concurrently.
pub struct Plugin {
    info: PluginInfo,
    pre: WorldPre,
    engine: Engine,
    limits: PluginLimits,
    deadline_ticks: u64,
    /// The CPU deadline of one discovery call (larger: it parses whole listings).
    discovery_ticks: u64,
    name: Arc<str>,
    config: Arc<BTreeMap<String, String>>,
    stats: Arc<PluginStats>,
    log_bucket: Arc<LogBucket>,
    warm: Mutex<Vec<Warm>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Plugin {
    pub(crate) fn load(host: &PluginEngine, spec: &PluginSpec, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let plugin = spec.name.clone();
        host.check_limits(&plugin, &spec.limits)?;
        let format = match wasm_format(bytes) {
            Ok(format) => format,
            Err(reason) => return Err(LoadError::Invalid { plugin, reason }),
        };
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = host
            .compile(&sha256, || match format {
                Format::Component => Ok(bytes.to_vec()),
                Format::CoreModule => wrap_core_module(bytes),
            })
            .map_err(|reason| LoadError::Invalid { plugin: plugin.clone(), reason })?;
        let engine = host.engine().clone();
        let ty = component.component_type();

        let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_owned()).collect();
        let worlds: Vec<World> =
            World::ALL.into_iter().filter(|w| exports.iter().any(|e| e == w.export())).collect();
        let world = match worlds[..] {
            [world] => world,
            [] => {
                return Err(LoadError::UnknownWorld {
                    plugin,
                    expected: World::ALL
                        .iter()
                        .map(|w| format!("`{}` (world `{}`)", w.export(), w.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    found: if exports.is_empty() { "nothing".into() } else { exports.join(", ") },
                });
            }
            _ => {
                return Err(LoadError::WorldMismatch {
                    plugin,
                    world: worlds[0].name(),
                    reason: "a plugin must implement exactly one world, this one exports several".into(),
                });
            }
        };

        // Imports: host interfaces are provided; WASI is withheld (calls trap); anything else
        // would be a capability we do not grant, so the plugin is refused up front.
        let mut imports = Vec::new();
        for (name, item) in ty.imports(&engine) {
            let status = if HOST_IMPORTS.contains(&name) {
                ImportStatus::Provided
            } else if name.starts_with("wasi:") && matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                ImportStatus::WithheldTraps
            } else {
                return Err(LoadError::UnsupportedImport { plugin, import: name.to_owned() });
            };
            imports.push((name.to_owned(), status));
        }
        let mut linker = host.linker().clone();
        if imports.iter().any(|(_, s)| *s == ImportStatus::WithheldTraps) {
            linker
                .define_unknown_imports_as_traps(&component)
                .map_err(|e| LoadError::Engine { plugin: plugin.clone(), reason: format!("{e:#}") })?;
        }
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| LoadError::WorldMismatch {
            plugin: plugin.clone(),
            world: world.name(),
            reason: format!("{e:#}"),
        })?;
        let mismatch = |e: wasmtime::Error| LoadError::WorldMismatch {
            plugin: plugin.clone(),
            world: world.name(),
            reason: format!("{e:#}"),
        };
        let pre = match world {
            World::Scorer => WorldPre::Scorer(scorer::ScorerPre::new(instance_pre).map_err(mismatch)?),
            World::Authorizer => {
                let decide = component
                    .get_export_index(None, DEFERRING)
                    .and_then(|i| component.get_export_index(Some(&i), "decide"));
                WorldPre::Authorizer(authorizer::AuthorizerPre::new(instance_pre).map_err(mismatch)?, decide)
            }
            World::Adapter => {
                let index = |iface: &str, name: &str| {
                    let lacks = || LoadError::WorldMismatch {
                        plugin: plugin.clone(),
                        world: world.name(),
                        reason: format!("`{iface}` lacks `{name}`"),
                    };
                    let i = component.get_export_index(None, iface).ok_or_else(lacks)?;
                    component.get_export_index(Some(&i), name).ok_or_else(lacks)
                };
                let exports_iface = |iface: &str| component.get_export_index(None, iface).is_some();
                let mut extras = AdapterExtras::default();
                if exports_iface(AUTHENTICATING) {
                    extras.authenticating = Some(AuthenticatingIndices {
                        claimed_account: index(AUTHENTICATING, "claimed-account")?,
                        verify_client: index(AUTHENTICATING, "verify-client")?,
                    });
                }
                if exports_iface(DISCOVERING) {
                    extras.discovering = Some(DiscoveringIndices {
                        start: index(DISCOVERING, "start-discovery")?,
                        next: index(DISCOVERING, "continue-discovery")?,
                    });
                }
                if exports_iface(TOKEN_EXCHANGE) {
                    extras.token_exchange = Some(TokenExchangeIndices {
                        request_token: index(TOKEN_EXCHANGE, "request-token")?,
                        read_token: index(TOKEN_EXCHANGE, "read-token")?,
                    });
                }
                WorldPre::Adapter(adapter::AdapterPre::new(instance_pre).map_err(mismatch)?, extras)
            }
        };

        let mut loaded = Plugin {
            info: PluginInfo {
                name: plugin.clone(),
                world,
                // Replaced by the real description just below.
                description: Description::Authorizer(authorization::AuthorizerInfo {
                    name: String::new(),
                    version: String::new(),
                }),
                sha256,
                size: bytes.len(),
                format,
                exports,
                imports,
            },
            pre,
            engine,
            deadline_ticks: host.ticks_for(spec.limits.deadline()),
            discovery_ticks: host.ticks_for(spec.limits.discovery_deadline()),
            limits: spec.limits.clone(),
            name: Arc::from(plugin.as_str()),
            config: Arc::new(spec.config.clone()),
            stats: Arc::new(PluginStats::default()),
            log_bucket: Arc::new(LogBucket::new(spec.limits.log_per_second, spec.limits.log_burst)),
            warm: Mutex::new(Vec::new()),
        };
        loaded.info.description = loaded
            .describe()
            .map_err(|e| LoadError::Describe { plugin: plugin.clone(), source: Box::new(e) })?;
        Ok(loaded)
    }

    /// What is known about this plugin.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        self.info.world
    }

    /// Its counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The times of its timed calls (one in 16, the first always), seconds.
    pub fn call_times(&self) -> crate::metrics::HistogramSnapshot {
        self.stats.call_times.0.snapshot()
    }

    /// The limits it runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    fn describe(&self) -> Result<Description, CallError> {
        self.call("describe", |store, exports| {
            Ok(Ok(match exports {
                Exports::Scorer(s) => Description::Scorer(s.skybridge_plugin_scoring().call_describe(store)?),
                Exports::Authorizer(a, _) => {
                    Description::Authorizer(a.skybridge_plugin_authorization().call_describe(store)?)
                }
                Exports::Adapter(a, _) => {
                    Description::Adapter(a.skybridge_plugin_adapting().call_describe(store)?)
                }
            }))
        })
    }

    // -----------------------------------------------------------------------------------------
    // The call machinery

    /// Run `f` on an instance under the sandbox's deadline and limits. `f` returns the wasm
    /// result (trap or not) wrapping the plugin's own answer (accepted or refused).
    fn call<R>(
        &self,
        call: &'static str,
        f: impl FnOnce(&mut Store<Sandbox>, &Exports) -> wasmtime::Result<Result<R, CallFailure>>,
    ) -> Result<R, CallError> {
        let _span = tracing::debug_span!("plugin_call", plugin = %self.name, export = call).entered();
        let n = self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let started = n.is_multiple_of(TIME_ONE_IN).then(std::time::Instant::now);
        let result = self.call_timed(call, f);
        if let Some(started) = started {
            let elapsed = started.elapsed();
            self.stats.call_times.0.observe(elapsed);
            let took = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            self.stats.timed_ns.fetch_add(took, Ordering::Relaxed);
            self.stats.timed_calls.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = &result {
            self.stats.count_failure(&e.cause);
        }
        result
    }

    fn call_timed<R>(
        &self,
        call: &'static str,
        f: impl FnOnce(&mut Store<Sandbox>, &Exports) -> wasmtime::Result<Result<R, CallFailure>>,
    ) -> Result<R, CallError> {
        let reused = if self.limits.reuse_instances { self.take_warm() } else { None };
        let mut warm = match reused {
            Some(warm) => warm,
            None => self.instantiate()?,
        };
        let store = &mut warm.store;
        store.data_mut().begin(call);
        store.set_epoch_deadline(self.deadline_ticks);
        let outcome = f(store, &warm.exports);
        store.data_mut().end();
        match outcome {
            Ok(Ok(value)) => {
                self.put_warm(warm);
                Ok(value)
            }
            Ok(Err(failure)) => {
                // The plugin answered; its instance is healthy and can be reused.
                if matches!(failure, CallFailure::Rejected(_)) {
                    self.stats.rejections.fetch_add(1, Ordering::Relaxed);
                }
                self.put_warm(warm);
                Err(self.error(call, failure))
            }
            Err(e) => {
                // The instance trapped: it is dropped here, never reused.
                self.stats.faults.fetch_add(1, Ordering::Relaxed);
                Err(self.error(call, self.classify(&e, warm.store.data())))
            }
        }
    }

    fn instantiate(&self) -> Result<Warm, CallError> {
        self.instantiate_with(&self.limits, self.deadline_ticks)
    }

    fn instantiate_with(&self, limits: &PluginLimits, deadline_ticks: u64) -> Result<Warm, CallError> {
        let sandbox = Sandbox::new(
            self.name.clone(),
            self.config.clone(),
            self.stats.clone(),
            self.log_bucket.clone(),
            limits,
        );
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| s);
        store.set_epoch_deadline(deadline_ticks);
        let exports = match &self.pre {
            WorldPre::Scorer(pre) => pre.instantiate(&mut store).map(Exports::Scorer),
            WorldPre::Authorizer(pre, decide) => instantiate_authorizer(&mut store, pre, decide.as_ref()),
            WorldPre::Adapter(pre, extras) => instantiate_adapter(&mut store, pre, extras),
        };
        match exports {
            Ok(exports) => Ok(Warm { store, exports }),
            Err(e) => {
                self.stats.faults.fetch_add(1, Ordering::Relaxed);
                Err(self.error("instantiate", self.classify(&e, store.data())))
            }
        }
    }

    fn take_warm(&self) -> Option<Warm> {
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_warm(&self, warm: Warm) {
        if self.limits.reuse_instances {
            let mut pool = self.warm.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < MAX_WARM {
                pool.push(warm);
            }
        }
    }

    fn classify(&self, e: &wasmtime::Error, sandbox: &Sandbox) -> CallFailure {
        if let Some(breach) = sandbox.breach_failure() {
            return breach;
        }
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return CallFailure::DeadlineExceeded { limit: self.limits.deadline() };
        }
        let cause = e.root_cause().to_string();
        let cause = match cause.strip_prefix("unknown import: `") {
            // Our trap stubs for withheld WASI functions.
            Some(rest) => format!(
                "called `{}`, which the sandbox withholds (no ambient WASI)",
                rest.split('`').next().unwrap_or(rest)
            ),
            None => cause,
        };
        match &sandbox.last_error_log {
            Some(said) => CallFailure::Trap(format!("{cause} (the plugin's last error log: {said})")),
            None => CallFailure::Trap(cause),
        }
    }

    fn wrong_world(&self, expected: World) -> CallFailure {
        CallFailure::WrongWorld { expected: expected.name(), actual: self.info.world.name() }
    }

    fn error(&self, call: &'static str, cause: CallFailure) -> CallError {
        if cause.is_fault() {
            tracing::warn!(plugin = %self.name, call, %cause, "plugin call failed");
        }
        CallError { plugin: self.name.to_string(), call, cause }
    }
}

/// Instantiate an authorizer, binding `deferring.decide` when it has it.
fn instantiate_authorizer(
    store: &mut Store<Sandbox>,
    pre: &authorizer::AuthorizerPre<Sandbox>,
    decide: Option<&ComponentExportIndex>,
) -> wasmtime::Result<Exports> {
    let instance = pre.instance_pre().instantiate(&mut *store)?;
    let exports = authorizer::Authorizer::new(&mut *store, &instance)?;
    let decide = match decide {
        Some(i) => Some(instance.get_typed_func(&mut *store, i)?),
        None => None,
    };
    Ok(Exports::Authorizer(exports, decide))
}

/// Instantiate an adapter, binding its optional functions when it has them.
fn instantiate_adapter(
    store: &mut Store<Sandbox>,
    pre: &adapter::AdapterPre<Sandbox>,
    extras: &AdapterExtras,
) -> wasmtime::Result<Exports> {
    let instance = pre.instance_pre().instantiate(&mut *store)?;
    let adapter = adapter::Adapter::new(&mut *store, &instance)?;
    let mut funcs = AdapterFuncs::default();
    if let Some(i) = &extras.authenticating {
        funcs.authenticating = Some(Authenticating {
            claimed_account: instance.get_typed_func(&mut *store, i.claimed_account)?,
            verify_client: instance.get_typed_func(&mut *store, i.verify_client)?,
        });
    }
    if let Some(i) = &extras.discovering {
        funcs.discovering = Some(Discovering {
            start: instance.get_typed_func(&mut *store, i.start)?,
            next: instance.get_typed_func(&mut *store, i.next)?,
        });
    }
    if let Some(i) = &extras.token_exchange {
        funcs.token_exchange = Some(TokenExchange {
            request_token: instance.get_typed_func(&mut *store, i.request_token)?,
            read_token: instance.get_typed_func(&mut *store, i.read_token)?,
        });
    }
    Ok(Exports::Adapter(adapter, Box::new(funcs)))
}

fn wasm_format(bytes: &[u8]) -> Result<Format, String> {
    // Magic `\0asm`, then a version/layer word: 0x0d/1 for components, 1/0 for core modules.
    if bytes.len() < 8 {
        return Err(format!("file is only {} bytes long", bytes.len()));
    }
    if bytes[..4] != *b"\0asm" {
        return Err("file does not start with the wasm magic number".into());
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(Format::Component),
        [0x01, 0x00, 0x00, 0x00] => Ok(Format::CoreModule),
        _ => Err(format!("unknown wasm version/layer {:02x?}", &bytes[4..8])),
    }
}

/// Wrap a core module into a component using the WIT world the SDK embedded in it.
fn wrap_core_module(bytes: &[u8]) -> Result<Vec<u8>, String> {
    // wit-bindgen embeds the world in custom sections named `component-type…`; without one
    // the module would wrap into an empty component, which helps nobody.
    if !bytes.windows(14).any(|w| w == b"component-type") {
        return Err("a core wasm module without component metadata: build plugins with \
                    skybridge-plugin-sdk (for wasm32-unknown-unknown), or as a component"
            .into());
    }
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder.module(bytes).and_then(|e| e.validate(true).encode()).map_err(|e| {
        format!(
            "a core wasm module that cannot be wrapped into a component ({e:#}); build plugins \
                 with skybridge-plugin-sdk for wasm32-unknown-unknown, or as a component for wasm32-wasip2"
        )
    })
}

/// Limits as the deadline type.
impl PluginLimits {
    /// The CPU deadline per call.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mib << 20
    }

    /// The CPU deadline of one discovery call.
    pub fn discovery_deadline(&self) -> Duration {
        Duration::from_millis(self.discovery_deadline_ms)
    }

    /// These limits with the discovery deadline and memory in place of the per-call ones.
    pub fn for_discovery(&self) -> PluginLimits {
        PluginLimits {
            deadline_ms: self.discovery_deadline_ms,
            memory_mib: self.discovery_memory_mib,
            reuse_instances: false,
            ..self.clone()
        }
    }
}
