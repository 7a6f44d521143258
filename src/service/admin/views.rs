//! The admin API's request and response bodies: the types the handlers (de)serialise and the
//! OpenAPI document (`http::openapi`) is generated from, so the two cannot drift. Field names
//! and shapes are CONTRACT.md's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

use super::ClientCredential;
use crate::domain::audit::AuditRecord;
use crate::domain::connector::{ActionSet, Category, Connector, Grant, Strategy};
use crate::domain::offboarding::Receipt;
use crate::domain::policy::Entitlements;
use crate::domain::text::NOT_BLANK_PATTERN;

/// What `valid_org_id` accepts as a connector id (also the literal on `ConnectorInput::id`).
const ID_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

/// A connector as the admin API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorInput {
    /// Id: required on create; on PUT, absent or the path's.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub id: Option<String>,
    /// Human-readable name (the id when absent).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Minting strategy.
    pub strategy: Strategy,
    /// Token audience (not blank).
    #[schema(schema_with = audience_schema)]
    pub audience: String,
    /// Most scopes grantable.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Tool → category.
    #[serde(default)]
    pub tools: BTreeMap<String, Category>,
    /// Ceiling per category (all `allow` when absent).
    #[serde(default)]
    pub default_actions: Option<ActionSet>,
    /// Enabled flag.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Token lifetime override, seconds (at most ten years).
    #[serde(default, deserialize_with = "ttl_secs")]
    #[schema(minimum = 0, maximum = 315_360_000)]
    pub token_ttl_secs: Option<u64>,
    /// The connector's own AS: required for `id_jag`, `token_exchange` and
    /// `authorization_code`, refused for `broker_jwt`.
    #[serde(default)]
    pub upstream: Option<UpstreamInput>,
}

fn yes() -> bool {
    true
}

/// A text field that must not be blank (`domain::text`: the pattern spells out the white
/// space the broker trims), of at most `max` characters; `nullable` when null means absent.
/// A field's `schema_with` replaces its derived schema, doc comment included, hence the
/// description here.
fn text(description: &str, max: Option<usize>, nullable: bool) -> Object {
    let ty = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::new(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(ty)
        .description(Some(description))
        .pattern(Some(NOT_BLANK_PATTERN))
        .max_length(max)
        .build()
}

fn audience_schema() -> Object {
    text("Token audience (not blank).", None, false)
}

fn group_schema() -> Object {
    text("Group by display name (not blank).", None, false)
}

fn group_id_schema() -> Object {
    text("Group by SCIM id (not blank).", None, false)
}

fn reason_schema() -> Object {
    text("Why (1–500 characters, not blank).", Some(500), false)
}

fn label_schema() -> Object {
    text(
        "A label for humans (1–200 characters, not blank).",
        Some(200),
        false,
    )
}

fn optional_label_schema() -> Object {
    text(
        "A label for humans (1–200 characters, not blank); absent or null: the connector's id.",
        Some(200),
        true,
    )
}

/// The longest token lifetime an admin can set: ten years.
const MAX_TTL_SECS: u64 = 315_360_000;

/// A whole number of seconds within [`MAX_TTL_SECS`]; `60.0` is as good as `60`, since JSON
/// (and the document's `integer`) does not tell them apart.
fn ttl_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_TTL_SECS as f64)
            .map(|f| f as u64)
    });
    match whole {
        Some(secs) if secs <= MAX_TTL_SECS => Ok(Some(secs)),
        _ => Err(D::Error::custom(format!(
            "token_ttl_secs must be a whole number of seconds from 0 to {MAX_TTL_SECS}"
        ))),
    }
}

pub use crate::domain::upstream::UpstreamInput;

/// The create form of [`ConnectorInput`]: the same members, with `id` required.
pub struct NewConnector;

impl utoipa::PartialSchema for NewConnector {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut schema = <ConnectorInput as utoipa::PartialSchema>::schema();
        if let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(o)) = &mut schema {
            o.required.insert(0, "id".to_string());
            // Required and not null: the create form names its connector.
            let id = utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .pattern(Some(ID_PATTERN))
                .description(Some("Id"));
            o.properties.insert("id".to_string(), id.into());
        }
        schema
    }
}

