//! CONNECT bindings: one per (account, platform, endpoint), made on the first CONNECT that
//! asks for it and reused until it expires. Only requests for the same binding wait for each
//! other (a gate per key being made); reusing one waits for nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::bindings::{BindError, BindRequest, Mode};
use super::connect::ConnectError;
use super::{Controller, lock};

/// The gates of the CONNECT bindings being made.
pub(super) type Making = Mutex<HashMap<ConnectKey, Arc<tokio::sync::Mutex<()>>>>;

/// Whose CONNECT binding to what: (account, platform, endpoint).
pub(super) type ConnectKey = (String, String, String);

/// A CONNECT key's gate, taken out of the map again when its last user is done (or dropped
/// mid-way).
struct Gate<'a> {
    making: &'a Making,
    key: ConnectKey,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut making = lock(self.making);
        // Under the map's lock nobody else can take the gate: the map's and ours are the last.
        if Arc::strong_count(&self.gate) == 2 {
            making.remove(&self.key);
        }
    }
}

impl Controller {
    /// The CONNECT binding to `to`'s `endpoint` for `account`, made on first use and kept until
    /// it expires. One per account and target: an account's traffic never rides another
    /// account's tunnel. An account (the operator aside) reaches only platforms it has
    /// credentials at, and the target site's authorizer decides on the endpoint. Only requests
    /// for the same binding wait for each other.
    pub async fn connect_binding(&self, account: &str, to: &str, endpoint: &str) -> Result<u64, BindError> {
        let key: ConnectKey = (account.to_owned(), to.to_owned(), endpoint.to_owned());
        if let Some(id) = self.bindings.connect_binding(&key) {
            return Ok(id);
        }
        let gate = Arc::clone(lock(&self.bindings.making).entry(key.clone()).or_default());
        let gate = Gate { making: &self.bindings.making, key, gate };
        let _one_at_a_time = gate.gate.lock().await;
        if let Some(id) = self.bindings.connect_binding(&gate.key) {
            return Ok(id);
        }
        self.make_connect_binding(account, to, endpoint).await
    }

    async fn make_connect_binding(&self, account: &str, to: &str, endpoint: &str) -> Result<u64, BindError> {
        if account != crate::session::accounts::OPERATOR {
            let mapped = self.credentials(account, to).await.map_err(ConnectError::from)?;
            if mapped.is_none() {
                return Err(BindError::Forbidden(format!(
                    "account `{account}` has no credentials at `{to}`"
                )));
            }
        }
        let listen = self.ingress.connect_listen.unwrap_or(SocketAddr::new(self.ingress.address, 0));
        let req = BindRequest {
            from: None,
            to: to.to_owned(),
            endpoint: endpoint.to_owned(),
            mode: Mode::Connect,
            listen: None,
            ttl_s: None,
            account: None,
            capability: None,
            open: false,
        };
        let (view, _, _) = self.create_binding(req, account, listen, None).await?;
        Ok(view.id)
    }
}
