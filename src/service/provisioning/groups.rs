//! Group use cases: group push (create, rename, membership add/remove) from Okta and Entra.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{
    MAX_ATTEMPTS, Provisioning, ScimCtx, ScimResource, backoff, check_if_match, render, store_error,
};
use crate::domain::directory::{Group, membership_transition};
use crate::domain::events::DirectoryEvent;
use crate::domain::ports::Change;
use crate::domain::{GroupId, StoreError, UserId};
use crate::scim::patch::{self, PatchRequest};
use crate::scim::{ResourceKind, ScimError, normalize};

/// At most this many member ids are listed in one audit summary (counts are always exact).
const AUDIT_ID_LIMIT: usize = 100;

impl Provisioning {
    /// Loads a group with its members and renders it.
    pub async fn get_group(&self, ctx: &ScimCtx, id: &str) -> Result<ScimResource, ScimError> {
        let group = self.load_group(ctx, id).await?;
        self.render_group(ctx, &group).await
    }

    /// POST /Groups.
    pub async fn create_group(
        &self,
        ctx: &ScimCtx,
        body: Value,
    ) -> Result<ScimResource, ScimError> {
        let (attrs, members) = split_members(normalize::normalize_group(body)?);
        self.check_members_exist(ctx, &members).await?;
        let now = self.clock.now_ms();
        let group = build_group(ctx, GroupId::generate(), attrs, 1, now, now);
        let (added, _, mut events) = membership_transition(&group.id, &[], &members);
        events.insert(
            0,
            DirectoryEvent::GroupCreated {
                group: group.id.clone(),
            },
        );
        let summary = json!({
            "displayName": group.display_name,
            "membersAdded": added.len(),
            "added": ids(&added),
        });
        let change = Change {
            audit: self.audit(
                ctx,
                "scim.group.create",
                "Group",
                group.id.as_str(),
                summary,
            ),
            events,
        };
        self.dir
            .create_group(&group, &added, &change)
            .await
            .map_err(store_error)?;
        self.sync_users(ctx, &added, "scim.group.create", false)
            .await?;
        self.render_group(ctx, &group).await
    }

