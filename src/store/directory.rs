//! The `Directory` port implemented by the SQL adapter (delegating to `users` and `groups`).

use std::collections::HashMap;

use async_trait::async_trait;

use super::{SqlStore, map_err};
use crate::domain::directory::{Group, GroupRef, Member, User};
use crate::domain::ports::{Change, Directory, Page, Scan};
use crate::domain::{GroupId, OrgId, StoreError, UserId};

#[async_trait]
impl Directory for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        Ok(())
    }
    async fn get_user(&self, org: &OrgId, id: &UserId) -> Result<Option<User>, StoreError> {
        self.user_get(org, id).await
    }
    async fn scan_users(&self, org: &OrgId, scan: &Scan) -> Result<Page<User>, StoreError> {
        self.user_scan(org, scan).await
    }
    async fn groups_of(
        &self,
        org: &OrgId,
        users: &[UserId],
    ) -> Result<HashMap<UserId, Vec<GroupRef>>, StoreError> {
        self.user_groups(org, users).await
    }
    async fn create_user(&self, user: &User, change: &Change) -> Result<(), StoreError> {
        self.user_create(user, change).await
    }
    async fn update_user(
        &self,
        user: &User,
        expected: i64,
        change: &Change,
    ) -> Result<(), StoreError> {
        self.user_update(user, expected, change).await
    }
    async fn delete_user(
        &self,
        org: &OrgId,
        id: &UserId,
        expected: i64,
        change: &Change,
    ) -> Result<(), StoreError> {
        self.user_delete(org, id, expected, change).await
    }
    async fn get_group(&self, org: &OrgId, id: &GroupId) -> Result<Option<Group>, StoreError> {
        self.group_get(org, id).await
    }
    async fn scan_groups(&self, org: &OrgId, scan: &Scan) -> Result<Page<Group>, StoreError> {
        self.group_scan(org, scan).await
    }
    async fn members_of(
        &self,
        org: &OrgId,
        groups: &[GroupId],
    ) -> Result<HashMap<GroupId, Vec<Member>>, StoreError> {
        self.group_members(org, groups).await
    }
    async fn existing_users(&self, org: &OrgId, ids: &[UserId]) -> Result<Vec<UserId>, StoreError> {
        self.users_existing(org, ids).await
    }
    async fn create_group(
        &self,
        group: &Group,
        members: &[UserId],
        change: &Change,
    ) -> Result<(), StoreError> {
        self.group_create(group, members, change).await
    }
    async fn update_group(
        &self,
        group: &Group,
        expected: i64,
        added: &[UserId],
        removed: &[UserId],
        change: &Change,
    ) -> Result<(), StoreError> {
        self.group_update(group, expected, added, removed, change)
            .await
    }
    async fn delete_group(
        &self,
        org: &OrgId,
        id: &GroupId,
        expected: i64,
        change: &Change,
    ) -> Result<(), StoreError> {
        self.group_delete(org, id, expected, change).await
    }
}
