//! The planning phase of an `RdsCredential` reconcile: everything that can be decided before
//! anything is written to Secrets Manager, the database or Kubernetes.
//!
//! [`decide`] is pure: from the spec, the RdsDatabase and the engine it computes a [`Plan`] or
//! a [`Refusal`] naming the spec field at fault. [`prepare`] adds what needs reads (and only
//! reads): the secret-name and claim rules, the target Secret's ownership, and, for managed
//! credentials, the roles, databases and schemas the privileges name, read with the admin
//! login. Every refusal of a spec comes from here, so an invalid spec — a new one, or an edit
//! of a working credential — never creates a secret or a user halfway: the credential keeps
//! working on what it last applied and the status says why the edit is not applied.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::Error;
use super::database::ResolvedDatabase;
use crate::context::Context;
use crate::crd::{
    CredentialMode, EngineKind, PasswordSpec, RdsCredential, RdsCredentialStatus, RdsDatabase,
    RotationSpec, Rotator,
};
use crate::engine::{DbError, UserPlan};
use crate::propagation::sync::{CREDENTIAL_LABEL, MANAGED_BY_LABEL, VERSION_ANNOTATION};
use crate::reconcile::Reason;
use crate::schedule::RotationPlan;
use crate::secret::password_alphabet;

/// What an accepted spec asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Managed credentials: the user, its clone, its privileges and roles.
    pub user: Option<UserPlan>,
    /// The credential's rotation settings, or the database's defaults.
    pub rotation: Option<RotationSpec>,
    /// The parsed schedule, when there is one.
    pub schedule: Option<RotationPlan>,
}

/// Why a spec is refused: a condition reason, the field at fault, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// `spec.target.templates[DATABASE URL]`, `spec.rotation.schedule.scheduleExpression`, ...
    pub field: String,
    pub message: String,
}

impl Refusal {
    fn new(reason: Reason, field: impl Into<String>, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        Error::refused(r.reason, r.to_string())
    }
}

/// Every refusal reason the planning phase can give, for docs/troubleshooting.md (a test keeps
/// the two equal).
pub const REFUSAL_REASONS: &[Reason] = &[
    Reason::InvalidUser,
    Reason::InvalidPrivileges,
    Reason::InvalidSchedule,
    Reason::InvalidRotation,
    Reason::InvalidPasswordPolicy,
    Reason::InvalidTemplate,
    Reason::InvalidTarget,
];

/// The pure decision: the spec is valid for this database and engine, or the first field
/// that is not.
pub fn decide(cred: &RdsCredential, db: &RdsDatabase, engine: EngineKind) -> Result<Plan, Refusal> {
    check_target(cred)?;
    if cred.spec.mode == CredentialMode::SyncOnly {
        return Ok(Plan {
            user: None,
            rotation: None,
            schedule: None,
        });
    }
    let user = user_plan(cred, engine)?;
    let (rotation, field) = match &cred.spec.rotation {
        Some(r) => (Some(RotationSpec::clone(r)), "spec.rotation"),
        None => (
            db.spec.rotation_defaults.clone(),
            "RdsDatabase spec.rotationDefaults",
        ),
    };
    let mut schedule = None;
    if let Some(r) = &rotation {
        if let Some(s) = &r.schedule {
            let parsed = RotationPlan::from_spec(s).map_err(|e| {
                let which = if s.schedule_expression.is_some() {
                    "scheduleExpression"
                } else {
                    "automaticallyAfterDays"
                };
                Refusal::new(
                    Reason::InvalidSchedule,
                    format!("{field}.schedule.{which}"),
                    e.to_string(),
                )
            })?;
            schedule = Some(parsed);
        }
        if r.rotator == Rotator::Lambda {
            if r.schedule.is_none() {
                return Err(Refusal::new(
                    Reason::InvalidRotation,
                    format!("{field}.schedule"),
                    "rotator: lambda needs a schedule (Secrets Manager rotates on it)",
                ));
            }
            if r.lambda_arn.as_deref().is_none_or(str::is_empty) {
                return Err(Refusal::new(
                    Reason::InvalidRotation,
                    format!("{field}.lambdaArn"),
                    "rotator: lambda needs lambdaArn",
                ));
            }
        }
    }
    // The initial password uses the policy too, with or without rotation.
    let policy = rotation
        .as_ref()
        .map(|r| r.password.clone())
        .unwrap_or_default();
    check_password_policy(&policy, &format!("{field}.password"))?;
    Ok(Plan {
        user: Some(user),
        rotation,
        schedule,
    })
}

