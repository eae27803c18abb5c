//! Reconcile of `RdsDatabase`: resolve the endpoint and engine (RDS API or the plain endpoint),
//! resolve the admin login (a named secret or the RDS-managed MasterUserSecret), prove it logs
//! in, and report it all in status. Credentials then work from that status, so they cost no
//! RDS calls.

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{info, instrument, warn};

use super::Error;
use super::conditions::{self, ADMIN_READY, ENDPOINT_READY, READY};
use crate::aws::{AWSCURRENT, AwsScope, VersionSelector};
use crate::context::Context;
use crate::crd::{Endpoint, EngineKind, RdsDatabase, RdsDatabaseStatus};
use crate::engine::{self, ConnectTarget, Login, TlsSettings};
use crate::reconcile::Reason;
use crate::secret::RdsSecretValue;

/// What a database resolved to: everything a credential needs to reach it.
#[derive(Clone, Debug)]
pub struct ResolvedDatabase {
    pub name: String,
    pub engine: EngineKind,
    pub endpoint: Endpoint,
    pub admin_secret_id: String,
    pub scope: AwsScope,
    pub tls: TlsSettings,
    pub dbname: Option<String>,
    pub db_instance_identifier: Option<String>,
    pub db_cluster_identifier: Option<String>,
}

impl ResolvedDatabase {
    /// Connection target for `database` (default: the database's own `databaseName`).
    pub fn target(&self, database: Option<&str>) -> ConnectTarget {
        ConnectTarget {
            engine: self.engine,
            host: self.endpoint.host.clone(),
            port: self.endpoint.port,
            database: database.map(str::to_owned).or_else(|| self.dbname.clone()),
            tls: self.tls.clone(),
        }
    }
}

#[instrument(skip_all, fields(rdsdatabase = %db.name_any()))]
pub async fn reconcile(db: Arc<RdsDatabase>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&db, &ctx).await;
    ctx.metrics.reconcile_finished(
        "RdsDatabase",
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    result
}

