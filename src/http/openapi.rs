//! `/admin/v1/openapi.json`: the OpenAPI 3.1 description of the admin and gateway APIs.
//! `ROUTES` lists every documented (method, path); a test checks it against the router.

use axum::Json;
use serde_json::{Value, json};

/// Every documented operation: (method, path, summary, success status, extra error statuses).
pub const ROUTES: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "post",
        "/internal/v1/token",
        "Vend a user's token for a connector",
        "200",
        &["409", "502"],
    ),
    (
        "post",
        "/internal/v1/authorize",
        "Decide a tool call",
        "200",
        &[],
    ),
    (
        "get",
        "/internal/v1/entitlements",
        "What a user may use (to filter tools/list)",
        "200",
        &[],
    ),
    (
        "get",
        "/internal/v1/events",
        "Server-sent revocation and entitlement events",
        "200",
        &[],
    ),
    (
        "get",
        "/admin/v1/orgs/{org}/connectors",
        "List connectors",
        "200",
        &[],
    ),
    (
        "post",
        "/admin/v1/orgs/{org}/connectors",
        "Create a connector",
        "201",
        &["409"],
    ),
    (
        "get",
        "/admin/v1/orgs/{org}/connectors/{id}",
        "Read a connector",
        "200",
        &[],
    ),
    (
        "put",
        "/admin/v1/orgs/{org}/connectors/{id}",
        "Replace a connector",
        "200",
        &[],
    ),
    (
        "delete",
        "/admin/v1/orgs/{org}/connectors/{id}",
        "Delete a connector and its grants",
        "204",
        &[],
    ),
    (
        "get",
        "/admin/v1/orgs/{org}/grants",
        "List grants",
        "200",
        &[],
    ),
    (
        "post",
        "/admin/v1/orgs/{org}/grants",
        "Grant a group a connector",
        "201",
        &[],
    ),
    (
        "delete",
        "/admin/v1/orgs/{org}/grants/{id}",
        "Delete a grant",
        "204",
        &[],
    ),
    (
        "post",
        "/admin/v1/orgs/{org}/gateways",
        "Create a gateway key (shown once)",
        "201",
        &[],
    ),
    (
        "get",
        "/admin/v1/orgs/{org}/gateways",
        "List gateway keys (no keys)",
        "200",
        &[],
    ),
    (
        "delete",
        "/admin/v1/orgs/{org}/gateways/{id}",
        "Revoke a gateway key on every replica",
        "204",
        &["409"],
    ),
    (
        "post",
        "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials",
        "Create a resource-server credential for a connector (secret shown once)",
        "201",
        &[],
    ),
    (
        "get",
        "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials",
        "List a connector's resource-server credentials (no secrets)",
        "200",
        &[],
    ),
    (
        "delete",
        "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials/{cid}",
        "Revoke a resource-server credential",
        "204",
        &[],
    ),
    (
        "get",
        "/admin/v1/orgs/{org}/users/{id}",
        "A user's entitlements with reasons and live tokens",
        "200",
        &[],
    ),
    (
        "post",
        "/admin/v1/orgs/{org}/users/{id}/revoke",
        "Kill switch: purge every token now (the user may vend again unless locked)",
        "200",
        &[],
    ),
    (
        "post",
        "/admin/v1/orgs/{org}/users/{id}/lock",
        "Lock: purge every token and refuse every vend (403 user_locked) until unlocked; body {\"reason\"}",
        "200",
        &[],
    ),
    (
        "delete",
        "/admin/v1/orgs/{org}/users/{id}/lock",
        "Lift a lock (404 when none holds)",
        "200",
        &[],
    ),
    (
        "get",
        "/admin/v1/orgs/{org}/users/{id}/offboarding",
        "Revocation receipts",
        "200",
        &[],
    ),
    (
        "get",
        "/admin/v1/orgs/{org}/audit",
        "Audit records",
        "200",
        &[],
    ),
];

fn problem_response(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// The document.
pub async fn document() -> Json<Value> {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, success, extra) in ROUTES {
        let mut params = Vec::new();
        for name in ["org", "id", "cid"] {
            if path.contains(&format!("{{{name}}}")) {
                params.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
            }
        }
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "security": [{"bearer": []}],
            "responses": {
                "400": problem_response("Malformed request"),
                "401": problem_response("Missing or invalid key"),
                "403": problem_response("Forbidden (org_forbidden, user_inactive, user_locked, not_entitled, scope_not_entitled)"),
                "404": problem_response("Unknown user, connector or resource"),
                "413": problem_response("Body over 1 MiB"),
                "503": problem_response("Unavailable (fail closed)"),
            }
        });
        op["responses"][*success] = if *success == "204" {
            json!({"description": "Done"})
        } else {
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}})
        };
        for status in *extra {
            let desc = match *status {
                "409" => "Conflict (already exists; consent_required with consent_url)",
                "502" => "Upstream error",
                _ => "Error",
            };
            op["responses"][*status] = problem_response(desc);
        }
        if *method == "post" || *method == "put" {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    Json(json!({
        "openapi": "3.1.0",
        "info": {"title": "auth-broker admin and gateway API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": {
                "type": "object",
                "required": ["type", "title", "status", "code"],
                "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "code": {"type": "string"}, "detail": {"type": "string"}
                }
            }}
        }
    }))
}
