//! One conformance suite for the `Directory`, `Tenants` and `AuditLog` ports, run against the
//! SQL adapter on PostgreSQL and on SQLite alike.

use std::time::Duration;

use auth_broker::domain::audit::AuditEntry;
use auth_broker::domain::directory::{Group, User};
use auth_broker::domain::events::DirectoryEvent;
use auth_broker::domain::ports::{
    AuditLog, Change, CredentialKind, CredentialRecord, Directory, IndexedAttr, OrgRecord, Scan,
    SortAttr, Tenants,
};
use auth_broker::domain::{GroupId, OrgId, StoreError, UserId};
use auth_broker::store::{SqlOptions, SqlStore};
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, fresh_database};

/// A fresh, migrated store with the orgs `acme` and `globex` (shared by the port suites).
pub(crate) async fn store(backend: Backend) -> SqlStore {
    let (url, _) = fresh_database(backend).await;
    let s = SqlStore::connect(
        &url,
        &SqlOptions {
            max_connections: 8,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
        },
    )
    .await
    .unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
    for org in ["acme", "globex"] {
        s.upsert_org(&OrgRecord {
            id: OrgId::new(org),
            display_name: org.into(),
        })
        .await
        .unwrap();
    }
    s
}

fn user(org: &str, id: &str, name: &str, version: i64) -> User {
    User {
        id: UserId::new(id),
        org: OrgId::new(org),
        user_name: name.into(),
        external_id: Some(format!("ext-{id}")),
        active: true,
        display_name: None,
        email: Some(name.to_lowercase()),
        attributes: json!({"userName": name, "active": true}),
        version,
        created_ms: 1000 + version,
        modified_ms: 1000 + version,
    }
}

fn change(org: &str, id: &str, events: Vec<DirectoryEvent>) -> Change {
    Change {
        audit: AuditEntry {
            org: OrgId::new(org),
            at_ms: 1,
            actor: "test".into(),
            action: "test.write".into(),
            resource_type: "User".into(),
            resource_id: id.into(),
            summary: json!({}),
        },
        events,
    }
}

fn scan(lookup: Option<(IndexedAttr, &str)>) -> Scan {
    Scan {
        lookup: lookup.map(|(a, v)| (a, v.to_string())),
        sort: SortAttr::Natural,
        descending: false,
        offset: 0,
        limit: 100,
    }
}