fn user_plan(cred: &RdsCredential, engine: EngineKind) -> Result<UserPlan, Refusal> {
    let Some(username) = cred.spec.username.clone() else {
        return Err(Refusal::new(
            Reason::InvalidUser,
            "spec.username",
            "required unless mode is sync-only",
        ));
    };
    let bare = UserPlan {
        login_users: vec![username.clone(), UserPlan::clone_username(&username)],
        username,
        grants: Vec::new(),
        roles: Vec::new(),
    };
    bare.validate(engine)
        .map_err(|e| Refusal::new(Reason::InvalidUser, "spec.username", e.to_string()))?;
    let roles = cred.spec.roles.clone().unwrap_or_default();
    UserPlan {
        roles: roles.clone(),
        ..bare.clone()
    }
    .validate(engine)
    .map_err(|e| Refusal::new(Reason::InvalidPrivileges, "spec.roles", e.to_string()))?;
    let grants = cred.spec.privileges.clone().unwrap_or_default();
    for (i, grant) in grants.iter().enumerate() {
        UserPlan {
            grants: vec![grant.clone()],
            ..bare.clone()
        }
        .validate(engine)
        .map_err(|e| {
            Refusal::new(
                Reason::InvalidPrivileges,
                format!("spec.privileges[{i}]"),
                e.to_string(),
            )
        })?;
    }
    Ok(UserPlan {
        grants,
        roles,
        ..bare
    })
}

fn check_password_policy(policy: &PasswordSpec, field: &str) -> Result<(), Refusal> {
    if !(16..=128).contains(&policy.length) {
        return Err(Refusal::new(
            Reason::InvalidPasswordPolicy,
            format!("{field}.length"),
            format!("{} is outside 16..128", policy.length),
        ));
    }
    let usable = password_alphabet(policy).len();
    if usable < 10 {
        return Err(Refusal::new(
            Reason::InvalidPasswordPolicy,
            format!("{field}.excludeCharacters"),
            format!(
                "the policy leaves {usable} usable character(s); at least 10 are needed for a strong password"
            ),
        ));
    }
    Ok(())
}

/// The target Secret as a real API server will judge it: its name, data keys (the default
/// keys plus one per template), label and annotation keys and values; and every template's
/// syntax, keys and filters. Keys rdscred itself writes cannot be set.
fn check_target(cred: &RdsCredential) -> Result<(), Refusal> {
    let target = &cred.spec.target;
    if let Some(name) = &target.name
        && let Some(m) = k8s::dns1123_subdomain(name)
    {
        return Err(Refusal::new(Reason::InvalidTarget, "spec.target.name", m));
    }
    for (key, template) in &target.templates {
        let field = format!("spec.target.templates[{key}]");
        if let Some(m) = k8s::config_key(key) {
            return Err(Refusal::new(
                Reason::InvalidTemplate,
                field,
                format!("{key:?} is not a valid Secret data key: {m}"),
            ));
        }
        crate::template::validate(template)
            .map_err(|e| Refusal::new(Reason::InvalidTemplate, field, e.to_string()))?;
    }
    check_map(
        &target.labels,
        "spec.target.labels",
        &[MANAGED_BY_LABEL, CREDENTIAL_LABEL],
        true,
    )?;
    check_map(
        &target.annotations,
        "spec.target.annotations",
        &[VERSION_ANNOTATION],
        false,
    )?;
    let size: usize = target
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    // Leave room for the version annotation and whatever else is on the Secret.
    if size > k8s::MAX_ANNOTATIONS_BYTES - 1024 {
        return Err(Refusal::new(
            Reason::InvalidTarget,
            "spec.target.annotations",
            format!(
                "{size} bytes in total; a Secret's annotations may hold at most {} bytes",
                k8s::MAX_ANNOTATIONS_BYTES
            ),
        ));
    }
    Ok(())
}

