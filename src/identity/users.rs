//! Who a verified identity is: the linked user (or one found by `externalId`, or created just
//! in time), whether that user is active, and which groups count for entitlements and admin.

use serde_json::json;

use super::{OrgSignIn, Session, SignIn, SignInError, oidc};
use crate::config::{GroupsSource, SignInConfig};
use crate::domain::ports::{IndexedAttr, Scan, SortAttr};
use crate::domain::{OrgId, UserId};
use crate::service::provisioning::ScimCtx;

impl SignIn {
    /// The user behind a verified identity, if active; applies asserted groups.
    pub(super) async fn admit(
        &self,
        org: &str,
        o: &OrgSignIn,
        identity: &oidc::Identity,
    ) -> Result<UserId, SignInError> {
        let source = o.cfg.groups_source;
        let org_id = OrgId::new(org);
        let user = self.resolve_user(&org_id, &o.cfg, identity).await?;
        let Some(u) = self.dir.get_user(&org_id, &user).await? else {
            return Err(SignInError::NotProvisioned(
                "the linked user was deleted".into(),
            ));
        };
        if !u.active {
            return Err(SignInError::UserInactive);
        }
        if source != GroupsSource::Scim {
            // With an overage the provider did not say which groups the person has: the
            // groups of earlier sign-ins stop counting (fail closed) rather than linger.
            let asserted: &[String] = if identity.groups_overage {
                &[]
            } else {
                &identity.groups
            };
            let now = self.clock.now_ms();
            let changed = self
                .identities
                .set_asserted_groups(&org_id, &user, asserted, now)
                .await?;
            if changed {
                self.access
                    .sync_user(&org_id, &user, "signin.groups", "signin:oidc")
                    .await
                    .map_err(|e| SignInError::Unavailable(e.to_string()))?;
            }
        }
        if identity.groups_overage && source == GroupsSource::Assertion {
            return Err(SignInError::GroupsOverage);
        }
        Ok(user)
    }

    /// The user an identity is: its link, else the SCIM user whose `externalId` is the
    /// subject, else (when the org allows it) a new user.
    async fn resolve_user(
        &self,
        org: &OrgId,
        cfg: &SignInConfig,
        id: &oidc::Identity,
    ) -> Result<UserId, SignInError> {
        if let Some(u) = self
            .identities
            .find_identity(org, &id.issuer, &id.subject)
            .await?
        {
            return Ok(u);
        }
        let now = self.clock.now_ms();
        let scan = Scan {
            lookup: Some((IndexedAttr::ExternalId, id.subject.clone())),
            sort: SortAttr::Natural,
            descending: false,
            offset: 0,
            limit: 2,
        };
        let page = self.dir.scan_users(org, &scan).await?;
        match page.items.as_slice() {
            [u] => {
                return Ok(self
                    .identities
                    .link_identity(org, &id.issuer, &id.subject, &u.id, now)
                    .await?);
            }
            [] => {}
            _ => {
                return Err(SignInError::NotProvisioned(
                    "several users carry this subject as externalId".into(),
                ));
            }
        }
        if !cfg.jit {
            return Err(SignInError::NotProvisioned(
                "ask your IdP admin to assign you to the broker's app (SCIM)".into(),
            ));
        }
        let user_name = id
            .preferred_username
            .clone()
            .or_else(|| id.email.clone())
            .unwrap_or_else(|| id.subject.clone());
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "externalId": id.subject,
            "active": true,
        });
        if let Some(email) = &id.email {
            body["emails"] = json!([{"value": email, "primary": true, "type": "work"}]);
        }
        if let Some(name) = &id.name {
            body["displayName"] = json!(name);
        }
        let ctx = ScimCtx {
            org: org.clone(),
            actor: "signin:jit".into(),
            base_url: format!("{}/scim/v2/{}", self.public_url, org),
        };
        let created = self
            .provisioning
            .create_user(&ctx, body)
            .await
            .map_err(|e| {
                SignInError::NotProvisioned(format!("cannot create the user: {}", e.detail))
            })?;
        let user = created.body["id"]
            .as_str()
            .map(|id| UserId::new(id.to_string()))
            .ok_or_else(|| SignInError::Unavailable("the created user has no id".into()))?;
        self.access
            .sync_user(org, &user, "signin.jit", "signin:jit")
            .await
            .map_err(|e| SignInError::Unavailable(e.to_string()))?;
        Ok(self
            .identities
            .link_identity(org, &id.issuer, &id.subject, &user, now)
            .await?)
    }

    /// Whether the session's user is, right now, active and in the org's admin group.
    pub async fn is_admin(&self, org: &str, s: &Session) -> Result<bool, SignInError> {
        let Some(admin_group) = self.orgs.get(org).and_then(|o| o.cfg.admin_group.clone()) else {
            return Ok(false);
        };
        let org_id = OrgId::new(org);
        let user = UserId::new(s.user_id.clone());
        let Some(u) = self.dir.get_user(&org_id, &user).await? else {
            return Ok(false);
        };
        if !u.active {
            return Ok(false);
        }
        Ok(self
            .groups_for_entitlements(&org_id, &user)
            .await?
            .iter()
            .any(|g| g.eq_ignore_ascii_case(&admin_group)))
    }

    /// The group names that count for the user's entitlements (per `groups_source`).
    pub async fn groups_for_entitlements(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Vec<String>, SignInError> {
        let source = self.access.groups_source(org);
        let mut out = Vec::new();
        if source != GroupsSource::Assertion {
            let mut g = self.dir.groups_of(org, std::slice::from_ref(user)).await?;
            out.extend(
                g.remove(user)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|g| g.display),
            );
        }
        if source != GroupsSource::Scim {
            out.extend(self.identities.asserted_groups(org, user).await?);
        }
        Ok(out)
    }
}
