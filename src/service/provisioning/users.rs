//! User use cases.

use serde_json::{Value, json};

use super::{
    MAX_ATTEMPTS, Provisioning, ScimCtx, ScimResource, backoff, changed_keys, check_if_match,
    render, store_error,
};
use crate::domain::directory::{ActiveDefault, User, user_fields, user_transition};
use crate::domain::ports::Change;
use crate::domain::{StoreError, UserId};
use crate::scim::patch::{self, PatchRequest};
use crate::scim::{ResourceKind, ScimError, normalize};

impl Provisioning {
    /// Loads a user and renders it.
    pub async fn get_user(&self, ctx: &ScimCtx, id: &str) -> Result<ScimResource, ScimError> {
        let user = self.load_user(ctx, id).await?;
        self.render_user(ctx, &user).await
    }

    /// POST /Users.
    pub async fn create_user(&self, ctx: &ScimCtx, body: Value) -> Result<ScimResource, ScimError> {
        let mut attrs = normalize::normalize_user(body)?;
        ensure_active(&mut attrs, ActiveDefault::Active);
        let now = self.clock.now_ms();
        let user = build_user(ctx, UserId::generate(), attrs, 1, now, now);
        let summary = json!({
            "userName": user.user_name, "active": user.active, "externalId": user.external_id,
        });
        let change = Change {
            audit: self.audit(ctx, "scim.user.create", "User", user.id.as_str(), summary),
            events: user_transition(None, Some(&user)),
        };
        self.dir
            .create_user(&user, &change)
            .await
            .map_err(store_error)?;
        self.render_user(ctx, &user).await
    }

