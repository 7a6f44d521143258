//! Policy: what a person may do with each connector, and why.
//!
//! The model: a connector's ceiling (enabled flag, offered scopes, per-category default
//! action) intersected with the union of the grants of the person's groups, then narrowed by
//! org-wide policy. Groups add access; an explicit `blocked` in any applicable grant wins for
//! its category. Every decision carries reasons with stable codes (see [`code`]) so admins and
//! audit can ask "why". Everything here fails closed: whatever is unknown, disabled, missing or
//! inconsistent yields less access, never more. Output is deterministic (ordered maps, sorted
//! vectors, reasons in a fixed order) whatever the order of the inputs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::connector::{Action, ActionSet, Category, Connector, Grant, GroupSelector};
use super::ids::GroupId;

/// Stable reason codes: admins, audit and gateways match on these strings, so they never change.
pub mod code {
    /// The user is deactivated: nothing is allowed.
    pub const USER_INACTIVE: &str = "user-inactive";
    /// No group of the user has a grant for the connector (or the connector is unknown).
    pub const NOT_ENTITLED: &str = "not-entitled";
    /// The connector is disabled: it grants nothing to anybody.
    pub const CONNECTOR_DISABLED: &str = "connector-disabled";
    /// A grant allows the category.
    pub const GRANT_ALLOWS: &str = "grant-allows";
    /// A grant allows the category after approval.
    pub const GRANT_NEEDS_APPROVAL: &str = "grant-needs-approval";
    /// A grant blocks the category.
    pub const GRANT_BLOCKS: &str = "grant-blocks";
    /// A grant's block overrode more access given by another grant.
    pub const EXPLICIT_BLOCK: &str = "explicit-block";
    /// The connector's default actions lowered what the grants gave.
    pub const CONNECTOR_CEILING: &str = "connector-ceiling";
    /// The org-wide policy lowered what the grants and connector gave.
    pub const ORG_RESTRICTION: &str = "org-restriction";
    /// The connector's tool map names the tool's category.
    pub const TOOL_MAPPED: &str = "tool-mapped";
    /// The tool is not mapped; the gateway's category hint was used.
    pub const CATEGORY_HINT: &str = "category-hint";
    /// The tool is neither mapped nor hinted, so it counts as `write`.
    pub const UNKNOWN_TOOL_COUNTS_AS_WRITE: &str = "unknown-tool-counts-as-write";
    /// A grant of one of the user's groups gives the connector.
    pub const GRANT_APPLIES: &str = "grant-applies";
    /// A grant names a scope the connector does not offer; the scope is ignored.
    pub const SCOPE_NOT_OFFERED: &str = "scope-not-offered";
    /// The user is entitled to the connector but to none of its scopes.
    pub const NO_SCOPES: &str = "no-scopes";
}

/// Why a decision came out as it did: stable codes admins and audit can rely on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Reason {
    /// One of the constants in [`code`].
    pub code: &'static str,
    /// Display name of the user's group the reason comes from, if any.
    pub group: Option<String>,
    /// Id of the grant the reason comes from, if any.
    pub grant: Option<String>,
    /// Human-readable explanation.
    pub detail: String,
}

impl Reason {
    /// A reason that comes from no particular group or grant.
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            group: None,
            grant: None,
            detail: detail.into(),
        }
    }

    /// A reason that comes from one grant, applied through one of the user's groups.
    fn from_grant(code: &'static str, applied: &Applied<'_>, detail: String) -> Self {
        Self {
            code,
            group: Some(applied.group.to_owned()),
            grant: Some(applied.grant.id.clone()),
            detail,
        }
    }
}

/// One decision with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    /// What the gateway must do.
    pub action: Action,
    /// Why, in a stable order.
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// A refusal with a single reason, the shape of every fail-closed answer.
    pub fn blocked(reason: Reason) -> Self {
        Self {
            action: Action::Blocked,
            reasons: vec![reason],
        }
    }
}

/// What a user may do with one connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConnectorEntitlement {
    /// The connector id.
    pub connector: String,
    /// Scopes a token for this user may carry (sorted, deduplicated; may be empty).
    pub scopes: Vec<String>,
    /// The decision per tool category (always all three categories).
    pub actions: BTreeMap<Category, Decision>,
    /// The action for every tool in the connector's tool map.
    pub tools: BTreeMap<String, Action>,
    /// Which grants give the connector, and notes about their scopes.
    pub via: Vec<Reason>,
}

