//! The HTTP API: one fallback handler that parses Kubernetes API paths itself (the URL
//! space - `/api/v1/namespaces/{ns}/{plural}/{name}/{sub}` and the `/apis/{g}/{v}` forms -
//! is easier to route by hand than with path patterns) and maps verbs to store operations.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Inner;
use crate::auth::{Denial, Identity, RequestAttributes, UserInfo};
use crate::discovery;
use crate::error::ApiError;
use crate::rbac;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOpts, PatchType, Sub, WriteOpts};
use crate::watch::{self, WatchParams, at_version};

#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
    /// Set to true when a served instance shuts down, so open watches end.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

pub fn router(state: AppState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).expect("json");
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn error_response(e: ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

async fn handle(State(app): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return error_response(ApiError::bad_request(format!("reading body: {e}"))),
    };
    let query = Query(
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
    );
    tracing::debug!(method = %parts.method, uri = %parts.uri, "kube-emulator request");
    let identity = match app
        .inner
        .auth
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .authenticate(&parts.headers)
    {
        Ok(i) => i,
        Err(e) => return error_response(e),
    };
    match dispatch(
        &app,
        &identity,
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        &query,
        &body,
    ) {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

/// Where a resource request points.
struct Target {
    rt: Arc<ResourceType>,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn dispatch(
    app: &AppState,
    identity: &Identity,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    q: &Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let st = || app.inner.state.lock().unwrap_or_else(|e| e.into_inner());
    let get_only = |v: Value| {
        if method == Method::GET {
            Ok(json_response(200, &v))
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    match segs.as_slice() {
        [] => get_only(
            json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]}),
        ),
        ["version"] => get_only(discovery::version()),
        ["healthz" | "livez" | "readyz", ..] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => get_only(discovery::core_versions()),
        ["apis"] => get_only(discovery::group_list(&st().registry)),
        ["api", "v1"] => get_only(
            discovery::resource_list(&st().registry, "", "v1").ok_or_else(ApiError::no_route)?,
        ),
        ["apis", g] => {
            get_only(discovery::group(&st().registry, g).ok_or_else(ApiError::no_route)?)
        }
        ["apis", g, v] => {
            get_only(discovery::resource_list(&st().registry, g, v).ok_or_else(ApiError::no_route)?)
        }
        ["openapi", "v3"] => get_only(discovery::openapi_v3_root(&st().registry)),
        ["openapi", "v3", "api", v] => get_only(
            discovery::openapi_v3_group_version(&st().registry, "", v)
                .ok_or_else(ApiError::no_route)?,
        ),
        ["openapi", "v3", "apis", g, v] => get_only(
            discovery::openapi_v3_group_version(&st().registry, g, v)
                .ok_or_else(ApiError::no_route)?,
        ),
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] if method == Method::POST => {
            let user = match identity {
                Identity::Admin => None,
                Identity::User(u) => Some(u),
            };
            let protobuf = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.contains("protobuf"));
            let review = if protobuf {
                rbac::self_subject_access_review_from_protobuf(body)?
            } else {
                parse_body(headers, body)?
            };
            let review = rbac::self_subject_access_review(&st(), user, review)?;
            Ok(json_response(201, &review))
        }
        ["api", "v1", rest @ ..] => {
            resource(app, identity, method, headers, q, body, "", "v1", rest)
        }
        ["apis", g, v, rest @ ..] => resource(app, identity, method, headers, q, body, g, v, rest),
        _ => Err(ApiError::no_route()),
    }
}

fn parse_target(
    app: &AppState,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let namespaced_path = rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(group.is_empty() && rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if namespaced_path {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::no_route()),
    };
    let rt = app
        .inner
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .registry
        .lookup(group, version, plural)
        .ok_or_else(ApiError::no_route)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(ApiError::no_route());
    }
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::no_route());
    }
    Ok(Target {
        rt,
        version: version.to_string(),
        namespace,
        name,
        sub,
    })
}