async fn reconcile_inner(db: &RdsDatabase, ctx: &Context) -> Result<Action, Error> {
    let generation = db.metadata.generation;
    let old = db.status.clone().unwrap_or_default();
    let mut status = RdsDatabaseStatus {
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let outcome = resolve_and_prove(db, ctx, &mut status).await;
    match &outcome {
        Ok(()) => {
            conditions::set_summary(
                &mut status.conditions,
                conditions::Outcome::Ready,
                Reason::AdminLoginWorks,
                "endpoint resolved and admin login verified",
                generation,
            );
            if !conditions::is_true(&old.conditions, READY) {
                ctx.event(
                    db,
                    EventType::Normal,
                    Reason::Ready,
                    "Verify",
                    "endpoint resolved and admin login verified".into(),
                )
                .await;
            }
        }
        Err(e) => {
            conditions::set_summary(
                &mut status.conditions,
                conditions::Outcome::NotReady {
                    needs_person: e.needs_person(),
                },
                e.reason(),
                e.to_string(),
                generation,
            );
            let was = conditions::get(&old.conditions, READY)
                .map(|c| (c.reason.clone(), c.message.clone()));
            if was != Some((e.reason().to_string(), e.to_string())) {
                ctx.event(db, EventType::Warning, e.reason(), "Verify", e.to_string())
                    .await;
            }
        }
    }
    status.observed_generation = generation;
    if status != old {
        let api: Api<RdsDatabase> = Api::all(ctx.client.clone());
        api.patch_status(
            &db.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    outcome?;
    ctx.reset_failures(&crate::context::object_key(db));
    Ok(Action::requeue(crate::limit::jitter(
        ctx.settings.database_recheck_interval,
        0.1,
    )))
}

/// Resolves endpoint, engine and admin secret into `status`, then proves the admin login.
async fn resolve_and_prove(
    db: &RdsDatabase,
    ctx: &Context,
    status: &mut RdsDatabaseStatus,
) -> Result<(), Error> {
    let generation = db.metadata.generation;
    let resolved = match resolve_from_spec(db, ctx).await {
        Ok(r) => r,
        Err(e) => {
            conditions::set(
                &mut status.conditions,
                ENDPOINT_READY,
                false,
                e.reason(),
                e.to_string(),
                generation,
            );
            return Err(e);
        }
    };
    status.engine = Some(resolved.engine);
    status.endpoint = Some(resolved.endpoint.clone());
    status.admin_secret_arn = Some(resolved.admin_secret_id.clone());
    conditions::set(
        &mut status.conditions,
        ENDPOINT_READY,
        true,
        Reason::Resolved,
        format!(
            "{} at {}:{}",
            resolved.engine.as_str(),
            resolved.endpoint.host,
            resolved.endpoint.port
        ),
        generation,
    );
    let proven = prove_admin_login(&resolved, ctx).await;
    match &proven {
        Ok(()) => conditions::set(
            &mut status.conditions,
            ADMIN_READY,
            true,
            Reason::LoginSucceeded,
            "admin login verified",
            generation,
        ),
        Err(e) => conditions::set(
            &mut status.conditions,
            ADMIN_READY,
            false,
            e.reason(),
            e.to_string(),
            generation,
        ),
    }
    proven
}

/// Resolves the database from its spec, calling RDS for instance/cluster identifiers.
pub async fn resolve_from_spec(db: &RdsDatabase, ctx: &Context) -> Result<ResolvedDatabase, Error> {
    let spec = &db.spec;
    let scope = ctx
        .aws
        .scoped(spec.region.as_deref(), spec.role_arn.as_deref())
        .await?;
    let (engine, endpoint, master_secret, rds_dbname) =
        if let Some(id) = &spec.db_instance_identifier {
            let info = scope.rds.describe_instance(id).await?.ok_or_else(|| {
                Error::not_ready(
                    Reason::DBInstanceNotFound,
                    format!("DB instance {id:?} not found in {}", scope.region),
                )
            })?;
            endpoint_from_rds(&info, spec.engine)?
        } else if let Some(id) = &spec.db_cluster_identifier {
            let info = scope.rds.describe_cluster(id).await?.ok_or_else(|| {
                Error::not_ready(
                    Reason::DBClusterNotFound,
                    format!("DB cluster {id:?} not found in {}", scope.region),
                )
            })?;
            endpoint_from_rds(&info, spec.engine)?
        } else {
            // The CRD's CEL rules guarantee endpoint + engine here; check again for safety.
            let endpoint = spec
                .endpoint
                .clone()
                .ok_or_else(|| Error::refused(Reason::InvalidSpec, "no database given"))?;
            let engine = spec.engine.ok_or_else(|| {
                Error::refused(Reason::InvalidSpec, "engine is required with endpoint")
            })?;
            (engine, endpoint, None, None)
        };
    let admin_secret_id = match (&spec.admin_login.secret_id, spec.admin_login.rds_managed) {
        (Some(id), _) => id.clone(),
        (None, Some(true)) => master_secret.ok_or_else(|| {
            Error::refused(
                Reason::NoMasterUserSecret,
                "adminLogin.rdsManaged is set but the database has no MasterUserSecret: enable \"Manage master credentials in Secrets Manager\" (ManageMasterUserPassword) on it",
            )
        })?,
        _ => return Err(Error::refused(Reason::InvalidSpec, "adminLogin needs secretId or rdsManaged: true")),
    };
    Ok(ResolvedDatabase {
        name: db.name_any(),
        engine,
        endpoint,
        admin_secret_id,
        scope,
        tls: TlsSettings {
            mode: spec.tls.mode,
            ca_bundle_pem: spec.tls.ca_bundle.clone(),
        },
        dbname: spec.database_name.clone().or(rds_dbname),
        db_instance_identifier: spec.db_instance_identifier.clone(),
        db_cluster_identifier: spec.db_cluster_identifier.clone(),
    })
}

type RdsEndpoint = (EngineKind, Endpoint, Option<String>, Option<String>);

fn endpoint_from_rds(
    info: &crate::aws::DbEndpointInfo,
    declared: Option<EngineKind>,
) -> Result<RdsEndpoint, Error> {
    let engine = EngineKind::from_rds(&info.engine).ok_or_else(|| {
        Error::refused(
            Reason::UnsupportedEngine,
            format!(
                "engine {:?} is not supported (PostgreSQL, MySQL, MariaDB and Aurora only)",
                info.engine
            ),
        )
    })?;
    if let Some(d) = declared
        && d != engine
    {
        return Err(Error::refused(
            Reason::EngineMismatch,
            format!(
                "spec.engine is {} but RDS reports {}",
                d.as_str(),
                engine.as_str()
            ),
        ));
    }
    if info.host.is_empty() {
        return Err(Error::not_ready(
            Reason::EndpointNotAvailable,
            format!("RDS has no endpoint yet (status {:?})", info.status),
        ));
    }
    Ok((
        engine,
        Endpoint {
            host: info.host.clone(),
            port: info.port,
        },
        info.master_user_secret_arn.clone(),
        info.database_name.clone(),
    ))
}

/// A database's resolution, read from its status (no RDS call). `need_admin`: the admin
/// login must have been proven (everything but sync-only, which never logs in).
pub async fn resolved_from_status(
    db: &RdsDatabase,
    ctx: &Context,
    need_admin: bool,
) -> Result<ResolvedDatabase, Error> {
    let name = db.name_any();
    let status = db.status.as_ref();
    let ready = status.is_some_and(|s| {
        conditions::is_true(&s.conditions, READY) && s.observed_generation == db.metadata.generation
    });
    let (Some(engine), Some(endpoint), Some(admin)) = (
        status.and_then(|s| s.engine),
        status.and_then(|s| s.endpoint.clone()),
        status.and_then(|s| s.admin_secret_arn.clone()),
    ) else {
        return Err(Error::not_ready(
            Reason::DatabaseNotReady,
            format!("RdsDatabase {name} has not been resolved yet"),
        ));
    };
    if need_admin && !ready {
        let why = status
            .and_then(|s| conditions::get(&s.conditions, READY))
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "not reconciled yet".into());
        return Err(Error::not_ready(
            Reason::DatabaseNotReady,
            format!("RdsDatabase {name} is not Ready ({why})"),
        ));
    }
    let spec = &db.spec;
    let scope = ctx
        .aws
        .scoped(spec.region.as_deref(), spec.role_arn.as_deref())
        .await?;
    Ok(ResolvedDatabase {
        name,
        engine,
        endpoint,
        admin_secret_id: admin,
        scope,
        tls: TlsSettings {
            mode: spec.tls.mode,
            ca_bundle_pem: spec.tls.ca_bundle.clone(),
        },
        dbname: spec.database_name.clone(),
        db_instance_identifier: spec.db_instance_identifier.clone(),
        db_cluster_identifier: spec.db_cluster_identifier.clone(),
    })
}

async fn prove_admin_login(resolved: &ResolvedDatabase, ctx: &Context) -> Result<(), Error> {
    // A fresh read: this is where a changed admin password is noticed.
    ctx.admin_logins.forget(&resolved.admin_secret_id);
    let login = admin_login(ctx, resolved).await?;
    engine::check_login(&resolved.target(None), &login)
        .await
        .map_err(|e| {
            warn!(error = %e, "admin login failed");
            Error::Db(e)
        })?;
    info!(engine = resolved.engine.as_str(), "admin login verified");
    Ok(())
}

/// The admin login in AWSCURRENT of the database's admin secret.
pub async fn read_admin_login(resolved: &ResolvedDatabase) -> Result<Login, Error> {
    let id = &resolved.admin_secret_id;
    let version = resolved
        .scope
        .secrets
        .get_value(id, VersionSelector::Stage(AWSCURRENT))
        .await?
        .ok_or_else(|| {
            Error::not_ready(
                Reason::AdminSecretNotFound,
                format!("admin secret {id} has no AWSCURRENT version"),
            )
        })?;
    let value =
        RdsSecretValue::parse(version.value.expose()).map_err(|source| Error::SecretShape {
            id: id.clone(),
            source,
        })?;
    Ok(Login {
        username: value.username,
        password: value.password,
    })
}

/// The database's admin login, from the context's single-flight cache (one GetSecretValue of
/// the admin secret per expiry, whatever the number of reconciles asking).
pub async fn admin_login(ctx: &Context, resolved: &ResolvedDatabase) -> Result<Login, Error> {
    ctx.admin_logins
        .get_or_read(&resolved.admin_secret_id, || read_admin_login(resolved))
        .await
}