/// Everything a user may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default, utoipa::ToSchema)]
pub struct Entitlements {
    /// Whether the user is active; an inactive user has no connectors.
    pub active: bool,
    /// Entitled connectors by id.
    pub connectors: BTreeMap<String, ConnectorEntitlement>,
}

/// The user's groups as the directory knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership<'a> {
    /// SCIM group id.
    pub id: &'a GroupId,
    /// The group's `displayName`.
    pub display_name: &'a str,
}

/// Org-wide narrowing (e.g. "delete tools need approval everywhere"); `ActionSet::ALLOW_ALL` means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgPolicy {
    /// The most any person of the org may get per category.
    pub max_actions: ActionSet,
}

impl Default for OrgPolicy {
    /// No org-wide restriction.
    fn default() -> Self {
        Self {
            max_actions: ActionSet::ALLOW_ALL,
        }
    }
}

/// A grant that applies to the user, with the group it applies through.
struct Applied<'a> {
    grant: &'a Grant,
    /// Display name of the matching group (reasons name it).
    group: &'a str,
    /// Id of the matching group (details mention it).
    group_id: &'a GroupId,
}

/// The user's groups, indexed for matching grant selectors.
struct Groups<'a> {
    by_id: BTreeMap<&'a GroupId, &'a str>,
    /// Lowercased display name → (display name, id); the smallest wins when names collide.
    by_name: BTreeMap<String, (&'a str, &'a GroupId)>,
}

