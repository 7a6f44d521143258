//! SCIM schema definitions (RFC 7643 §4, §7, §8.7) and the discovery documents built from them
//! (`/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas`, RFC 7644 §4).
//!
//! The attribute tables (`schema/tables.rs`) are the single source of truth: normalization,
//! projection and the published `Schema` resources all read the same [`AttrDef`] values.

use serde_json::{Map, Value, json};

use crate::scim::ResourceKind;

mod tables;
#[cfg(test)]
mod tests;

/// Core User schema URN (RFC 7643 §4.1).
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema URN (RFC 7643 §4.2).
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension URN (RFC 7643 §4.3).
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// ListResponse message URN (RFC 7644 §3.4.2).
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PatchOp message URN (RFC 7644 §3.5.2).
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Error message URN (RFC 7644 §3.12).
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// SearchRequest message URN (RFC 7644 §3.4.3), for `POST /.search` bodies.
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// ServiceProviderConfig schema URN (RFC 7643 §5).
pub const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// ResourceType schema URN (RFC 7643 §6).
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// Schema schema URN (RFC 7643 §7).
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// An attribute's data type (RFC 7643 §2.3); decides how values are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrType {
    /// JSON string.
    String,
    /// JSON boolean (Entra's `"True"`/`"False"` strings are coerced during normalization).
    Boolean,
    /// JSON number with a fractional part allowed.
    Decimal,
    /// JSON number without a fractional part.
    Integer,
    /// xsd:dateTime carried as a JSON string.
    DateTime,
    /// URI carried as a JSON string.
    Reference,
    /// An object whose members are the sub-attributes.
    Complex,
    /// base64-encoded bytes carried as a JSON string.
    Binary,
}

impl AttrType {
    /// The keyword used in `Schema` resources.
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
            AttrType::Binary => "binary",
        }
    }
}

/// When an attribute may be written (RFC 7643 §2.2 `mutability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutability {
    /// Set by the service provider only; client values are ignored.
    ReadOnly,
    /// Freely updatable.
    ReadWrite,
    /// Set once (on creation or when first added), never changed afterwards.
    Immutable,
    /// Accepted but never returned (e.g. `password`).
    WriteOnly,
}

impl Mutability {
    /// The keyword used in `Schema` resources.
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// When an attribute is returned (RFC 7643 §2.2 `returned`); drives projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Returned {
    /// Always returned, whatever `attributes`/`excludedAttributes` say.
    Always,
    /// Never returned.
    Never,
    /// Returned unless excluded, or unless `attributes` lists others only.
    Default,
    /// Returned only when named in `attributes`.
    Request,
}

impl Returned {
    /// The keyword used in `Schema` resources.
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

/// How uniqueness of a value is enforced (RFC 7643 §2.2 `uniqueness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Uniqueness {
    /// No uniqueness constraint.
    None,
    /// Unique within the service provider's tenant (here: the org).
    Server,
    /// Globally unique.
    Global,
}

impl Uniqueness {
    /// The keyword used in `Schema` resources.
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute definition (RFC 7643 §7): validation, projection and discovery all read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrDef {
    /// Canonical attribute name (matching is case-insensitive, RFC 7643 §2.1).
    pub name: &'static str,
    /// Data type.
    pub kind: AttrType,
    /// Whether the value is a JSON array.
    pub multi_valued: bool,
    /// Whether a value is required on create/replace.
    pub required: bool,
    /// Whether string comparisons are case-sensitive.
    pub case_exact: bool,
    /// When the attribute may be written.
    pub mutability: Mutability,
    /// When the attribute is returned.
    pub returned: Returned,
    /// Sub-attributes of a complex attribute (empty otherwise).
    pub sub_attributes: &'static [AttrDef],
    /// Uniqueness enforcement.
    pub uniqueness: Uniqueness,
    /// Suggested canonical values (e.g. `work`, `home`); advisory, not enforced.
    pub canonical_values: &'static [&'static str],
    /// Resource types a `reference` may point to (`User`, `Group`, `external`, `uri`).
    pub reference_types: &'static [&'static str],
    /// Human-readable description published in `/Schemas`.
    pub description: &'static str,
}

impl AttrDef {
    /// A single-valued, optional, readWrite, default-returned attribute of the given type.
    const fn new(name: &'static str, kind: AttrType) -> Self {
        AttrDef {
            name,
            kind,
            multi_valued: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            sub_attributes: &[],
            uniqueness: Uniqueness::None,
            canonical_values: &[],
            reference_types: &[],
            description: "",
        }
    }
    const fn string(name: &'static str) -> Self {
        Self::new(name, AttrType::String)
    }
    const fn boolean(name: &'static str) -> Self {
        Self::new(name, AttrType::Boolean)
    }
    const fn reference(name: &'static str, types: &'static [&'static str]) -> Self {
        let mut d = Self::new(name, AttrType::Reference);
        d.reference_types = types;
        d
    }
    const fn complex(name: &'static str, subs: &'static [AttrDef]) -> Self {
        let mut d = Self::new(name, AttrType::Complex);
        d.sub_attributes = subs;
        d
    }
    const fn desc(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }
    const fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    const fn mutability(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }
    const fn read_only(self) -> Self {
        self.mutability(Mutability::ReadOnly)
    }
    const fn returned(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }
    const fn unique(mut self, u: Uniqueness) -> Self {
        self.uniqueness = u;
        self
    }
    const fn canonical(mut self, values: &'static [&'static str]) -> Self {
        self.canonical_values = values;
        self
    }