fn check_map(
    map: &BTreeMap<String, String>,
    field: &str,
    reserved: &[&str],
    values_are_labels: bool,
) -> Result<(), Refusal> {
    for (k, v) in map {
        let at = format!("{field}[{k}]");
        if reserved.contains(&k.as_str()) {
            return Err(Refusal::new(
                Reason::InvalidTarget,
                at,
                format!("{k} is written by rdscred itself and cannot be set"),
            ));
        }
        let key = if values_are_labels {
            k.clone()
        } else {
            // The API server checks annotation keys lower-cased.
            k.to_lowercase()
        };
        if let Some(m) = k8s::qualified_name(&key) {
            return Err(Refusal::new(
                Reason::InvalidTarget,
                at,
                format!("{k:?} is not a valid key: {m}"),
            ));
        }
        if values_are_labels && let Some(m) = k8s::label_value(v) {
            return Err(Refusal::new(
                Reason::InvalidTarget,
                at,
                format!("value {v:?} is not a valid label value: {m}"),
            ));
        }
    }
    Ok(())
}

/// The whole planning phase of one reconcile: pure decisions, then the reads that complete
/// them. Nothing is written; an `Err` is the reconcile's refusal.
pub(super) async fn prepare(
    cred: &RdsCredential,
    db_obj: &RdsDatabase,
    db: &ResolvedDatabase,
    ctx: &Context,
    status: &RdsCredentialStatus,
) -> Result<Plan, Error> {
    super::credential::check_secret_name(cred, db_obj, &db.admin_secret_id)?;
    super::credential::check_claims(cred, ctx)?;
    let plan = decide(cred, db_obj, db.engine)?;
    check_target_secret_owner(cred, ctx).await?;
    // Only what names something in the database needs reading it (a connection is not free:
    // a plan without grants or roles costs no login).
    let to_check = plan
        .user
        .as_ref()
        .filter(|u| !(u.grants.is_empty() && u.roles.is_empty()))
        .filter(|_| !accepted(cred, status));
    if let Some(user) = to_check {
        let admin = crate::reconcile::database::admin_login(ctx, db).await?;
        let mut conn = ctx.admin_pool.get(&db.target(None), &admin).await?;
        let checked = conn.check_plan(user).await;
        conn.done(checked.is_ok()).await;
        checked.map_err(|e| match e {
            DbError::InvalidGrant { detail } => Error::from(Refusal::new(
                Reason::InvalidPrivileges,
                privileges_field(user, &detail),
                detail,
            )),
            other => Error::from(other),
        })?;
    }
    Ok(plan)
}

/// Whether this generation of the spec was already accepted (Ready for it): the database
/// reads are then skipped, as the sync that follows re-proves the same things. Any refusal
/// leaves Ready false, so a refused spec is checked again on every reconcile.
fn accepted(cred: &RdsCredential, status: &RdsCredentialStatus) -> bool {
    super::conditions::get(&status.conditions, super::conditions::READY).is_some_and(|c| {
        c.status == "True" && Some(c.observed_generation.unwrap_or(-1)) == cred.metadata.generation
    })
}