/// The authorizer's view of a resource request (`RequestInfoFactory` upstream): the verb from
/// the method, the name from the path or a `metadata.name` field selector of a list/watch.
fn request_attributes(method: &Method, q: &Query, t: &Target) -> RequestAttributes {
    let verb = match (method.as_str(), t.name.is_some()) {
        ("GET" | "HEAD", _) if q.flag("watch") => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => other,
    };
    let name = t.name.clone().unwrap_or_else(|| {
        let by_name = q.get("fieldSelector").and_then(|fs| {
            fs.split(',')
                .find_map(|term| term.strip_prefix("metadata.name="))
                .map(str::to_string)
        });
        match verb {
            "list" | "watch" => by_name.unwrap_or_default(),
            _ => String::new(),
        }
    });
    RequestAttributes {
        verb: verb.to_lowercase(),
        api_group: t.rt.group.clone(),
        resource: t.rt.plural.clone(),
        subresource: t.sub.clone().unwrap_or_default(),
        namespace: t.namespace.clone().unwrap_or_default(),
        name,
    }
}

/// RBAC for a token identity: records the decision, 403 when denied.
fn authorize(app: &AppState, user: &UserInfo, a: &RequestAttributes) -> Result<(), ApiError> {
    let decision = {
        let st = app.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        rbac::authorize(&st, user, a)
    };
    let mut auth = app.inner.auth.lock().unwrap_or_else(|e| e.into_inner());
    if decision.allowed {
        auth.record_allowed(&user.name, a.clone());
        return Ok(());
    }
    let err = rbac::forbidden(&user.name, a, &decision.reason);
    tracing::debug!(user = %user.name, message = %err.message, "kube-emulator: forbidden");
    auth.record_denied(
        &user.name,
        Denial {
            attributes: a.clone(),
            message: err.message.clone(),
        },
    );
    Err(err)
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.contains("protobuf") || ct.contains("cbor") {
        // Typed clients (kubectl create/scale/...) send protobuf; only JSON/YAML are decoded.
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (kube-emulator does not decode {ct})"
            ),
        ));
    }
    if ct.contains("yaml") {
        serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}

