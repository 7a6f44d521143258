//! The rules of a connector's `upstream` that JSON Schema can state but `utoipa`'s derive
//! cannot: which strategies need one, what each strategy needs in it, the secret, and the
//! endpoints a provider preset or discovery supplies. Added to the generated document so that
//! a request valid by the document is one the admin API accepts, and the other way round
//! (`service::admin::connector_from` and `Upstream::problems` are the same rules in code).

use serde_json::{Value, json};

use crate::domain::upstream::Provider;

/// Every preset except `generic` (each brings its own endpoints).
fn presets() -> Vec<Value> {
    [
        Provider::Github,
        Provider::Google,
        Provider::Slack,
        Provider::Atlassian,
        Provider::Microsoft,
        Provider::Linear,
        Provider::Notion,
    ]
    .iter()
    .map(|p| serde_json::to_value(p).unwrap_or_default())
    .collect()
}

/// `key` is present and a string (not null).
fn given(key: &str) -> Value {
    json!({"required": [key], "properties": {key: {"type": "string"}}})
}

/// What the upstream object itself requires.
fn upstream_rules(schema: &mut Value) {
    let Some(props) = schema["properties"].as_object_mut() else {
        return;
    };
    for key in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        if let Some(p) = props.get_mut(key) {
            p["pattern"] = json!(crate::domain::upstream::URL_PATTERN);
        }
    }
    if let Some(p) = props.get_mut("client_id") {
        p["pattern"] = json!(crate::domain::text::NOT_BLANK_PATTERN);
    }
    schema["allOf"] = json!([
        // A token endpoint: from a preset, discovery of the issuer, or given.
        {"anyOf": [
            {"required": ["provider"], "properties": {"provider": {"enum": presets()}}},
            given("issuer"),
            given("token_endpoint"),
        ]},
        // A way to authenticate: a secret, one from the environment, or the org's key.
        {"anyOf": [
            given("client_secret"),
            given("client_secret_env"),
            {"required": ["client_auth"],
             "properties": {"client_auth": {"const": "private_key_jwt"}}},
        ]},
        // Not both kinds of secret.
        {"not": {"required": ["client_secret", "client_secret_env"],
                 "properties": {"client_secret": {"type": "string"},
                                "client_secret_env": {"type": "string"}}}},
    ]);
}

/// What each strategy requires of a connector's `upstream`.
fn connector_rules(schema: &mut Value) {
    let upstream = |rules: Value| json!({"properties": {"upstream": rules}});
    schema["allOf"] = json!([
        {"if": {"properties": {"strategy": {"const": "broker_jwt"}}},
         "then": upstream(json!({"type": "null"})),
         "else": {"required": ["upstream"],
                  "properties": {"upstream": {"$ref": "#/components/schemas/UpstreamInput"}}}},
        // The issuer is the `aud` of the assertions the broker signs.
        {"if": {"properties": {"strategy": {"enum": ["id_jag", "token_exchange"]}}},
         "then": upstream(given("issuer"))},
        // Only an ID-JAG can come from the IdP (409 when the org does not sign in with OIDC).
        {"if": {"properties": {"strategy": {"enum": ["token_exchange", "authorization_code"]}}},
         "then": upstream(json!({"properties": {"id_jag_source": {"const": "broker"}}}))},
        // Consent needs an authorization endpoint: a preset's, discovered, or given.
        {"if": {"properties": {"strategy": {"const": "authorization_code"}}},
         "then": upstream(json!({"anyOf": [
             {"required": ["provider"], "properties": {"provider": {"enum": presets()}}},
             given("issuer"),
             {"allOf": [given("authorization_endpoint"), given("token_endpoint")]},
         ]}))},
    ]);
}

/// Adds the rules to the document's schemas.
pub fn add_rules(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    upstream_rules(&mut schemas["UpstreamInput"]);
    for name in ["ConnectorInput", "NewConnector"] {
        connector_rules(&mut schemas[name]);
    }
}
