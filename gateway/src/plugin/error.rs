//! Errors of the plugin host. Loading and calling fail differently: a load error means the
//! plugin is unusable; a call error fails that one call and leaves the plugin usable.

use std::path::PathBuf;
use std::time::Duration;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read: missing, not a regular file, or over
    /// [`crate::file::MAX_PLUGIN_BYTES`].
    #[error("plugin `{plugin}`: {source}")]
    Read {
        /// Plugin name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: crate::file::FileError,
    },
    /// The bytes are not a valid plugin: not wasm, a broken component, or a core module that
    /// cannot be wrapped into one.
    #[error("plugin `{plugin}`: invalid wasm: {reason}")]
    Invalid {
        /// Plugin name.
        plugin: String,
        /// What the validator said.
        reason: String,
    },
    /// The component implements none of Skybridge's worlds.
    #[error(
        "plugin `{plugin}`: implements none of Skybridge's plugin worlds — it must export one of \
         {expected}; it exports: {found}"
    )]
    UnknownWorld {
        /// Plugin name.
        plugin: String,
        /// The interfaces that would have identified a world.
        expected: String,
        /// What it does export.
        found: String,
    },
    /// The component claims a world but does not implement it fully or with the right types.
    #[error("plugin `{plugin}`: does not implement world `{world}` correctly: {reason}")]
    WorldMismatch {
        /// Plugin name.
        plugin: String,
        /// The world it claims.
        world: &'static str,
        /// What is missing or wrong.
        reason: String,
    },
    /// The component imports something the sandbox does not provide.
    #[error(
        "plugin `{plugin}`: imports `{import}`, which the Skybridge sandbox does not provide \
         (plugins may import only skybridge:plugin/{{log,config,clock,crypto}}@0.1.0)"
    )]
    UnsupportedImport {
        /// Plugin name.
        plugin: String,
        /// The offending import.
        import: String,
    },
    /// The limits asked for cannot be honoured by this engine.
    #[error("plugin `{plugin}`: {reason}")]
    BadLimits {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// `describe()` failed when the plugin was loaded.
    #[error("plugin `{plugin}`: describe() failed at load: {source}")]
    Describe {
        /// Plugin name.
        plugin: String,
        /// The call error.
        source: Box<CallError>,
    },
    /// Engine-level failure (compilation, cache, linker).
    #[error("plugin `{plugin}`: {reason}")]
    Engine {
        /// Plugin name.
        plugin: String,
        /// What failed.
        reason: String,
    },
}

/// A failed call into a plugin. The plugin stays loaded and the next call starts afresh.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}`: call `{call}` failed: {cause}")]
pub struct CallError {
    /// The plugin's name.
    pub plugin: String,
    /// The export called (`score`, `authorize`, …).
    pub call: &'static str,
    /// Why it failed.
    pub cause: CallFailure,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallFailure {
    /// The plugin ran past its CPU deadline and was interrupted.
    #[error("exceeded its CPU deadline of {} ms", .limit.as_millis())]
    DeadlineExceeded {
        /// The deadline.
        limit: Duration,
    },
    /// The plugin tried to grow its memory past its limit.
    #[error("exceeded its memory limit of {limit} bytes (asked for {requested} bytes)")]
    MemoryLimit {
        /// The limit.
        limit: usize,
        /// What it asked for.
        requested: usize,
    },
    /// The plugin tried to grow a table past its limit.
    #[error("exceeded its table limit of {limit} elements (asked for {requested})")]
    TableLimit {
        /// The limit.
        limit: usize,
        /// What it asked for.
        requested: usize,
    },
    /// The plugin trapped (a panic, an unreachable, a call to an import the sandbox withholds).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin ran and answered with an error of its own (guest-visible, not a fault).
    #[error("the plugin refused: {0}")]
    Rejected(String),
    /// The plugin answered something the host cannot accept (e.g. a non-finite score).
    #[error("invalid answer: {0}")]
    InvalidAnswer(String),
    /// This call does not exist in the plugin's world.
    #[error("this call belongs to world `{expected}`; the plugin implements `{actual}`")]
    WrongWorld {
        /// The world the call belongs to.
        expected: &'static str,
        /// The plugin's world.
        actual: &'static str,
    },
}

impl CallFailure {
    /// Whether the plugin broke (as opposed to answering "no"): traps and limit breaches.
    pub fn is_fault(&self) -> bool {
        !matches!(self, CallFailure::Rejected(_) | CallFailure::WrongWorld { .. })
    }
}
