//! Okta's provisioning sequence, replayed request by request as Okta sends it.

use auth_broker::domain::OrgId;
use auth_broker::domain::events::DirectoryEvent;
use auth_broker::domain::ports::AuditLog;
use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestServer, member_ids};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn okta_sequence(backend: Backend) {
    let s = TestServer::start(backend).await;
    let okta = s.acme();

    // 1. Okta checks whether the user exists.
    let r = okta
        .get("/Users?filter=userName%20eq%20%22jane.doe%40acme.example%22&startIndex=1&count=100")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["totalResults"], 0);
    assert_eq!(r.body["Resources"], json!([]));

    // 2. Create.
    let r = okta
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "jane.doe@acme.example",
                "name": {"givenName": "Jane", "familyName": "Doe"},
                "emails": [{"primary": true, "value": "jane.doe@acme.example", "type": "work"}],
                "displayName": "Jane Doe",
                "locale": "en-US",
                "externalId": "00u1abcd",
                "groups": [],
                "password": "Okta-Sends-This-1",
                "active": true
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();

    // 3. Read back, then a profile update by full PUT (custom apps).
    assert_eq!(
        okta.get(&format!("/Users/{id}")).await.body["userName"],
        "jane.doe@acme.example"
    );
    let mut full = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": id,
        "userName": "jane.doe@acme.example",
        "name": {"givenName": "Jane", "familyName": "Doe-Smith"},
        "emails": [{"primary": true, "value": "jane.doe@acme.example", "type": "work"}],
        "displayName": "Jane Doe-Smith",
        "active": true
    });
    let r = okta.put(&format!("/Users/{id}"), full.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["name"]["familyName"], "Doe-Smith");
    assert_eq!(r.body["active"], true);

    // 4. Group push: create, add member, rename, remove member.
    let r = okta
        .post(
            "/Groups",
            json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Engineering", "members": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let gid = r.body["id"].as_str().unwrap().to_string();
    let r = okta.patch(&format!("/Groups/{gid}"), json!({"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": id, "display": "jane.doe@acme.example"}]}]})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(member_ids(&r.body), vec![id.clone()]);
    let r = okta
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"id": gid, "displayName": "Engineering-All"}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["displayName"], "Engineering-All");
    let r = okta
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{id}\"]")}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(member_ids(&r.body).is_empty());
    // Okta re-sends removals; that is a no-op, not an error.
    let r = okta
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{id}\"]")}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Put her back for the deactivation step.
    okta.patch(
        &format!("/Groups/{gid}"),
        json!({"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": id}]}]}),
    )
    .await;

    // 5. Deactivate (no-path replace), reactivate.
    let r = okta
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"active": false}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["active"], false);
    let r = okta
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"active": true}}]}),
        )
        .await;
    assert_eq!(r.body["active"], true);

    // 6. A full PUT without `active: true` deactivates.
    full.as_object_mut().unwrap().remove("active");
    let r = okta.put(&format!("/Users/{id}"), full).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["active"], false);
    let r = okta.get("/Users?filter=active+eq+false").await;
    assert_eq!(r.body["totalResults"], 1);

    // 7. Delete.
    assert_eq!(
        okta.delete(&format!("/Users/{id}")).await.status,
        StatusCode::NO_CONTENT
    );

    // The outbox holds the events the revocation machinery needs, in order.
    let store = s.store().await;
    let org = OrgId::new("acme");
    let kinds: Vec<&'static str> = store
        .events_after(&org, 0, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|(_, e)| e.user().map(|u| u.as_str()) == Some(id.as_str()))
        .map(|(_, e)| e.kind())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "user.created",
            // The full PUT carries no externalId, so the stored one is replaced by none.
            "user.renamed",
            "group.member_added",
            "group.member_removed",
            "group.member_added",
            "user.deactivated",
            "user.reactivated",
            "user.deactivated",
            "user.deleted",
        ]
    );
    let events = store.events_after(&org, 0, 1000).await.unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, DirectoryEvent::GroupRenamed { .. }))
    );

    // And every change is audited, with the credential as actor and no secret in it.
    let audit = store.audit_after(&org, 0, 1000).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.entry.action.as_str()).collect();
    assert!(actions.contains(&"scim.user.create"));
    assert!(actions.contains(&"scim.user.patch"));
    assert!(actions.contains(&"scim.user.replace"));
    assert!(actions.contains(&"scim.user.delete"));
    assert!(actions.contains(&"scim.group.patch"));
    assert!(audit.iter().all(|a| a.entry.actor == "scim:config:acme#0"));
    let dump = serde_json::to_string(&audit).unwrap();
    assert!(
        !dump.contains("Okta-Sends-This-1"),
        "audit must not hold the password"
    );
    let deact = audit
        .iter()
        .find(|a| a.entry.action == "scim.user.patch" && a.entry.summary["active"] == false)
        .expect("deactivation audited");
    assert_eq!(deact.entry.resource_id, id);
    store.close().await;
    s.stop().await;
}
both_backends!(okta_sequence);
