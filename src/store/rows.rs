//! Row mapping and small SQL helpers shared by the adapter's modules.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::map_err;
use crate::domain::audit::AuditEntry;
use crate::domain::directory::{Group, User};
use crate::domain::ports::{Change, IndexedAttr, Scan, SortAttr};
use crate::domain::{GroupId, OrgId, StoreError, UserId};

/// Columns selected for a user, in the order [`user_from_row`] reads them.
pub const USER_COLUMNS: &str = "org_id, id, user_name, external_id, active, display_name, \
     email_lower, attributes, version, created_ms, modified_ms";
/// Columns selected for a group, in the order [`group_from_row`] reads them.
pub const GROUP_COLUMNS: &str =
    "org_id, id, display_name, external_id, attributes, version, created_ms, modified_ms";

fn json_col(row: &AnyRow, name: &str) -> Result<serde_json::Value, StoreError> {
    let text: String = row.try_get(name).map_err(map_err)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Internal(format!("corrupt {name}: {e}")))
}

/// Reads a user row.
pub fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        org: OrgId::new(row.try_get::<String, _>("org_id").map_err(map_err)?),
        id: UserId::new(row.try_get::<String, _>("id").map_err(map_err)?),
        user_name: row.try_get("user_name").map_err(map_err)?,
        external_id: row.try_get("external_id").map_err(map_err)?,
        active: row.try_get::<i64, _>("active").map_err(map_err)? != 0,
        display_name: row.try_get("display_name").map_err(map_err)?,
        email: row.try_get("email_lower").map_err(map_err)?,
        attributes: json_col(row, "attributes")?,
        version: row.try_get("version").map_err(map_err)?,
        created_ms: row.try_get("created_ms").map_err(map_err)?,
        modified_ms: row.try_get("modified_ms").map_err(map_err)?,
    })
}

/// Reads a group row.
pub fn group_from_row(row: &AnyRow) -> Result<Group, StoreError> {
    Ok(Group {
        org: OrgId::new(row.try_get::<String, _>("org_id").map_err(map_err)?),
        id: GroupId::new(row.try_get::<String, _>("id").map_err(map_err)?),
        display_name: row.try_get("display_name").map_err(map_err)?,
        external_id: row.try_get("external_id").map_err(map_err)?,
        attributes: json_col(row, "attributes")?,
        version: row.try_get("version").map_err(map_err)?,
        created_ms: row.try_get("created_ms").map_err(map_err)?,
        modified_ms: row.try_get("modified_ms").map_err(map_err)?,
    })
}

/// `($first, $first+1, …)` for an `IN` list of `n` parameters.
pub fn placeholders(first: usize, n: usize) -> String {
    let parts: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!("({})", parts.join(", "))
}

/// Which resource table a scan reads.
#[derive(Clone, Copy)]
pub enum Table {
    /// `scim_users`
    Users,
    /// `scim_groups`
    Groups,
}

/// The WHERE clause (after `org_id = $1`) and the ORDER BY of a scan, plus the lookup value.
pub fn scan_sql(table: Table, scan: &Scan) -> Result<(String, String, Option<String>), StoreError> {
    let (cond, value) = match (&scan.lookup, table) {
        (None, _) => (String::new(), None),
        (Some((IndexedAttr::Id, v)), _) => (" AND id = $2".to_string(), Some(v.clone())),
        (Some((IndexedAttr::ExternalId, v)), _) => {
            (" AND external_id = $2".to_string(), Some(v.clone()))
        }
        (Some((IndexedAttr::UserName, v)), Table::Users) => (
            " AND user_name_lower = $2".to_string(),
            Some(v.to_lowercase()),
        ),
        (Some((IndexedAttr::Email, v)), Table::Users) => {
            (" AND email_lower = $2".to_string(), Some(v.to_lowercase()))
        }
        (Some((IndexedAttr::DisplayName, v)), Table::Groups) => (
            " AND display_name_lower = $2".to_string(),
            Some(v.to_lowercase()),
        ),
        (Some((attr, _)), _) => {
            return Err(StoreError::Internal(format!(
                "no index for {attr:?} on this table"
            )));
        }
    };
    let name_col = match table {
        Table::Users => "user_name_lower",
        Table::Groups => "display_name_lower",
    };
    let dir = if scan.descending { "DESC" } else { "ASC" };
    let order = match scan.sort {
        SortAttr::Name => format!("{name_col} {dir}, id {dir}"),
        SortAttr::Created | SortAttr::Natural => format!("created_ms {dir}, id {dir}"),
        SortAttr::Modified => format!("modified_ms {dir}, id {dir}"),
    };
    Ok((cond, order, value))
}

/// Appends one audit record inside the caller's transaction.
pub async fn write_audit(conn: &mut sqlx::AnyConnection, a: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (org_id, at_ms, actor, action, resource_type, resource_id, summary) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(a.org.as_str())
    .bind(a.at_ms)
    .bind(a.actor.as_str())
    .bind(a.action.as_str())
    .bind(a.resource_type.as_str())
    .bind(a.resource_id.as_str())
    .bind(a.summary.to_string())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Appends a write's audit record and events inside the caller's transaction.
pub async fn write_change(
    conn: &mut sqlx::AnyConnection,
    change: &Change,
) -> Result<(), StoreError> {
    write_audit(conn, &change.audit).await?;
    let a = &change.audit;
    for ev in &change.events {
        let body = serde_json::to_string(ev).map_err(|e| StoreError::Internal(e.to_string()))?;
        sqlx::query(
            "INSERT INTO directory_events (org_id, at_ms, kind, user_id, group_id, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(a.org.as_str())
        .bind(a.at_ms)
        .bind(ev.kind())
        .bind(ev.user().map(|u| u.as_str().to_string()))
        .bind(ev.group().map(|g| g.as_str().to_string()))
        .bind(body)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    Ok(())
}
