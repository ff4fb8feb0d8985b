//! The admin API's request and response types. The server answers with them and clients read
//! them back, so a renamed field is a compile error rather than a silently empty column.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::controller::bindings::{BindRequest, BindingView, Mode, Reroute};
pub use crate::controller::events::{Event, Stamped};
pub use crate::controller::group::MemberView;
pub use crate::controller::tunnels::TunnelRecord;
pub use crate::controller::view::{LinkView, NodeView, PlatformView};
pub use crate::path::{DecisionRecord, Policy, PolicyUpdate};
pub use crate::session::accounts::{AccountView, Credentials, CredentialsView, NewAccount};
pub use crate::session::records::SessionRecord;

/// The body of `POST /v1/decisions` (and its alias `POST /v1/connections`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// The requesting platform.
    pub from: String,
    /// The target platform.
    pub to: String,
}

/// An error answer: `{"error": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong, in one line.
    pub error: String,
}

/// The answer to `DELETE /v1/accounts/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    /// The id deleted.
    pub deleted: String,
}

/// One plugin in service, as `GET /v1/plugins` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginView {
    /// Its name in the controller (`scorer`, `adapter-PLATFORM`).
    pub name: String,
    /// The world it implements.
    pub world: String,
    /// The plugin's own name, as it describes itself.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of the component.
    pub sha256: String,
    /// The file it was loaded from (on the controller's machine).
    pub file: String,
    /// Calls made (including `describe` at load).
    pub calls: u64,
    /// Calls that trapped or breached a limit.
    pub faults: u64,
    /// Failed calls by kind (`deadline`, `memory`, `table`, `trap`, `invalid-answer`).
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Calls the plugin answered with an error of its own.
    pub rejections: u64,
    /// Mean time of a call, µs.
    pub mean_call_us: f64,
}

pub use crate::catalog::{AuditRecord, Authorization, InventoryRecord, RefreshRecord};
pub use crate::controller::{EntryView, OfferView};

/// A page of a list: its items, and the token of the next page when there is one (pass it as
/// `?page=`; it is opaque).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "{T}Page")]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The next page's token; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page: Option<String>,
    /// For the catalog: its revision when this page was read (pass it as `?since=` to wait
    /// for the next change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// The answer to `DELETE /v1/bindings/{id}` for a binding given up while being restored, or
/// closed through another controller of its group before it published its view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Abandoned {
    /// The binding's id.
    pub id: u64,
    /// Why there is no binding to show: `given up while being restored` or `closed by its
    /// group`.
    pub closed: String,
}

/// The answer to `DELETE /v1/bindings/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Unbound {
    /// The binding closed, as it was.
    Closed(Box<BindingView>),
    /// Closed with no view to show.
    Gone(Abandoned),
}

/// The answer to `POST /v1/platforms/{p}/refresh`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RefreshStarted {
    /// The platform.
    pub platform: String,
    /// Whether a refresh was already running there, which this request joined.
    pub already_running: bool,
}
