//! `/auth/{org}/…`: browser sign-in (CONTRACT.md "Sign-in"), the user page and logout.
//! Failures answer a plain HTML page (problem+json when the client asks for JSON) with no
//! session; every one is audited by the sign-in service.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, BodyError};
use crate::domain::{OrgId, UserId};
use crate::identity::{
    AcsForm, Callback, LOGIN_COOKIE, SAML_COOKIE, SESSION_COOKIE, Session, SignInError,
};

/// The sign-in routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/{org}/login", get(login))
        .route("/auth/{org}/oidc/callback", get(callback))
        .route("/auth/{org}/saml/acs", post(acs))
        .route("/auth/{org}/saml/metadata", get(saml_metadata))
        .route("/auth/{org}/me", get(me))
        .route("/auth/{org}/logout", post(logout))
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// An `HttpOnly; SameSite=Lax` cookie, `Secure` when the broker is reached over https.
fn set_cookie(s: &AppState, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
    let secure = if s.sign_in.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    cookie_header(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
}

/// The SAML login's binding cookie: `SameSite=None; Secure`, so that the browser sends it
/// with the IdP's cross-site POST to the ACS.
fn saml_cookie(org: &str, value: &str, max_age: u64) -> HeaderValue {
    cookie_header(&format!(
        "{SAML_COOKIE}={value}; Path=/auth/{org}/saml/; Max-Age={max_age}; HttpOnly; SameSite=None; Secure"
    ))
}

fn cookie_header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The answer to a finished login: 303 to `return_to` with the new session, or the failure
/// page; either way the login's binding cookie (`clear`) is removed.
fn concluded(
    s: &AppState,
    headers: &HeaderMap,
    result: Result<crate::identity::Finished, SignInError>,
    clear: HeaderValue,
) -> Response {
    let mut resp = match result {
        Ok(f) => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&f.return_to) {
                h.insert(header::LOCATION, v);
            }
            h.append(
                header::SET_COOKIE,
                set_cookie(s, SESSION_COOKIE, &f.session, "/", f.ttl.as_secs()),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => failure(headers, e),
    };
    resp.headers_mut().append(header::SET_COOKIE, clear);
    resp
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The strings of a JSON array, escaped for HTML (nothing for anything else).
fn escaped_strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| escape(s.as_str().unwrap_or("")))
        .collect()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style>\
         </head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

/// A failed sign-in step: the error table's status and code, as an HTML page (problem+json
/// when the client asks for JSON).
pub(super) fn failure(headers: &HeaderMap, e: impl Into<ApiError>) -> Response {
    let e = e.into();
    if wants_json(headers) {
        return e.into_response();
    }
    let (status, code, detail) = e.public();
    let body = format!(
        "<p>{}</p><p>Code: <code>{}</code></p>",
        escape(&detail),
        code
    );
    let mut resp = (status, Html(page("Sign-in failed", &body))).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

async fn login(
    State(s): State<AppState>,
    Path(org): Path<String>,
    headers: HeaderMap,
    q: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let return_to = q.as_ref().ok().and_then(|q| q.return_to.as_deref());
    match s.sign_in.begin(&org, return_to).await {
        Ok(b) => {
            let mut resp = StatusCode::FOUND.into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&b.redirect) {
                h.insert(header::LOCATION, v);
            }
            let cookie = if b.saml {
                saml_cookie(&org, &b.binding, 600)
            } else {
                set_cookie(&s, LOGIN_COOKIE, &b.binding, &format!("/auth/{org}/"), 600)
            };
            h.insert(header::SET_COOKIE, cookie);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => failure(&headers, e),
    }
}

async fn callback(
    State(s): State<AppState>,
    Path(org): Path<String>,
    headers: HeaderMap,
    q: Result<Query<Callback>, QueryRejection>,
) -> Response {
    let cb = q.map(|Query(c)| c).unwrap_or_default();
    let binding = cookie(&headers, LOGIN_COOKIE);
    let old = cookie(&headers, SESSION_COOKIE);
    let clear_login = set_cookie(&s, LOGIN_COOKIE, "", &format!("/auth/{org}/"), 0);
    let result = s.sign_in.finish_oidc(&org, &cb, binding, old).await;
    concluded(&s, &headers, result, clear_login)
}

async fn acs(
    State(s): State<AppState>,
    Path(org): Path<String>,
    axum::Extension(limits): axum::Extension<super::HttpLimits>,
    headers: HeaderMap,
    form: Result<Form<AcsForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = limits.max_body_bytes;
            return failure(&headers, BodyError::TooLarge { limit });
        }
        Err(_) => {
            let err = SignInError::InvalidAssertion("unreadable form".into());
            return failure(&headers, err);
        }
    };
    let binding = cookie(&headers, SAML_COOKIE);
    let old = cookie(&headers, SESSION_COOKIE);
    let result = s.sign_in.finish_saml(&org, &form, binding, old).await;
    concluded(&s, &headers, result, saml_cookie(&org, "", 0))
}

