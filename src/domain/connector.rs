//! Connectors (the upstream tools people reach through gateways) and grants (which IdP group
//! gets which connector, with which scopes and tool actions). Plain data; the rules that
//! combine them live in `policy`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::{GroupId, OrgId};

/// How the broker obtains a user's upstream token for a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The broker is the authorization server and mints RFC 9068 JWT access tokens.
    BrokerJwt,
    /// The upstream accepts an Identity Assertion JWT Authorization Grant (RFC 7523).
    IdJag,
    /// The upstream supports RFC 8693 token exchange.
    TokenExchange,
    /// Classic per-user OAuth consent, once; the refresh token is stored.
    AuthorizationCode,
}

/// The kind of effect a tool has; unknown tools count as `Write`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Reads data.
    Read,
    /// Changes data.
    Write,
    /// Destroys data.
    Delete,
}

impl Category {
    /// Every category, in a stable order.
    pub const ALL: [Category; 3] = [Category::Read, Category::Write, Category::Delete];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Read => "read",
            Category::Write => "write",
            Category::Delete => "delete",
        }
    }
}

/// What a gateway must do when a person calls a tool. Ordered from most to least restrictive:
/// `Blocked < NeedsApproval < Allow`, so "narrowing" is taking the minimum.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Never allowed.
    Blocked,
    /// Allowed after a human approves the call.
    NeedsApproval,
    /// Allowed.
    Allow,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Blocked => "blocked",
            Action::NeedsApproval => "needs_approval",
            Action::Allow => "allow",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action per tool category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionSet {
    /// Action for read tools.
    pub read: Action,
    /// Action for write tools.
    pub write: Action,
    /// Action for delete tools.
    pub delete: Action,
}

impl ActionSet {
    /// The action for a category.
    pub fn get(&self, c: Category) -> Action {
        match c {
            Category::Read => self.read,
            Category::Write => self.write,
            Category::Delete => self.delete,
        }
    }

    /// Everything allowed (a connector or org that does not restrict).
    pub const ALLOW_ALL: ActionSet = ActionSet {
        read: Action::Allow,
        write: Action::Allow,
        delete: Action::Allow,
    };
}

/// A connector of one org.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Connector {
    /// Owning tenant.
    pub org: OrgId,
    /// Identifier used by gateways and grants (e.g. `github`).
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// How tokens are obtained.
    pub strategy: Strategy,
    /// The `aud` of tokens minted for it.
    pub audience: String,
    /// The most scopes any grant may give.
    pub scopes: Vec<String>,
    /// Known tools and their categories; tools not listed count as `write`.
    pub tools: BTreeMap<String, Category>,
    /// The ceiling per category: grants can never exceed it.
    pub default_actions: ActionSet,
    /// A disabled connector grants nothing.
    pub enabled: bool,
    /// Lifetime of minted access tokens, in seconds.
    pub token_ttl_secs: u64,
    /// The connector's own authorization server (every strategy but `broker_jwt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<super::upstream::Upstream>,
}

/// Which group a grant applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupSelector {
    /// By `displayName`, case-insensitively (may name a group not pushed yet).
    Name(String),
    /// By SCIM group id.
    Id(GroupId),
}

/// A grant: members of a group get a connector with scopes and actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    /// Grant id (reason codes and audit refer to it).
    pub id: String,
    /// Owning tenant.
    pub org: OrgId,
    /// The group it applies to.
    pub group: GroupSelector,
    /// The connector it grants.
    pub connector: String,
    /// Scopes granted (intersected with the connector's).
    pub scopes: Vec<String>,
    /// Actions per tool category.
    pub actions: ActionSet,
}

/// Where entitlement groups come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupsSource {
    /// SCIM memberships only; groups in assertions are shown but grant nothing.
    #[default]
    Scim,
    /// The groups of the last sign-in only.
    Assertion,
    /// SCIM memberships plus the groups of the last sign-in.
    Both,
}