async fn directory_port(backend: Backend) {
    let s = store(backend).await;
    let acme = OrgId::new("acme");
    let u1 = user("acme", "u1", "Ann@Example.com", 1);
    let ev = vec![DirectoryEvent::UserCreated {
        user: u1.id.clone(),
        active: true,
    }];
    s.create_user(&u1, &change("acme", "u1", ev)).await.unwrap();
    assert_eq!(s.get_user(&acme, &u1.id).await.unwrap(), Some(u1.clone()));
    assert_eq!(
        s.get_user(&OrgId::new("globex"), &u1.id).await.unwrap(),
        None
    );

    // Case-insensitive uniqueness of userName within an org, but not across orgs.
    let dup = user("acme", "u2", "ann@example.COM", 1);
    assert_eq!(
        s.create_user(&dup, &change("acme", "u2", vec![])).await,
        Err(StoreError::Conflict("userName".into()))
    );
    s.create_user(
        &user("globex", "u2", "ann@example.com", 1),
        &change("globex", "u2", vec![]),
    )
    .await
    .unwrap();

    // Index lookups.
    let by_name = s
        .scan_users(
            &acme,
            &scan(Some((IndexedAttr::UserName, "ANN@example.com"))),
        )
        .await
        .unwrap();
    assert_eq!(by_name.total, 1);
    let by_ext = s
        .scan_users(&acme, &scan(Some((IndexedAttr::ExternalId, "ext-u1"))))
        .await
        .unwrap();
    assert_eq!(by_ext.items.len(), 1);
    let by_mail = s
        .scan_users(&acme, &scan(Some((IndexedAttr::Email, "ANN@EXAMPLE.COM"))))
        .await
        .unwrap();
    assert_eq!(by_mail.items.len(), 1);

    // Compare-and-set on the version.
    let mut v2 = u1.clone();
    v2.version = 2;
    v2.active = false;
    assert_eq!(
        s.update_user(&v2, 7, &change("acme", "u1", vec![])).await,
        Err(StoreError::VersionMismatch)
    );
    s.update_user(
        &v2,
        1,
        &change(
            "acme",
            "u1",
            vec![DirectoryEvent::UserDeactivated {
                user: u1.id.clone(),
            }],
        ),
    )
    .await
    .unwrap();
    assert!(!s.get_user(&acme, &u1.id).await.unwrap().unwrap().active);
    assert_eq!(
        s.update_user(&v2, 1, &change("acme", "u1", vec![])).await,
        Err(StoreError::VersionMismatch)
    );
    let ghost = user("acme", "ghost", "ghost@x", 2);
    assert_eq!(
        s.update_user(&ghost, 1, &change("acme", "ghost", vec![]))
            .await,
        Err(StoreError::NotFound)
    );

    // Groups with a membership delta.
    let u3 = user("acme", "u3", "bo@example.com", 1);
    s.create_user(&u3, &change("acme", "u3", vec![]))
        .await
        .unwrap();
    let g = Group {
        id: GroupId::new("g1"),
        org: acme.clone(),
        display_name: "Eng".into(),
        external_id: None,
        attributes: json!({"displayName": "Eng"}),
        version: 1,
        created_ms: 5,
        modified_ms: 5,
    };
    s.create_group(
        &g,
        std::slice::from_ref(&u1.id),
        &change("acme", "g1", vec![]),
    )
    .await
    .unwrap();
    let mut g2 = g.clone();
    g2.version = 2;
    s.update_group(
        &g2,
        1,
        std::slice::from_ref(&u3.id),
        std::slice::from_ref(&u1.id),
        &change("acme", "g1", vec![]),
    )
    .await
    .unwrap();
    let members = s
        .members_of(&acme, std::slice::from_ref(&g.id))
        .await
        .unwrap();
    let ids: Vec<&str> = members[&g.id].iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(ids, vec!["u3"]);
    assert_eq!(members[&g.id][0].display, "bo@example.com");
    let groups = s
        .groups_of(&acme, std::slice::from_ref(&u3.id))
        .await
        .unwrap();
    assert_eq!(groups[&u3.id][0].display, "Eng");
    assert_eq!(
        s.update_group(&g2, 1, &[], &[], &change("acme", "g1", vec![]))
            .await,
        Err(StoreError::VersionMismatch)
    );
    let by_name = s
        .scan_groups(&acme, &scan(Some((IndexedAttr::DisplayName, "eNG"))))
        .await
        .unwrap();
    assert_eq!(by_name.total, 1);
    let existing = s
        .existing_users(
            &acme,
            &[UserId::new("u1"), UserId::new("nope"), UserId::new("u3")],
        )
        .await
        .unwrap();
    assert_eq!(existing.len(), 2);

    // Deleting a user removes its memberships; deletes are version-checked too.
    assert_eq!(
        s.delete_user(&acme, &u3.id, 9, &change("acme", "u3", vec![]))
            .await,
        Err(StoreError::VersionMismatch)
    );
    s.delete_user(&acme, &u3.id, 1, &change("acme", "u3", vec![]))
        .await
        .unwrap();
    assert!(
        !s.members_of(&acme, std::slice::from_ref(&g.id))
            .await
            .unwrap()
            .contains_key(&g.id)
    );
    assert_eq!(
        s.get_group(&acme, &g.id).await.unwrap().unwrap().version,
        3,
        "group version bumped"
    );
    s.delete_group(&acme, &g.id, 3, &change("acme", "g1", vec![]))
        .await
        .unwrap();
    assert_eq!(s.get_group(&acme, &g.id).await.unwrap(), None);

    // Paging and totals.
    for i in 0..5 {
        s.create_user(
            &user("acme", &format!("p{i}"), &format!("p{i}@x"), 1),
            &change("acme", "p", vec![]),
        )
        .await
        .unwrap();
    }
    let page = s
        .scan_users(
            &acme,
            &Scan {
                lookup: None,
                sort: SortAttr::Name,
                descending: true,
                offset: 1,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 6);
    let names: Vec<&str> = page.items.iter().map(|u| u.user_name.as_str()).collect();
    assert_eq!(names, vec!["p3@x", "p2@x"]);

    // Audit and events were written with the changes, in order, per org.
    let events = s.events_after(&acme, 0, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e.kind()).collect();
    assert_eq!(kinds, vec!["user.created", "user.deactivated"]);
    let audit = s.audit_after(&acme, 0, 1000).await.unwrap();
    assert!(audit.len() >= 10);
    assert!(audit.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(
        s.audit_after(&OrgId::new("globex"), 0, 100)
            .await
            .unwrap()
            .len()
            == 1
    );
    s.close().await;
}
both_backends!(directory_port);

async fn audit_log_is_append_only(backend: Backend) {
    let s = store(backend).await;
    s.create_user(&user("acme", "u1", "a@x", 1), &change("acme", "u1", vec![]))
        .await
        .unwrap();
    // Through a raw connection on the same database, UPDATE and DELETE are refused.
    let pool = s.clone();
    for sql in [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
    ] {
        let res = pool.raw_execute(sql).await;
        assert!(res.is_err(), "{sql} must be refused");
    }
    let audit = s.audit_after(&OrgId::new("acme"), 0, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].entry.actor, "test");
    s.close().await;
}
both_backends!(audit_log_is_append_only);

async fn credentials_and_orgs(backend: Backend) {
    let s = store(backend).await;
    let orgs = s.list_orgs().await.unwrap();
    assert_eq!(orgs.len(), 2);
    s.upsert_org(&OrgRecord {
        id: OrgId::new("acme"),
        display_name: "Acme Corp".into(),
    })
    .await
    .unwrap();
    assert_eq!(s.list_orgs().await.unwrap()[0].display_name, "Acme Corp");
    let c = CredentialRecord {
        id: "c1".into(),
        org: OrgId::new("acme"),
        kind: CredentialKind::Scim,
        name: "okta".into(),
        secret_hash: auth_broker::crypto::secret::hash_str("ab_scim_x").to_string(),
        created_ms: 1,
    };
    s.insert_credentials(
        std::slice::from_ref(&c),
        &change("acme", "c1", vec![]).audit,
    )
    .await
    .unwrap();
    // All-or-nothing: a batch with a duplicate id stores none of it.
    let mut c2 = c.clone();
    c2.id = "c2".into();
    c2.secret_hash = auth_broker::crypto::secret::hash_str("ab_scim_y").to_string();
    assert!(
        s.insert_credentials(&[c2, c.clone()], &change("acme", "c2", vec![]).audit)
            .await
            .is_err()
    );
    assert_eq!(s.list_credentials().await.unwrap(), vec![c.clone()]);
    s.close().await;
}
both_backends!(credentials_and_orgs);

/// Every credential write raises the change counter in its own transaction; a failed one does
/// not. Deletes are per org and kind, and answer `NotFound` for what is not there.
async fn credential_changes_are_counted(backend: Backend) {
    use auth_broker::domain::ports::ResourceCredentialRecord;
    let s = store(backend).await;
    let audit = |id: &str| change("acme", id, vec![]).audit;
    let v0 = s.credentials_version().await.unwrap();
    let gw = CredentialRecord {
        id: "gw-1".into(),
        org: OrgId::new("acme"),
        kind: CredentialKind::Gateway,
        name: "ci".into(),
        secret_hash: auth_broker::crypto::secret::hash_str("ab_gw_x").to_string(),
        created_ms: 1,
    };
    s.insert_credentials(std::slice::from_ref(&gw), &audit("gw-1"))
        .await
        .unwrap();
    let v1 = s.credentials_version().await.unwrap();
    assert!(v1 > v0, "{v0} -> {v1}");
    assert!(
        s.insert_credentials(std::slice::from_ref(&gw), &audit("gw-1"))
            .await
            .is_err()
    );
    assert_eq!(
        s.credentials_version().await.unwrap(),
        v1,
        "a failed write counts nothing"
    );
    // Another org or another kind does not delete it.
    assert_eq!(
        s.delete_credential(
            &OrgId::new("globex"),
            CredentialKind::Gateway,
            "gw-1",
            &audit("gw-1")
        )
        .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        s.delete_credential(
            &OrgId::new("acme"),
            CredentialKind::Admin,
            "gw-1",
            &audit("gw-1")
        )
        .await,
        Err(StoreError::NotFound)
    );
    s.delete_credential(
        &OrgId::new("acme"),
        CredentialKind::Gateway,
        "gw-1",
        &audit("gw-1"),
    )
    .await
    .unwrap();
    let v2 = s.credentials_version().await.unwrap();
    assert!(v2 > v1);
    assert!(s.list_credentials().await.unwrap().is_empty());

    let rc = ResourceCredentialRecord {
        id: "rc-1".into(),
        org: OrgId::new("acme"),
        connector: "github".into(),
        name: "github-mcp".into(),
        secret_hash: auth_broker::crypto::secret::hash_str("ab_rs_x").to_string(),
        created_ms: 2,
    };
    s.insert_resource_credential(&rc, &audit("rc-1"))
        .await
        .unwrap();
    let v3 = s.credentials_version().await.unwrap();
    assert!(v3 > v2);
    assert_eq!(s.list_resource_credentials().await.unwrap(), vec![rc]);
    assert_eq!(
        s.delete_resource_credential(&OrgId::new("acme"), "jira", "rc-1", &audit("rc-1"))
            .await,
        Err(StoreError::NotFound),
        "bound to its connector"
    );
    s.delete_resource_credential(&OrgId::new("acme"), "github", "rc-1", &audit("rc-1"))
        .await
        .unwrap();
    assert!(s.credentials_version().await.unwrap() > v3);
    assert!(s.list_resource_credentials().await.unwrap().is_empty());
    s.close().await;
}
both_backends!(credential_changes_are_counted);

async fn audit_batches_append_in_order(backend: Backend) {
    use auth_broker::domain::ports::AuditWriter;
    let s = store(backend).await;
    let entries: Vec<AuditEntry> = (0..450)
        .map(|i| {
            let mut e = change("acme", &format!("r{i}"), vec![]).audit;
            e.action = "token.vend".into();
            e
        })
        .collect();
    s.append(&entries).await.unwrap();
    let got = s.audit_after(&OrgId::new("acme"), 0, 1000).await.unwrap();
    assert_eq!(got.len(), 450);
    // Values that need escaping in bulk formats survive unchanged.
    let mut tricky = change("acme", "tab\there", vec![]).audit;
    tricky.summary = json!({"note": "a\tb\nc\\d\r", "quote": "\"x\""});
    s.append(std::slice::from_ref(&tricky)).await.unwrap();
    let last = s
        .audit_after(&OrgId::new("acme"), got[449].seq, 10)
        .await
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].entry, tricky);
    assert_eq!(got[0].entry.resource_id, "r0");
    assert_eq!(got[449].entry.resource_id, "r449");
    s.close().await;
}
both_backends!(audit_batches_append_in_order);