    /// PUT /Groups/{id}: replaces attributes and the whole member list.
    pub async fn replace_group(
        &self,
        ctx: &ScimCtx,
        id: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> Result<ScimResource, ScimError> {
        let normalized = normalize::normalize_group(body)?;
        self.write_group(ctx, id, if_match, "scim.group.replace", |_old, _members| {
            Ok(split_members(normalized.clone()))
        })
        .await
    }

    /// PATCH /Groups/{id}: Okta and Entra membership pushes arrive here.
    pub async fn patch_group(
        &self,
        ctx: &ScimCtx,
        id: &str,
        req: PatchRequest,
        if_match: Option<&str>,
    ) -> Result<ScimResource, ScimError> {
        patch::validate_request(&req)?;
        let base = ctx.base_url.clone();
        self.write_group(ctx, id, if_match, "scim.group.patch", |old, members| {
            let member_list: Vec<crate::domain::directory::Member> = members
                .iter()
                .map(|u| crate::domain::directory::Member {
                    user_id: u.clone(),
                    display: String::new(),
                })
                .collect();
            let mut doc = render::group(old, &member_list, &base);
            patch::apply(&mut doc, &req.operations, ResourceKind::Group)?;
            Ok(split_members(normalize::normalize_group(doc)?))
        })
        .await
    }

    /// DELETE /Groups/{id}: members lose whatever the group granted.
    pub async fn delete_group(
        &self,
        ctx: &ScimCtx,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ScimError> {
        for attempt in 0..MAX_ATTEMPTS {
            let old = self.load_group(ctx, id).await?;
            check_if_match(if_match, old.version)?;
            let members = self.member_ids(ctx, &old.id).await?;
            let (_, removed, mut events) = membership_transition(&old.id, &members, &[]);
            events.push(DirectoryEvent::GroupDeleted {
                group: old.id.clone(),
            });
            let summary = json!({
                "displayName": old.display_name,
                "membersRemoved": removed.len(),
                "removed": ids(&removed),
            });
            let change = Change {
                audit: self.audit(ctx, "scim.group.delete", "Group", id, summary),
                events,
            };
            match self
                .dir
                .delete_group(&ctx.org, &old.id, old.version, &change)
                .await
            {
                Ok(()) => {
                    self.sync_users(ctx, &removed, "scim.group.delete", true)
                        .await?;
                    return Ok(());
                }
                Err(StoreError::VersionMismatch) if if_match.is_none() => backoff(attempt).await,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ScimError::of(
            crate::scim::ScimErrorKind::Conflict,
            "the group is changing too fast; retry",
        ))
    }

    async fn write_group<F>(
        &self,
        ctx: &ScimCtx,
        id: &str,
        if_match: Option<&str>,
        action: &str,
        compute: F,
    ) -> Result<ScimResource, ScimError>
    where
        F: Fn(&Group, &[UserId]) -> Result<(Value, Vec<UserId>), ScimError>,
    {
        for attempt in 0..MAX_ATTEMPTS {
            let old = self.load_group(ctx, id).await?;
            check_if_match(if_match, old.version)?;
            let old_members = self.member_ids(ctx, &old.id).await?;
            let (attrs, new_members) = compute(&old, &old_members)?;
            let (added, removed, mut events) =
                membership_transition(&old.id, &old_members, &new_members);
            if attrs == old.attributes && added.is_empty() && removed.is_empty() {
                // Nothing changed, but a retry after a failed revocation lands here: bring in
                // line the users this group's recent changes named.
                self.sync_pending_members(ctx, &old.id).await?;
                return self.render_group(ctx, &old).await;
            }
            let renamed_members: Vec<UserId> =
                if attrs.get("displayName") != old.attributes.get("displayName") {
                    old_members
                        .iter()
                        .filter(|m| new_members.contains(m))
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
            self.check_members_exist(ctx, &added).await?;
            let now = self.clock.now_ms().max(old.modified_ms);
            let new = build_group(
                ctx,
                old.id.clone(),
                attrs,
                old.version + 1,
                old.created_ms,
                now,
            );
            if new.display_name != old.display_name {
                events.push(DirectoryEvent::GroupRenamed {
                    group: new.id.clone(),
                });
            }
            let summary = json!({
                "displayName": new.display_name,
                "renamed": new.display_name != old.display_name,
                "membersAdded": added.len(),
                "membersRemoved": removed.len(),
                "added": ids(&added),
                "removed": ids(&removed),
            });
            let change = Change {
                audit: self.audit(ctx, action, "Group", id, summary),
                events,
            };
            match self
                .dir
                .update_group(&new, old.version, &added, &removed, &change)
                .await
            {
                Ok(()) => {
                    self.sync_users(ctx, &removed, action, true).await?;
                    let touched: Vec<UserId> =
                        added.iter().chain(&renamed_members).cloned().collect();
                    self.sync_users(ctx, &touched, action, false).await?;
                    return self.render_group(ctx, &new).await;
                }
                Err(StoreError::VersionMismatch) if if_match.is_none() => backoff(attempt).await,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ScimError::of(
            crate::scim::ScimErrorKind::Conflict,
            "the group is changing too fast; retry",
        ))
    }

    async fn check_members_exist(
        &self,
        ctx: &ScimCtx,
        members: &[UserId],
    ) -> Result<(), ScimError> {
        if members.is_empty() {
            return Ok(());
        }
        let found: HashSet<UserId> = self
            .dir
            .existing_users(&ctx.org, members)
            .await
            .map_err(store_error)?
            .into_iter()
            .collect();
        if let Some(missing) = members.iter().find(|m| !found.contains(*m)) {
            return Err(ScimError::invalid_value(format!(
                "member {missing} is not a user of this org"
            )));
        }
        Ok(())
    }

    async fn member_ids(&self, ctx: &ScimCtx, id: &GroupId) -> Result<Vec<UserId>, ScimError> {
        let mut m = self
            .dir
            .members_of(&ctx.org, std::slice::from_ref(id))
            .await
            .map_err(store_error)?;
        Ok(m.remove(id)
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.user_id)
            .collect())
    }

    pub(super) async fn load_group(&self, ctx: &ScimCtx, id: &str) -> Result<Group, ScimError> {
        self.dir
            .get_group(&ctx.org, &GroupId::new(id))
            .await
            .map_err(store_error)?
            .ok_or_else(|| ScimError::not_found(format!("Group {id} not found")))
    }

    pub(super) async fn render_group(
        &self,
        ctx: &ScimCtx,
        group: &Group,
    ) -> Result<ScimResource, ScimError> {
        let mut members = self
            .dir
            .members_of(&ctx.org, std::slice::from_ref(&group.id))
            .await
            .map_err(store_error)?;
        let members = members.remove(&group.id).unwrap_or_default();
        Ok(ScimResource {
            body: render::group(group, &members, &ctx.base_url),
            version: group.version,
            location: render::group_location(&ctx.base_url, group),
        })
    }
}

/// Splits a normalized group into its stored attributes and its member ids (deduplicated).
fn split_members(mut doc: Value) -> (Value, Vec<UserId>) {
    let mut members = Vec::new();
    if let Some(obj) = doc.as_object_mut()
        && let Some(Value::Array(list)) = obj.remove("members")
    {
        let mut seen = HashSet::new();
        for m in list {
            if let Some(v) = m.get("value").and_then(Value::as_str)
                && seen.insert(v.to_string())
            {
                members.push(UserId::new(v));
            }
        }
    }
    (doc, members)
}

fn build_group(
    ctx: &ScimCtx,
    id: GroupId,
    attrs: Value,
    version: i64,
    created_ms: i64,
    modified_ms: i64,
) -> Group {
    let display_name = attrs
        .get("displayName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let external_id = attrs
        .get("externalId")
        .and_then(Value::as_str)
        .map(str::to_string);
    Group {
        id,
        org: ctx.org.clone(),
        display_name,
        external_id,
        attributes: attrs,
        version,
        created_ms,
        modified_ms,
    }
}

fn ids(list: &[UserId]) -> Vec<&str> {
    list.iter()
        .take(AUDIT_ID_LIMIT)
        .map(UserId::as_str)
        .collect()
}
