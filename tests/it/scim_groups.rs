//! Groups: membership by `members[].value`, PATCH add/remove, rename, delete, filters.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestServer, member_ids};

async fn group_membership(backend: Backend) {
    let s = TestServer::start(backend).await;
    let acme = s.acme();
    let a = acme.create_user("a@acme.example").await;
    let b = acme.create_user("b@acme.example").await;
    let gid = acme.create_group("Engineering", &[&a]).await;

    let r = acme.get(&format!("/Groups/{gid}")).await;
    assert_eq!(member_ids(&r.body), vec![a.clone()]);
    assert_eq!(r.body["members"][0]["type"], "User");
    assert!(
        r.body["members"][0]["$ref"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/Users/{a}"))
    );
    // The user shows the group in its read-only `groups`.
    let r = acme.get(&format!("/Users/{a}")).await;
    assert_eq!(r.body["groups"][0]["value"], gid.as_str());
    assert_eq!(r.body["groups"][0]["display"], "Engineering");

    // Filters Entra uses to check membership.
    let f = format!(
        "/Groups?filter=id+eq+%22{gid}%22+and+members+eq+%22{b}%22&excludedAttributes=members"
    );
    assert_eq!(acme.get(&f).await.body["totalResults"], 0);
    let r = acme
        .patch(
            &format!("/Groups/{gid}"),
            json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": b}]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(member_ids(&r.body), expected);
    let r = acme.get(&f).await;
    assert_eq!(r.body["totalResults"], 1);
    assert!(r.body["Resources"][0].get("members").is_none());
    let r = acme
        .get("/Groups?filter=displayName+eq+%22engineering%22")
        .await;
    assert_eq!(r.body["totalResults"], 1);

    // A member that is not a user of this org is rejected and nothing changes.
    let r = acme
        .patch(
            &format!("/Groups/{gid}"),
            json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": "no-such-user"}]},
                           {"op": "replace", "path": "displayName", "value": "Renamed"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["scimType"], "invalidValue");
    let r = acme.get(&format!("/Groups/{gid}")).await;
    assert_eq!(r.body["displayName"], "Engineering");
    assert_eq!(member_ids(&r.body), expected);

    // Deleting a user drops it from groups and bumps the group's version.
    let before = r.body["meta"]["version"].clone();
    assert_eq!(
        acme.delete(&format!("/Users/{b}")).await.status,
        StatusCode::NO_CONTENT
    );
    let r = acme.get(&format!("/Groups/{gid}")).await;
    assert_eq!(member_ids(&r.body), vec![a.clone()]);
    assert_ne!(r.body["meta"]["version"], before);

    // PUT replaces the member list.
    let r = acme
        .put(
            &format!("/Groups/{gid}"),
            json!({"displayName": "Engineering", "members": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(member_ids(&r.body).is_empty());

    assert_eq!(
        acme.delete(&format!("/Groups/{gid}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        acme.get(&format!("/Groups/{gid}")).await.status,
        StatusCode::NOT_FOUND
    );
    // The user still exists and has no groups.
    let r = acme.get(&format!("/Users/{a}")).await;
    assert!(
        r.body.get("groups").is_none_or(|g| g == &json!([])),
        "{:?}",
        r.body
    );
    s.stop().await;
}
both_backends!(group_membership);

async fn group_delete_records_member_removals(backend: Backend) {
    use auth_broker::domain::OrgId;
    use auth_broker::domain::events::DirectoryEvent;
    use auth_broker::domain::ports::AuditLog;
    let s = TestServer::start(backend).await;
    let acme = s.acme();
    let a = acme.create_user("a@acme.example").await;
    let gid = acme.create_group("Sales", &[&a]).await;
    assert_eq!(
        acme.delete(&format!("/Groups/{gid}")).await.status,
        StatusCode::NO_CONTENT
    );
    let store = s.store().await;
    let events: Vec<DirectoryEvent> = store
        .events_after(&OrgId::new("acme"), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        events.iter().any(
            |e| matches!(e, DirectoryEvent::MembershipRemoved { user, .. } if user.as_str() == a)
        ),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DirectoryEvent::GroupDeleted { .. }))
    );
    store.close().await;
    s.stop().await;
}
both_backends!(group_delete_records_member_removals);