async fn saml_metadata(
    State(s): State<AppState>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Response {
    match s.sign_in.saml_metadata(&org) {
        Ok(xml) => (
            [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
            xml,
        )
            .into_response(),
        Err(e) => failure(&headers, e),
    }
}

/// The session of the request for `org`, if any.
pub async fn session_of(
    s: &AppState,
    org: &str,
    headers: &HeaderMap,
) -> Result<Option<Session>, SignInError> {
    match cookie(headers, SESSION_COOKIE) {
        Some(c) => s.sign_in.session(org, c).await,
        None => Ok(None),
    }
}

async fn me(State(s): State<AppState>, Path(org): Path<String>, headers: HeaderMap) -> Response {
    let session = match session_of(&s, &org, &headers).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            if wants_json(&headers) || !s.sign_in.has_org(&org) {
                return ApiError::Unauthenticated("sign in first").into_response();
            }
            let mut resp = StatusCode::FOUND.into_response();
            let to = format!("/auth/{org}/login?return_to=/auth/{org}/me");
            if let Ok(v) = HeaderValue::from_str(&to) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
        Err(e) => return failure(&headers, e),
    };
    let view = match view(&s, &org, &session).await {
        Ok(v) => v,
        Err(e) => return failure(&headers, e),
    };
    let mut resp = if wants_json(&headers) {
        Json(view).into_response()
    } else {
        Html(render(&view)).into_response()
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// What the user page shows, as JSON.
async fn view(s: &AppState, org: &str, session: &Session) -> Result<Value, SignInError> {
    let org_id = OrgId::new(org);
    let user = UserId::new(session.user_id.clone());
    let unavailable =
        |e: crate::service::access::AccessError| SignInError::Unavailable(e.to_string());
    let Some((u, ent, connectors)) = s
        .access
        .entitlements(&org_id, &user)
        .await
        .map_err(unavailable)?
    else {
        return Err(SignInError::NotProvisioned(
            "the user no longer exists".into(),
        ));
    };
    let held = s
        .access
        .vault()
        .token_connectors(&org_id, &user)
        .await
        .map_err(|e| SignInError::Unavailable(e.to_string()))?;
    let consents = s
        .upstreams
        .consent_views(&org_id, &user, &connectors)
        .await
        .map_err(|e| SignInError::Unavailable(e.to_string()))?;
    let groups = s.sign_in.groups_for_entitlements(&org_id, &user).await?;
    let admin = s.sign_in.is_admin(org, session).await?;
    let list: Vec<Value> = ent
        .connectors
        .values()
        .map(|c| {
            let actions: serde_json::Map<String, Value> = c
                .actions
                .iter()
                .map(|(k, d)| (k.as_str().to_string(), json!(d.action)))
                .collect();
            let name = connectors
                .iter()
                .find(|x| x.id == c.connector)
                .map(|x| x.display_name.clone())
                .unwrap_or_else(|| c.connector.clone());
            let token = if held
                .iter()
                .any(|f| f == &c.connector || f.starts_with(&format!("{}#", c.connector)))
            {
                "issued"
            } else {
                "none"
            };
            let consent = consents.iter().find(|v| v.connector == c.connector);
            json!({"connector": c.connector, "display_name": name, "scopes": c.scopes,
                   "actions": actions, "tools": c.tools, "token": token,
                   "consent": consent.map(|v| v.status),
                   "connect_url": consent.and_then(|v| v.connect_url.clone())})
        })
        .collect();
    Ok(json!({
        "org": org,
        "user": {"id": u.id.as_str(), "user_name": u.user_name, "display_name": u.display_name,
                 "email": u.email, "active": u.active},
        "identity": {"issuer": session.issuer, "subject": session.subject},
        "groups": groups,
        "asserted_groups": session.groups,
        "groups_source": s.access.groups_source(&org_id),
        "groups_overage": session.groups_overage,
        "admin": admin,
        "connectors": list,
        "session_expires_at": crate::domain::clock::rfc3339(session.expires_ms),
    }))
}

fn render(v: &Value) -> String {
    let text = |v: &Value| escape(v.as_str().unwrap_or(""));
    let mut body = format!(
        "<p><strong>{}</strong> ({}) — {}</p><p>Signed in through <code>{}</code> as <code>{}</code>{}.</p>",
        text(&v["user"]["display_name"]).chars().next().map_or_else(
            || text(&v["user"]["user_name"]),
            |_| text(&v["user"]["display_name"])
        ),
        text(&v["user"]["user_name"]),
        if v["user"]["active"] == Value::Bool(true) {
            "active"
        } else {
            "inactive"
        },
        text(&v["identity"]["issuer"]),
        text(&v["identity"]["subject"]),
        if v["admin"] == Value::Bool(true) {
            "; org admin"
        } else {
            ""
        },
    );
    let groups = escaped_strings(&v["groups"]);
    body.push_str(&format!(
        "<h2>Groups</h2><p>{}</p>",
        if groups.is_empty() {
            "none".to_string()
        } else {
            groups.join(", ")
        }
    ));
    if v["groups_overage"] == Value::Bool(true) {
        body.push_str("<p><strong>Your identity provider left your groups out of the sign-in (too many groups).</strong> Groups come from SCIM only.</p>");
    }
    body.push_str("<h2>Connectors</h2>");
    let list = v["connectors"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        body.push_str("<p>None of your groups grants a connector.</p>");
    } else {
        body.push_str("<table><tr><th>Connector</th><th>Scopes</th><th>Read</th><th>Write</th><th>Delete</th><th>Token</th><th>Connection</th></tr>");
        for c in list {
            let scopes = escaped_strings(&c["scopes"]);
            let connection = match (c["consent"].as_str(), c["connect_url"].as_str()) {
                (Some("connected"), Some(url)) => {
                    format!("connected <a href=\"{}\">reconnect</a>", escape(url))
                }
                (Some("needs_consent"), Some(url)) => format!(
                    "needs consent <a href=\"{}\"><button>Connect</button></a>",
                    escape(url)
                ),
                (Some("needs_reconsent"), Some(url)) => format!(
                    "needs re-consent <a href=\"{}\"><button>Connect again</button></a>",
                    escape(url)
                ),
                _ => "automatic".to_string(),
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&c["display_name"]),
                scopes.join(" "),
                text(&c["actions"]["read"]),
                text(&c["actions"]["write"]),
                text(&c["actions"]["delete"]),
                text(&c["token"]),
                connection,
            ));
        }
        body.push_str("</table>");
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/auth/{}/logout\"><button>Sign out</button></form>",
        text(&v["org"])
    ));
    page("Your access", &body)
}

async fn logout(
    State(s): State<AppState>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(c) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = s.sign_in.logout(&org, c).await
    {
        return failure(&headers, e);
    }
    let mut resp = (
        StatusCode::OK,
        Html(page("Signed out", "<p>You are signed out.</p>")),
    )
        .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&s, SESSION_COOKIE, "", "/", 0),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