impl ToSchema for NewConnector {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <ConnectorInput as ToSchema>::schemas(schemas);
    }
}

/// A grant as the admin API takes it: exactly one of `group` (a display name) or `group_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// Group by display name.
    #[serde(default)]
    pub group: Option<String>,
    /// Group by SCIM id.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Connector id.
    pub connector: String,
    /// Scopes granted (among the connector's).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Action per category.
    pub actions: ActionSet,
}

/// The schema of [`GrantInput`]: serde cannot say "exactly one of", so the document states it
/// as a choice between the two shapes it accepts (the test below holds them to serde).
mod grant_schema {
    use super::*;

    /// A grant to a group named by its display name.
    #[derive(Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct GrantByName {
        /// Group by display name (not blank).
        #[schema(schema_with = super::group_schema)]
        group: String,
        /// Connector id.
        connector: String,
        /// Scopes granted (among the connector's).
        #[serde(default)]
        scopes: Vec<String>,
        /// Action per category.
        actions: ActionSet,
    }

    /// A grant to a group named by its SCIM id.
    #[derive(Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct GrantById {
        /// Group by SCIM id (not blank).
        #[schema(schema_with = super::group_id_schema)]
        group_id: String,
        /// Connector id.
        connector: String,
        /// Scopes granted (among the connector's).
        #[serde(default)]
        scopes: Vec<String>,
        /// Action per category.
        actions: ActionSet,
    }
}

pub use grant_schema::{GrantById, GrantByName};

impl utoipa::PartialSchema for GrantInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(utoipa::openapi::schema::Ref::from_schema_name(
                "GrantByName",
            ))
            .item(utoipa::openapi::schema::Ref::from_schema_name("GrantById"))
            .into()
    }
}

impl ToSchema for GrantInput {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "GrantByName".into(),
            <GrantByName as utoipa::PartialSchema>::schema(),
        ));
        schemas.push((
            "GrantById".into(),
            <GrantById as utoipa::PartialSchema>::schema(),
        ));
        <GrantByName as ToSchema>::schemas(schemas);
        <GrantById as ToSchema>::schemas(schemas);
    }
}

/// `POST …/users/{id}/lock`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockInput {
    /// Why (1–500 characters, not blank).
    #[schema(schema_with = reason_schema)]
    pub reason: String,
}

/// `POST …/gateways`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayInput {
    /// A label for humans (1–200 characters, not blank).
    #[schema(schema_with = label_schema)]
    pub name: String,
}

/// `POST …/connectors/{id}/resource-credentials` (the body is optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceCredentialInput {
    /// A label for humans (1–200 characters, not blank; absent or null: the connector's id).
    #[serde(default)]
    #[schema(schema_with = optional_label_schema)]
    pub name: Option<String>,
}

/// `GET …/connectors`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorList {
    /// Every connector of the org.
    pub connectors: Vec<Connector>,
}

/// `GET …/grants`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantList {
    /// Every grant of the org.
    pub grants: Vec<Grant>,
}

/// `GET …/gateways`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayList {
    /// The org's gateway keys (never the keys).
    pub gateways: Vec<ClientCredential>,
}

/// `GET …/connectors/{id}/resource-credentials`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceCredentialList {
    /// The connector's credentials (never the secrets).
    pub resource_credentials: Vec<ClientCredential>,
}

/// A new gateway key: the only time the key is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedGateway {
    /// Its id (path segment of its DELETE).
    pub id: String,
    /// The key.
    pub key: String,
}

/// A new resource-server credential: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedResourceCredential {
    /// Its id (the client id of HTTP Basic).
    pub id: String,
    /// The secret.
    pub secret: String,
    /// The connector it is bound to.
    pub connector: String,
}

/// `GET …/audit`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    /// Records, oldest first.
    pub records: Vec<AuditRecord>,
}