fn write_opts(headers: &HeaderMap, q: &Query, apply: bool) -> Result<WriteOpts, ApiError> {
    let manager = match q.get("fieldManager") {
        Some(m) if !m.is_empty() => m.to_string(),
        _ if apply => {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        // The real server derives the manager from the user agent's program name.
        _ => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    Ok(WriteOpts {
        manager,
        dry_run: q.get("dryRun") == Some("All"),
        strict: q.get("fieldValidation") == Some("Strict"),
        force: q.flag("force"),
    })
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

#[allow(clippy::too_many_arguments)]
fn resource(
    app: &AppState,
    identity: &Identity,
    method: &Method,
    headers: &HeaderMap,
    q: &Query,
    body: &[u8],
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response, ApiError> {
    let t = parse_target(app, group, version, rest)?;
    if let Identity::User(user) = identity {
        authorize(app, user, &request_attributes(method, q, &t))?;
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let rt = &t.rt;
    let out = |v: Value| at_version(v, rt, &t.version);
    let sub = match t.sub.as_deref() {
        None => Sub::Main,
        Some("status") if rt.has_status(&t.version) => Sub::Status,
        Some(_) => return Err(ApiError::no_route()),
    };
    let inner = &app.inner;
    let lock = || inner.state.lock().unwrap_or_else(|e| e.into_inner());
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))?;
    let Some(name) = t.name.clone() else {
        // Collection requests.
        return match *method {
            Method::GET if q.flag("watch") => {
                let params = WatchParams {
                    rt: rt.clone(),
                    version: t.version.clone(),
                    namespace: t.namespace.clone(),
                    labels,
                    fields,
                    resource_version: q.get("resourceVersion").map(String::from),
                    bookmarks: q.flag("allowWatchBookmarks"),
                    timeout: q
                        .get("timeoutSeconds")
                        .and_then(|s| s.parse::<u64>().ok())
                        .filter(|s| *s > 0)
                        .map(Duration::from_secs),
                    send_initial_events: q.flag("sendInitialEvents"),
                    table: wants_table(headers).then(|| q.get("includeObject") == Some("Object")),
                };
                let stream = watch::start(inner, params, app.shutdown.clone())?;
                Ok(Response::builder()
                    .status(200)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::TRANSFER_ENCODING, "chunked")
                    .body(Body::from_stream(stream))
                    .expect("static response"))
            }
            Method::GET => {
                let limit = q.get("limit").and_then(|s| s.parse::<usize>().ok());
                let matches = |o: &Value| labels.matches(o) && fields.matches(o);
                let res = lock().list(
                    rt,
                    t.namespace.as_deref(),
                    &matches,
                    limit,
                    q.get("continue").filter(|c| !c.is_empty()),
                )?;
                let items: Vec<Value> = res.items.into_iter().map(out).collect();
                if wants_table(headers) {
                    return Ok(json_response(
                        200,
                        &discovery::table(
                            rt,
                            &t.version,
                            &items,
                            &res.resource_version.to_string(),
                            q.get("includeObject") == Some("Object"),
                        ),
                    ));
                }
                let mut metadata = json!({"resourceVersion": res.resource_version.to_string()});
                if let Some(c) = res.continue_token {
                    metadata["continue"] = json!(c);
                }
                if let Some(r) = res.remaining {
                    metadata["remainingItemCount"] = json!(r);
                }
                Ok(json_response(
                    200,
                    &json!({"apiVersion": rt.api_version(&t.version), "kind": rt.list_kind, "metadata": metadata, "items": items}),
                ))
            }
            Method::POST => {
                if rt.namespaced && t.namespace.is_none() {
                    return Err(ApiError::method_not_allowed());
                }
                let obj = parse_body(headers, body)?;
                let created =
                    lock().create(rt, &t.version, &ns, obj, &write_opts(headers, q, false)?)?;
                Ok(json_response(201, &out(created)))
            }
            Method::DELETE => {
                let matches = |o: &Value| labels.matches(o) && fields.matches(o);
                let deleted = lock().delete_collection(rt, t.namespace.as_deref(), &matches);
                let items: Vec<Value> = deleted.into_iter().map(out).collect();
                Ok(json_response(
                    200,
                    &json!({"apiVersion": rt.api_version(&t.version), "kind": rt.list_kind, "metadata": {}, "items": items}),
                ))
            }
            _ => Err(ApiError::method_not_allowed()),
        };
    };
    match *method {
        Method::GET => {
            let obj = out(lock().get(rt, &ns, &name)?);
            if wants_table(headers) {
                let rv = crate::store::rv_of(&obj).to_string();
                return Ok(json_response(
                    200,
                    &discovery::table(
                        rt,
                        &t.version,
                        &[obj],
                        &rv,
                        q.get("includeObject") == Some("Object"),
                    ),
                ));
            }
            Ok(json_response(200, &obj))
        }
        Method::PUT => {
            let obj = parse_body(headers, body)?;
            let updated = lock().update(
                rt,
                &t.version,
                &ns,
                &name,
                obj,
                sub,
                &write_opts(headers, q, false)?,
                true,
            )?;
            Ok(json_response(200, &out(updated)))
        }
        Method::PATCH => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let ptype = match ct.split(';').next().unwrap_or("").trim() {
                "application/merge-patch+json" => PatchType::Merge,
                "application/json-patch+json" => PatchType::Json,
                "application/strategic-merge-patch+json" => PatchType::Strategic,
                "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            let patch: Value = if ptype == PatchType::Apply {
                serde_yaml::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
            };
            let opts = write_opts(headers, q, ptype == PatchType::Apply)?;
            let (obj, created) =
                lock().patch(rt, &t.version, &ns, &name, ptype, &patch, sub, &opts)?;
            Ok(json_response(if created { 201 } else { 200 }, &out(obj)))
        }
        Method::DELETE if sub == Sub::Main => {
            let opts_body: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(body).unwrap_or(json!({}))
            };
            let policy = q.get("propagationPolicy").map(String::from).or_else(|| {
                opts_body
                    .get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(String::from)
            });
            let opts = DeleteOpts {
                uid: opts_body
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                    .map(String::from),
                resource_version: opts_body
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from),
                orphan: policy.as_deref() == Some("Orphan")
                    || opts_body.get("orphanDependents") == Some(&json!(true)),
                dry_run: q.get("dryRun") == Some("All")
                    || opts_body
                        .get("dryRun")
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().any(|x| x == "All")),
            };
            match lock().delete(rt, &ns, &name, &opts)? {
                Ok(still_there) => Ok(json_response(200, &out(still_there))),
                // Gone at once (no finalizers): the real server answers with a Status naming
                // it, so clients can tell "deleted" from "waiting for finalizers".
                Err(last) => Ok(json_response(
                    200,
                    &json!({
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": last.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                            "group": rt.group,
                            "kind": rt.plural,
                            "uid": last.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                        },
                    }),
                )),
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