/// The spec field a database answer is about: the role or the grant its text names.
fn privileges_field(user: &UserPlan, detail: &str) -> String {
    let names = |s: &str| {
        detail
            .split(|c: char| c.is_whitespace() || c == '.')
            .any(|w| w == s)
    };
    if let Some(i) = user.roles.iter().position(|r| names(r)) {
        return format!("spec.roles[{i}]");
    }
    // Most specific first: a schema of a database, a database-level grant, any grant there.
    let matchers: [&dyn Fn(&crate::crd::PrivilegeGrant) -> bool; 3] = [
        &|g| {
            g.schema
                .as_deref()
                .is_some_and(|s| names(s) && names(&g.database))
        },
        &|g| g.schema.is_none() && names(&g.database),
        &|g| names(&g.database),
    ];
    for matches in matchers {
        if let Some(i) = user.grants.iter().position(matches) {
            return format!("spec.privileges[{i}]");
        }
    }
    "spec.privileges".into()
}

/// A Secret of the target's name that this credential does not control is never written:
/// refused here, before the AWS secret and the database user exist.
async fn check_target_secret_owner(cred: &RdsCredential, ctx: &Context) -> Result<(), Error> {
    let name = crate::propagation::sync::target_name(cred);
    let ns = cred.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(existing) = api.get_opt(&name).await? else {
        return Ok(());
    };
    let uid = cred.uid();
    let controlled = existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
    if controlled {
        Ok(())
    } else {
        Err(Error::refused(
            Reason::TargetSecretNotOwned,
            format!(
                "spec.target.name: Secret {ns}/{name} exists and is not controlled by this RdsCredential; choose another target.name or delete it"
            ),
        ))
    }
}

/// Kubernetes' own syntax rules (apimachinery `util/validation`), for what rdscred writes into
/// the target Secret. The texts follow apimachinery's, shortened.
pub mod k8s {
    use std::sync::LazyLock;

    use regex::Regex;

    pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

    static SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .expect("static regex")
    });
    static QUALIFIED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("static regex")
    });
    static LABEL_VALUE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").expect("static regex")
    });
    static CONFIG_KEY: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[-._a-zA-Z0-9]+$").expect("static regex"));

    /// `IsDNS1123Subdomain`: object names.
    pub fn dns1123_subdomain(s: &str) -> Option<String> {
        if s.len() > 253 {
            return Some("must be no more than 253 characters".into());
        }
        (!SUBDOMAIN.is_match(s)).then(|| {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into()
        })
    }

    /// `IsQualifiedName`: label and annotation keys, `[prefix/]name`.
    pub fn qualified_name(key: &str) -> Option<String> {
        let name = match key.split('/').collect::<Vec<_>>().as_slice() {
            [name] => *name,
            [prefix, name] => {
                if prefix.is_empty() {
                    return Some("prefix part must be non-empty".into());
                }
                if let Some(m) = dns1123_subdomain(prefix) {
                    return Some(format!("prefix part {m}"));
                }
                name
            }
            _ => {
                return Some(
                    "a qualified name is an optional DNS subdomain prefix and '/' followed by a name".into(),
                );
            }
        };
        if name.is_empty() {
            return Some("name part must be non-empty".into());
        }
        if name.len() > 63 {
            return Some("name part must be no more than 63 characters".into());
        }
        (!QUALIFIED.is_match(name)).then(|| {
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into()
        })
    }

    /// `IsValidLabelValue`.
    pub fn label_value(v: &str) -> Option<String> {
        if v.len() > 63 {
            return Some("must be no more than 63 characters".into());
        }
        (!LABEL_VALUE.is_match(v)).then(|| {
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into()
        })
    }

    /// `IsConfigMapKey`: Secret data keys.
    pub fn config_key(key: &str) -> Option<String> {
        if key.len() > 253 {
            return Some("must be no more than 253 characters".into());
        }
        if !CONFIG_KEY.is_match(key) {
            return Some(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
                    .into(),
            );
        }
        match key {
            "." => Some("must not be '.'".into()),
            ".." => Some("must not be '..'".into()),
            k if k.starts_with("..") => Some("must not start with '..'".into()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