    /// The sub-attribute named `name` (case-insensitive), if this is a complex attribute.
    pub fn sub(&self, name: &str) -> Option<&'static AttrDef> {
        find_attr(self.sub_attributes, name)
    }

    /// Whether this is one of the common attributes of RFC 7643 §3.1 (`id`, `externalId`, `meta`).
    pub fn is_common(&self) -> bool {
        matches!(self.name, "id" | "externalId" | "meta")
    }
}

/// Looks an attribute up by name, case-insensitively (RFC 7643 §2.1).
pub fn find_attr(defs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    defs.iter().find(|d| d.name.eq_ignore_ascii_case(name))
}

/// `name` without a case-insensitive `prefix` (a schema URN, typically), if it starts with it.
pub fn strip_prefix_ci<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let (head, tail) = name.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(tail)
}

/// The attribute definitions of a resource kind's core schema, common attributes included.
pub fn core_attributes(kind: ResourceKind) -> &'static [AttrDef] {
    match kind {
        ResourceKind::User => tables::USER,
        ResourceKind::Group => tables::GROUP,
    }
}

/// The attribute definitions of the Enterprise User extension.
pub fn enterprise_attributes() -> &'static [AttrDef] {
    tables::ENTERPRISE_USER
}

/// The attribute definitions of a schema URN (case-insensitive), for URN-qualified paths.
pub fn schema_attributes(urn: &str) -> Option<&'static [AttrDef]> {
    if urn.eq_ignore_ascii_case(USER_SCHEMA) {
        Some(tables::USER)
    } else if urn.eq_ignore_ascii_case(GROUP_SCHEMA) {
        Some(tables::GROUP)
    } else if urn.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
        Some(tables::ENTERPRISE_USER)
    } else {
        None
    }
}

/// The `ServiceProviderConfig` document (RFC 7643 §5) describing what this broker supports.
pub fn service_provider_config(base: &str, max_results: u32) -> Value {
    let base = base.trim_end_matches('/');
    json!({
        "schemas": [SPC_SCHEMA],
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": max_results },
        "changePassword": { "supported": false },
        "sort": { "supported": true },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token issued to the identity provider",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig")
        }
    })
}

/// The `ResourceType` resources (RFC 7643 §6): `User` (with the enterprise extension), `Group`.
pub fn resource_types(base: &str) -> Vec<Value> {
    let base = base.trim_end_matches('/');
    let user = json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "User Account",
        "schema": USER_SCHEMA,
        "schemaExtensions": [{ "schema": ENTERPRISE_USER_SCHEMA, "required": false }],
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{base}/ResourceTypes/User")
        }
    });
    let group = json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "description": "Group",
        "schema": GROUP_SCHEMA,
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{base}/ResourceTypes/Group")
        }
    });
    vec![user, group]
}

/// The `Schema` resources (RFC 7643 §7) for User, Group and the Enterprise User extension.
///
/// The common attributes `id`, `externalId` and `meta` are left out, as in RFC 7643 §8.7.1: they
/// belong to every resource (§3.1), and clients building models from `/Schemas` already know them.
pub fn schemas(base: &str) -> Vec<Value> {
    let base = base.trim_end_matches('/');
    [
        (USER_SCHEMA, "User", "User Account", tables::USER),
        (GROUP_SCHEMA, "Group", "Group", tables::GROUP),
        (
            ENTERPRISE_USER_SCHEMA,
            "EnterpriseUser",
            "Enterprise User",
            tables::ENTERPRISE_USER,
        ),
    ]
    .into_iter()
    .map(|(urn, name, description, defs)| {
        let attributes: Vec<Value> = defs
            .iter()
            .filter(|d| !d.is_common())
            .map(attr_json)
            .collect();
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": urn,
            "name": name,
            "description": description,
            "attributes": attributes,
            "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{urn}") }
        })
    })
    .collect()
}

/// One attribute definition in its `Schema` resource form (RFC 7643 §7).
fn attr_json(def: &AttrDef) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), def.name.into());
    out.insert("type".into(), def.kind.as_str().into());
    out.insert("multiValued".into(), def.multi_valued.into());
    out.insert("description".into(), def.description.into());
    out.insert("required".into(), def.required.into());
    out.insert("caseExact".into(), def.case_exact.into());
    out.insert("mutability".into(), def.mutability.as_str().into());
    out.insert("returned".into(), def.returned.as_str().into());
    out.insert("uniqueness".into(), def.uniqueness.as_str().into());
    if !def.canonical_values.is_empty() {
        out.insert("canonicalValues".into(), def.canonical_values.into());
    }
    if !def.reference_types.is_empty() {
        out.insert("referenceTypes".into(), def.reference_types.into());
    }
    if def.kind == AttrType::Complex {
        let subs: Vec<Value> = def.sub_attributes.iter().map(attr_json).collect();
        out.insert("subAttributes".into(), subs.into());
    }
    Value::Object(out)
}
