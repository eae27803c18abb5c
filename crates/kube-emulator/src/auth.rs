//! Authentication: bearer tokens issued by the emulator's Rust API, each naming a user and
//! its groups (a ServiceAccount token names `system:serviceaccount:NS:NAME` with the groups a
//! real token authenticator adds). A request without an `Authorization` header is the
//! administrator (test setup and the demo's default kubeconfig); an unknown token is 401.
//!
//! Every decision the RBAC authorizer (`rbac`) makes for a token identity is recorded: the
//! authorized request attributes (deduplicated) and every denial with its 403 message, so
//! tests can prove both that nothing was denied and which grants were exercised.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// Group that bypasses authorization, as on a real cluster.
pub const MASTERS_GROUP: &str = "system:masters";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// An authenticated identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The identity a ServiceAccount token authenticates as.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED_GROUP.into(),
            ],
        }
    }

    pub fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }
}

/// Who is making a request.
#[derive(Clone, Debug)]
pub enum Identity {
    /// No credentials: the emulator's administrator (no authorization, nothing recorded).
    Admin,
    User(UserInfo),
}

/// What the authorizer decides on, as the real server's `authorizer.Attributes` of a
/// resource request. `name` is empty for collection requests (except list/watch with a
/// `metadata.name` field selector, which the real server authorizes by that name too).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestAttributes {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl RequestAttributes {
    /// `resource` or `resource/subresource`, as RBAC rules and 403 messages name it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// A denied request: its attributes and the message of the 403 it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub attributes: RequestAttributes,
    pub message: String,
}

#[derive(Default)]
pub struct Auth {
    tokens: HashMap<String, UserInfo>,
    authorized: BTreeMap<String, BTreeSet<RequestAttributes>>,
    denied: BTreeMap<String, Vec<Denial>>,
}

impl Auth {
    /// A new random token for `user`.
    pub fn issue(&mut self, user: UserInfo) -> String {
        let mut b = [0u8; 24];
        getrandom::fill(&mut b).expect("OS randomness");
        let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let token = format!("kube-emulator.{token}");
        self.tokens.insert(token.clone(), user);
        token
    }

    /// The identity of a request: from its bearer token, or the administrator without one.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Identity::Admin);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match token.and_then(|t| self.tokens.get(t)) {
            Some(user) => Ok(Identity::User(user.clone())),
            None => Err(ApiError::new(401, "Unauthorized", "Unauthorized")),
        }
    }

    pub fn record_allowed(&mut self, user: &str, attributes: RequestAttributes) {
        self.authorized
            .entry(user.to_string())
            .or_default()
            .insert(attributes);
    }

    pub fn record_denied(&mut self, user: &str, denial: Denial) {
        self.denied
            .entry(user.to_string())
            .or_default()
            .push(denial);
    }

    pub fn authorized(&self, user: &str) -> Vec<RequestAttributes> {
        self.authorized
            .get(user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn denied(&self, user: &str) -> Vec<Denial> {
        self.denied.get(user).cloned().unwrap_or_default()
    }
}