async fn audit_queries_filter_in_the_database(backend: Backend) {
    use auth_broker::domain::ports::AuditWriter;
    let s = store(backend).await;
    let mk = |user: &str, connector: &str, at: i64| {
        let mut e = change("acme", user, vec![]).audit;
        e.at_ms = at;
        e.summary = json!({"user_id": user, "connector": connector});
        e
    };
    s.append(&[
        mk("u1", "my_conn", 100),
        mk("u1", "myXconn", 200),
        mk("u2", "my_conn", 300),
        mk("u1", "my_conn", 400),
    ])
    .await
    .unwrap();
    let org = OrgId::new("acme");
    let by_conn = s
        .audit_query(&org, None, Some("my_conn"), None, 100)
        .await
        .unwrap();
    assert_eq!(by_conn.len(), 3, "`_` is not a wildcard");
    let by_user = s
        .audit_query(&org, Some("u1"), Some("my_conn"), None, 100)
        .await
        .unwrap();
    assert_eq!(by_user.len(), 2);
    assert!(by_user[0].seq < by_user[1].seq, "oldest first");
    let recent = s
        .audit_query(&org, Some("u1"), None, Some(150), 100)
        .await
        .unwrap();
    assert_eq!(
        recent.iter().map(|r| r.entry.at_ms).collect::<Vec<_>>(),
        vec![200, 400]
    );
    let newest = s.audit_query(&org, None, None, None, 1).await.unwrap();
    assert_eq!(newest[0].entry.at_ms, 400, "the limit keeps the newest");
    assert!(
        s.audit_query(&OrgId::new("globex"), None, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    s.close().await;
}
both_backends!(audit_queries_filter_in_the_database);