    /// PUT /Users/{id}: full replacement; a body without `active: true` deactivates.
    pub async fn replace_user(
        &self,
        ctx: &ScimCtx,
        id: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> Result<ScimResource, ScimError> {
        let mut attrs = normalize::normalize_user(body)?;
        ensure_active(&mut attrs, ActiveDefault::Inactive);
        self.write_user(ctx, id, if_match, "scim.user.replace", |_old| {
            Ok(attrs.clone())
        })
        .await
    }

    /// PATCH /Users/{id}.
    pub async fn patch_user(
        &self,
        ctx: &ScimCtx,
        id: &str,
        req: PatchRequest,
        if_match: Option<&str>,
    ) -> Result<ScimResource, ScimError> {
        patch::validate_request(&req)?;
        let base = ctx.base_url.clone();
        self.write_user(ctx, id, if_match, "scim.user.patch", |old| {
            let mut doc = render::user(old, &[], &base);
            if let Some(obj) = doc.as_object_mut() {
                obj.remove("groups");
            }
            patch::apply(&mut doc, &req.operations, ResourceKind::User)?;
            // A patch that removes `active` leaves the user without it; the broker then treats
            // the user as inactive (fail closed) and the attribute stays absent, as asked.
            normalize::normalize_user(doc)
        })
        .await
    }

    /// DELETE /Users/{id}.
    pub async fn delete_user(
        &self,
        ctx: &ScimCtx,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ScimError> {
        for attempt in 0..MAX_ATTEMPTS {
            let old = self.load_or_converge(ctx, id).await?;
            check_if_match(if_match, old.version)?;
            let summary = json!({"userName": old.user_name});
            let change = Change {
                audit: self.audit(ctx, "scim.user.delete", "User", id, summary),
                events: user_transition(Some(&old), None),
            };
            match self
                .dir
                .delete_user(&ctx.org, &old.id, old.version, &change)
                .await
            {
                Ok(()) => {
                    self.sync_users(ctx, std::slice::from_ref(&old.id), "scim.user.delete", true)
                        .await?;
                    return Ok(());
                }
                Err(StoreError::VersionMismatch) if if_match.is_none() => backoff(attempt).await,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ScimError::of(
            crate::scim::ScimErrorKind::Conflict,
            "the user is changing too fast; retry",
        ))
    }

    async fn write_user<F>(
        &self,
        ctx: &ScimCtx,
        id: &str,
        if_match: Option<&str>,
        action: &str,
        compute: F,
    ) -> Result<ScimResource, ScimError>
    where
        F: Fn(&User) -> Result<Value, ScimError>,
    {
        for attempt in 0..MAX_ATTEMPTS {
            let old = self.load_or_converge(ctx, id).await?;
            check_if_match(if_match, old.version)?;
            let attrs = compute(&old)?;
            if attrs == old.attributes {
                // Nothing changed, but a retry after a failed revocation lands here: converge.
                self.sync_users(ctx, std::slice::from_ref(&old.id), action, false)
                    .await?;
                return self.render_user(ctx, &old).await;
            }
            let now = self.clock.now_ms().max(old.modified_ms);
            let new = build_user(
                ctx,
                old.id.clone(),
                attrs,
                old.version + 1,
                old.created_ms,
                now,
            );
            let summary = json!({
                "changed": changed_keys(&old.attributes, &new.attributes),
                "active": new.active,
            });
            let change = Change {
                audit: self.audit(ctx, action, "User", id, summary),
                events: user_transition(Some(&old), Some(&new)),
            };
            match self.dir.update_user(&new, old.version, &change).await {
                Ok(()) => {
                    let deactivated = old.active && !new.active;
                    self.sync_users(ctx, std::slice::from_ref(&new.id), action, deactivated)
                        .await?;
                    return self.render_user(ctx, &new).await;
                }
                Err(StoreError::VersionMismatch) if if_match.is_none() => backoff(attempt).await,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ScimError::of(
            crate::scim::ScimErrorKind::Conflict,
            "the user is changing too fast; retry",
        ))
    }

    /// As `load_user`, for writes: an unknown user is answered 404 only once no access of
    /// that id is left in force. A DELETE retried after its revocation failed lands here, and
    /// completes it.
    async fn load_or_converge(&self, ctx: &ScimCtx, id: &str) -> Result<User, ScimError> {
        let missing = match self.load_user(ctx, id).await {
            Err(e) if e.kind == crate::scim::ScimErrorKind::NotFound => e,
            other => return other,
        };
        // Ids a vault key cannot hold were never given access.
        if !id.is_empty() && !id.contains(['{', '}']) {
            self.sync_users(ctx, &[UserId::new(id)], "scim.user.missing", false)
                .await?;
        }
        Err(missing)
    }

    pub(super) async fn load_user(&self, ctx: &ScimCtx, id: &str) -> Result<User, ScimError> {
        self.dir
            .get_user(&ctx.org, &UserId::new(id))
            .await
            .map_err(store_error)?
            .ok_or_else(|| ScimError::not_found(format!("User {id} not found")))
    }

    pub(super) async fn render_user(
        &self,
        ctx: &ScimCtx,
        user: &User,
    ) -> Result<ScimResource, ScimError> {
        let mut groups = self
            .dir
            .groups_of(&ctx.org, std::slice::from_ref(&user.id))
            .await
            .map_err(store_error)?;
        let groups = groups.remove(&user.id).unwrap_or_default();
        Ok(ScimResource {
            body: render::user(user, &groups, &ctx.base_url),
            version: user.version,
            location: render::user_location(&ctx.base_url, user),
        })
    }
}

/// Makes `active` explicit in the stored document, so later patches see what is in force.
fn ensure_active(attrs: &mut Value, missing: ActiveDefault) {
    if let Some(obj) = attrs.as_object_mut()
        && !matches!(obj.get("active"), Some(Value::Bool(_)))
    {
        obj.insert(
            "active".into(),
            Value::Bool(missing == ActiveDefault::Active),
        );
    }
}

fn build_user(
    ctx: &ScimCtx,
    id: UserId,
    attrs: Value,
    version: i64,
    created_ms: i64,
    modified_ms: i64,
) -> User {
    let (user_name, external_id, active, display_name, email) =
        user_fields(&attrs, ActiveDefault::Inactive);
    User {
        id,
        org: ctx.org.clone(),
        user_name,
        external_id,
        active,
        display_name,
        email,
        attributes: attrs,
        version,
        created_ms,
        modified_ms,
    }
}