/// `GET …/users/{id}`: entitlements with reasons, held tokens, the lock and the epoch.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// SCIM id.
    pub id: String,
    /// `userName`.
    pub user_name: String,
    /// Active in the directory.
    pub active: bool,
    /// Whether an admin lock holds.
    pub locked: bool,
    /// The lock, if one holds.
    pub lock: Option<LockView>,
    /// The epoch in force (absent before the user's first vend or change).
    pub epoch: Option<u64>,
    /// What the vault enforces now.
    pub projection: Option<ProjectionView>,
    /// What the user may do, with reasons.
    pub entitlements: Entitlements,
    /// Connectors the vault holds a token of the user for.
    pub live_tokens: Vec<String>,
}

/// An admin lock.
#[derive(Debug, Serialize, ToSchema)]
pub struct LockView {
    /// Why.
    pub reason: String,
    /// Who locked.
    pub actor: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The user's access as the vault enforces it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionView {
    /// Active.
    pub active: bool,
    /// Locked.
    pub locked: bool,
    /// Epoch.
    pub epoch: u64,
    /// Entitled connectors and their scopes.
    pub connectors: BTreeMap<String, Vec<String>>,
}

/// `POST …/users/{id}/revoke`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Killed {
    /// The user.
    pub user_id: String,
    /// The epoch in force afterwards.
    pub epoch: u64,
    /// Token fields purged.
    pub revoked: Vec<String>,
}

/// `POST …/users/{id}/lock`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Locked {
    /// The user.
    pub user_id: String,
    /// Always true.
    pub locked: bool,
    /// Why.
    pub reason: String,
    /// The epoch in force afterwards.
    pub epoch: u64,
    /// Token fields purged.
    pub revoked: Vec<String>,
}

/// `DELETE …/users/{id}/lock`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unlocked {
    /// The user.
    pub user_id: String,
    /// Always false.
    pub locked: bool,
    /// The epoch in force afterwards.
    pub epoch: u64,
}

/// `GET …/users/{id}/offboarding`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Offboarding {
    /// The user.
    pub user_id: String,
    /// Revocations, oldest first.
    pub receipts: Vec<Receipt>,
    /// Each token revoked (or to be revoked) at an upstream, oldest first.
    pub upstream: Vec<UpstreamReceipt>,
}

/// One token's revocation at a connector's upstream (CONTRACT.md, the offboarding receipt).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpstreamReceipt {
    /// The connector.
    pub connector: String,
    /// `refresh_token` or `access_token`.
    pub token_kind: String,
    /// `pending`, `revoked`, `unsupported` or `failed`.
    pub status: crate::domain::consent::RevocationStatus,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The last failure, or why the upstream cannot revoke.
    pub last_error: Option<String>,
    /// The user's epoch after the revocation that queued it (0: a token the broker obtained
    /// but did not keep).
    pub epoch: u64,
    /// When it was queued.
    pub queued_at: String,
    /// Its last change.
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two documented shapes of a grant are the ones serde and the service accept.
    #[test]
    fn grant_shapes_are_what_serde_takes() {
        let actions = serde_json::json!({"read": "allow", "write": "blocked", "delete": "blocked"});
        for key in ["group", "group_id"] {
            let one = serde_json::json!({key: "Eng", "connector": "c", "actions": actions});
            let g: GrantInput = serde_json::from_value(one.clone()).unwrap();
            assert!(g.group.is_some() != g.group_id.is_some());
            let by_name = serde_json::from_value::<GrantByName>(one.clone()).is_ok();
            let by_id = serde_json::from_value::<GrantById>(one).is_ok();
            assert!(
                by_name != by_id,
                "{key} matches exactly one documented shape"
            );
            let unknown =
                serde_json::json!({key: "Eng", "connector": "c", "actions": actions, "x": 1});
            assert!(serde_json::from_value::<GrantInput>(unknown).is_err());
        }
        let both = serde_json::json!({"group": "E", "group_id": "g", "connector": "c", "actions": actions});
        assert!(serde_json::from_value::<GrantByName>(both.clone()).is_err());
        assert!(serde_json::from_value::<GrantById>(both).is_err());
        let schema = serde_json::to_value(<GrantInput as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(
            schema["oneOf"].as_array().map(Vec::len),
            Some(2),
            "{schema}"
        );
    }
}
