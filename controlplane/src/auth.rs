//! Authentication: bearer tokens generated at first start, and the client config file.
//!
//! The server keeps its tokens in `<data-dir>/tokens.json` (mode 0600): an admin token
//! (full access, written to the client config), a node join token and a peer token for
//! server-to-server Raft RPCs.
//!
//! The join token does one thing: it obtains a node credential for a node name (like
//! k3s' join token bootstrapping a kubelet's own credential). A node credential is
//! `wknode.<node name>.<HMAC-SHA256(peer token, node name)>`: any server holding the
//! cluster's secrets verifies it without state, and it authenticates exactly one node,
//! which the node authorizer (`apiserver/nodeauth.rs`) then limits to its own objects.

use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};
use wk_api::auth::constant_time_eq;

/// The server's secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub admin: String,
    pub node: String,
    pub peer: String,
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Admin,
    /// The node join token: may only obtain a node credential.
    Join,
    /// One node agent.
    Node(String),
    /// Another control-plane server (the peer token): cluster membership only.
    Peer,
}

const NODE_PREFIX: &str = "wknode.";

fn random_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Tokens {
    /// Loads the tokens from the data dir, generating and saving them on first start.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Tokens> {
        let path = data_dir.join("tokens.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tokens = Tokens {
                    admin: random_token(),
                    node: random_token(),
                    peer: random_token(),
                };
                write_private(
                    &path,
                    &serde_json::to_vec_pretty(&tokens).map_err(std::io::Error::other)?,
                )?;
                Ok(tokens)
            }
            Err(e) => Err(e),
        }
    }

    /// Who presents `token`, if anyone.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        if constant_time_eq(token.as_bytes(), self.admin.as_bytes()) {
            Some(Identity::Admin)
        } else if constant_time_eq(token.as_bytes(), self.node.as_bytes()) {
            Some(Identity::Join)
        } else if constant_time_eq(token.as_bytes(), self.peer.as_bytes()) {
            Some(Identity::Peer)
        } else if let Some((name, _)) = token
            .strip_prefix(NODE_PREFIX)
            .and_then(|t| t.rsplit_once('.'))
        {
            constant_time_eq(token.as_bytes(), self.node_credential(name).as_bytes())
                .then(|| Identity::Node(name.to_string()))
        } else {
            None
        }
    }

    /// The credential of node `name`.
    pub fn node_credential(&self, name: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.peer.as_bytes());
        let mac = ring::hmac::sign(&key, name.as_bytes());
        let hex: String = mac.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{NODE_PREFIX}{name}.{hex}")
    }
}

/// Writes a file readable only by its owner, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes a kubeconfig-format client config for `server` with `token` as context `wk`,
/// usable by both `wk` and `kubectl`.
pub fn write_client_config(
    path: &Path,
    server: &str,
    token: &str,
    ca_pem: &str,
) -> std::io::Result<()> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "wk", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "wk-admin", "user": {"token": token}}],
        "contexts": [{"name": "wk", "context": {"cluster": "wk", "user": "wk-admin", "namespace": "default"}}],
        "current-context": "wk",
        "preferences": {},
    });
    let yaml = serde_yaml::to_string(&config).map_err(std::io::Error::other)?;
    write_private(path, yaml.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_persist_and_identify() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tokens::load_or_create(dir.path()).unwrap();
        let b = Tokens::load_or_create(dir.path()).unwrap();
        assert_eq!(a.admin, b.admin);
        assert_ne!(a.admin, a.node);
        assert_eq!(a.identify(&a.admin), Some(Identity::Admin));
        assert_eq!(a.identify(&a.node), Some(Identity::Join));
        assert_eq!(a.identify("nope"), None);
        // A node credential names its node and cannot be bent to another name.
        let cred = a.node_credential("node-1.example");
        assert_eq!(
            a.identify(&cred),
            Some(Identity::Node("node-1.example".into()))
        );
        let mac = cred.rsplit_once('.').unwrap().1;
        assert_eq!(a.identify(&format!("wknode.node-2.{mac}")), None);
        assert_eq!(a.identify("wknode.node-1.example.00"), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