impl<'a> Groups<'a> {
    fn new(groups: &[Membership<'a>]) -> Self {
        let mut by_id: BTreeMap<&'a GroupId, &'a str> = BTreeMap::new();
        let mut by_name: BTreeMap<String, (&'a str, &'a GroupId)> = BTreeMap::new();
        for m in groups {
            // Keep the smallest candidate whenever a key repeats, so input order never matters.
            by_id
                .entry(m.id)
                .and_modify(|name| *name = (*name).min(m.display_name))
                .or_insert(m.display_name);
            if m.display_name.is_empty() {
                continue;
            }
            by_name
                .entry(m.display_name.to_lowercase())
                .and_modify(|best| *best = (*best).min((m.display_name, m.id)))
                .or_insert((m.display_name, m.id));
        }
        Self { by_id, by_name }
    }

    /// The group a selector matches, as (display name, id); an empty name matches nothing,
    /// since groups without a display name are not indexed by name.
    fn matching(&self, selector: &'a GroupSelector) -> Option<(&'a str, &'a GroupId)> {
        match selector {
            GroupSelector::Id(id) => self.by_id.get(id).map(|name| (*name, id)),
            GroupSelector::Name(name) => self.by_name.get(&name.to_lowercase()).copied(),
        }
    }
}

/// Computes everything a user may do, from their groups, the org's connectors and grants.
///
/// The inputs are one org's: grants apply only to enabled connectors of their own org, and an
/// inactive user gets nothing at all.
pub fn entitlements(
    active: bool,
    groups: &[Membership<'_>],
    connectors: &[Connector],
    grants: &[Grant],
    org: &OrgPolicy,
) -> Entitlements {
    if !active {
        return Entitlements::default();
    }
    let groups = Groups::new(groups);

    // Applicable grants, grouped per connector (an index into `connectors`).
    let mut applied: BTreeMap<usize, Vec<Applied<'_>>> = BTreeMap::new();
    for grant in grants {
        let Some((group, group_id)) = groups.matching(&grant.group) else {
            continue;
        };
        let Some(index) = connectors
            .iter()
            .position(|c| c.id == grant.connector && c.org == grant.org)
        else {
            continue; // Unknown connector (or one of another org): grants nothing.
        };
        if !connectors[index].enabled {
            continue;
        }
        applied.entry(index).or_default().push(Applied {
            grant,
            group,
            group_id,
        });
    }

    let mut out = Entitlements {
        active: true,
        connectors: BTreeMap::new(),
    };
    let mut ambiguous: BTreeSet<&str> = BTreeSet::new();
    for (index, mut list) in applied {
        let connector = &connectors[index];
        list.sort_by_key(|a| (a.grant.id.as_str(), a.group, a.group_id));
        let entitlement = connector_entitlement(connector, &list, org);
        // Connector ids are unique within an org. Should a caller mix orgs and two entitled
        // connectors share an id, nobody can tell which one a gateway means: grant neither.
        if out
            .connectors
            .insert(connector.id.clone(), entitlement)
            .is_some()
        {
            ambiguous.insert(&connector.id);
        }
    }
    for id in ambiguous {
        out.connectors.remove(id);
    }
    out
}

/// One connector's entitlement from its applicable grants (sorted, at least one).
fn connector_entitlement(
    connector: &Connector,
    applied: &[Applied<'_>],
    org: &OrgPolicy,
) -> ConnectorEntitlement {
    let mut via = Vec::with_capacity(applied.len() + 1);
    let mut scopes: BTreeSet<&str> = BTreeSet::new();
    for a in applied {
        via.push(Reason::from_grant(
            code::GRANT_APPLIES,
            a,
            format!(
                "grant {:?} gives group {:?} (id {}) connector {:?} with scopes [{}]",
                a.grant.id,
                a.group,
                a.group_id,
                connector.id,
                a.grant.scopes.join(", ")
            ),
        ));
        let mut ignored: BTreeSet<&str> = BTreeSet::new();
        for scope in &a.grant.scopes {
            if connector.scopes.contains(scope) {
                scopes.insert(scope);
            } else {
                ignored.insert(scope);
            }
        }
        for scope in ignored {
            via.push(Reason::from_grant(
                code::SCOPE_NOT_OFFERED,
                a,
                format!(
                    "scope {scope:?} is not offered by connector {:?}; ignored",
                    connector.id
                ),
            ));
        }
    }
    if scopes.is_empty() {
        via.push(Reason::new(
            code::NO_SCOPES,
            format!(
                "entitled to connector {:?} but to none of its scopes: tool actions apply, tokens carry no scope",
                connector.id
            ),
        ));
    }

    let actions: BTreeMap<Category, Decision> = Category::ALL
        .into_iter()
        .map(|c| (c, decide_category(c, applied, connector, org)))
        .collect();
    let tools = connector
        .tools
        .iter()
        .map(|(tool, category)| {
            let action = actions.get(category).map_or(Action::Blocked, |d| d.action);
            (tool.clone(), action)
        })
        .collect();

    ConnectorEntitlement {
        connector: connector.id.clone(),
        scopes: scopes.into_iter().map(str::to_owned).collect(),
        actions,
        tools,
        via,
    }
}

/// The decision for one category: union of grants, unless one blocks; then ceiling, then org.
fn decide_category(
    category: Category,
    applied: &[Applied<'_>],
    connector: &Connector,
    org: &OrgPolicy,
) -> Decision {
    let name = category.as_str();
    let mut reasons = Vec::with_capacity(applied.len() + 2);
    let mut union: Option<Action> = None;
    let mut blockers: Vec<&Applied<'_>> = Vec::new();
    let mut givers: Vec<&Applied<'_>> = Vec::new();
    for a in applied {
        let action = a.grant.actions.get(category);
        let (code, verb) = match action {
            Action::Allow => (code::GRANT_ALLOWS, "allows"),
            Action::NeedsApproval => (code::GRANT_NEEDS_APPROVAL, "requires approval for"),
            Action::Blocked => (code::GRANT_BLOCKS, "blocks"),
        };
        reasons.push(Reason::from_grant(
            code,
            a,
            format!(
                "grant {:?} for group {:?} {verb} {name} tools",
                a.grant.id, a.group
            ),
        ));
        if action == Action::Blocked {
            blockers.push(a);
        } else {
            givers.push(a);
        }
        union = Some(union.map_or(action, |u| u.max(action)));
    }

    let Some(union) = union else {
        // Never reached with a non-empty list; fail closed all the same.
        return Decision::blocked(Reason::new(
            code::NOT_ENTITLED,
            format!("no grant gives connector {:?}", connector.id),
        ));
    };

    if !blockers.is_empty() {
        if !givers.is_empty() {
            let overridden = givers
                .iter()
                .map(|g| {
                    format!(
                        "grant {:?} (group {:?}, {})",
                        g.grant.id,
                        g.group,
                        g.grant.actions.get(category)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            for b in blockers {
                reasons.push(Reason::from_grant(
                    code::EXPLICIT_BLOCK,
                    b,
                    format!(
                        "grant {:?} for group {:?} blocks {name} tools, overriding {overridden}",
                        b.grant.id, b.group
                    ),
                ));
            }
        }
        return Decision {
            action: Action::Blocked,
            reasons,
        };
    }

    let mut action = union;
    let ceiling = connector.default_actions.get(category);
    if ceiling < action {
        reasons.push(Reason::new(
            code::CONNECTOR_CEILING,
            format!(
                "connector {:?} allows at most {ceiling} for {name} tools (grants gave {action})",
                connector.id
            ),
        ));
        action = ceiling;
    }
    let limit = org.max_actions.get(category);
    if limit < action {
        reasons.push(Reason::new(
            code::ORG_RESTRICTION,
            format!("org policy allows at most {limit} for {name} tools (was {action})"),
        ));
        action = limit;
    }
    Decision { action, reasons }
}

/// Answers a gateway's "may this person call this tool?", failing closed on anything unknown.
///
/// `hint` is the gateway's category hint (e.g. from MCP tool annotations); the connector's own
/// tool map overrides it.
pub fn decide_tool(
    ent: &Entitlements,
    connectors: &[Connector],
    connector: &str,
    tool: &str,
    hint: Option<Category>,
) -> Decision {
    if !ent.active {
        return Decision::blocked(Reason::new(code::USER_INACTIVE, "the user is not active"));
    }
    let Some(conn) = connectors.iter().find(|c| c.id == connector) else {
        return Decision::blocked(Reason::new(
            code::NOT_ENTITLED,
            format!("connector {connector:?} is not known"),
        ));
    };
    if !conn.enabled {
        return Decision::blocked(Reason::new(
            code::CONNECTOR_DISABLED,
            format!("connector {connector:?} is disabled"),
        ));
    }
    let Some(entitlement) = ent.connectors.get(connector) else {
        return Decision::blocked(Reason::new(
            code::NOT_ENTITLED,
            format!("no group of the user has a grant for connector {connector:?}"),
        ));
    };
    let (category, category_reason) = tool_category(conn, tool, hint);
    let Some(decision) = entitlement.actions.get(&category) else {
        return Decision::blocked(Reason::new(
            code::NOT_ENTITLED,
            format!(
                "no decision for {} tools of connector {connector:?}",
                category.as_str()
            ),
        ));
    };
    let mut reasons = Vec::with_capacity(decision.reasons.len() + 1);
    reasons.extend(decision.reasons.iter().cloned());
    reasons.push(category_reason);
    Decision {
        action: decision.action,
        reasons,
    }
}

/// Which category a tool counts as: the connector's tool map, else the hint, else Write.
pub fn tool_category(
    connector: &Connector,
    tool: &str,
    hint: Option<Category>,
) -> (Category, Reason) {
    if let Some(&category) = connector.tools.get(tool) {
        let ignored = match hint {
            Some(h) if h != category => format!(" (hint {} ignored)", h.as_str()),
            _ => String::new(),
        };
        let detail = format!(
            "connector {:?} maps tool {tool:?} to {}{ignored}",
            connector.id,
            category.as_str()
        );
        return (category, Reason::new(code::TOOL_MAPPED, detail));
    }
    if let Some(h) = hint {
        let detail = format!(
            "tool {tool:?} is not mapped by connector {:?}; the gateway's hint says {}",
            connector.id,
            h.as_str()
        );
        return (h, Reason::new(code::CATEGORY_HINT, detail));
    }
    let detail = format!(
        "tool {tool:?} is not mapped by connector {:?} and has no hint: it counts as write",
        connector.id
    );
    (
        Category::Write,
        Reason::new(code::UNKNOWN_TOOL_COUNTS_AS_WRITE, detail),
    )
}

/// Checks requested scopes against an entitlement: Ok(granted scopes to mint) or Err(the first scope not entitled).
///
/// No request (or an empty one) means every entitled scope. The result is sorted and
/// deduplicated.
pub fn check_scopes(
    ent: &ConnectorEntitlement,
    requested: Option<&[String]>,
) -> Result<Vec<String>, String> {
    let mut granted = match requested {
        None | Some([]) => ent.scopes.clone(),
        Some(requested) => {
            let mut granted = Vec::with_capacity(requested.len());
            for scope in requested {
                if !ent.scopes.contains(scope) {
                    return Err(scope.clone());
                }
                granted.push(scope.clone());
            }
            granted
        }
    };
    granted.sort();
    granted.dedup();
    Ok(granted)
}

#[cfg(test)]
mod tests;
