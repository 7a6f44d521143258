//! Microsoft Entra's provisioning sequence, replayed request by request as Entra sends it.

use auth_broker::domain::OrgId;
use auth_broker::domain::ports::AuditLog;
use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestServer, member_ids};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

async fn entra_sequence(backend: Backend) {
    let s = TestServer::start(backend).await;
    let entra = s.acme();

    // Entra's "Test Connection" and first lookup carry the aadOptscim062020 flag.
    let r = entra
        .get("/Users?aadOptscim062020&filter=userName+eq+%22ryan%40acme.example%22")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["totalResults"], 0);

    let r = entra
        .post(
            "/Users?aadOptscim062020",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
                "userName": "ryan@acme.example",
                "active": true,
                "displayName": "Ryan Leenay",
                "emails": [{"primary": true, "type": "work", "value": "Ryan@acme.example"}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "Ryan Leenay", "familyName": "Leenay", "givenName": "Ryan"},
                "title": "Engineer",
                ENTERPRISE: {"department": "Platform", "employeeNumber": "701984"}
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();

    let r = entra
        .get("/Users?filter=externalId+eq+%220a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef%22")
        .await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());

    // Attribute updates the way Entra phrases them.
    let r = entra
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ryan.l@acme.example"},
        {"op": "Replace", "path": "name.givenName", "value": "Ry"},
        {"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": "mgr-1"},
        {"op": "Replace", "path": "displayName", "value": "Ry Leenay"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["emails"][0]["value"], "ryan.l@acme.example");
    assert_eq!(r.body["name"]["givenName"], "Ry");
    assert_eq!(r.body[ENTERPRISE]["manager"]["value"], "mgr-1");
    assert_eq!(r.body[ENTERPRISE]["department"], "Platform");

    // Groups: create, look up by name without members, add and remove members Entra's way.
    let r = entra
        .post(
            "/Groups",
            json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "Group1DisplayName",
        "members": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    let r = entra
        .get("/Groups?excludedAttributes=members&filter=displayName+eq+%22Group1DisplayName%22")
        .await;
    assert_eq!(r.body["totalResults"], 1);
    assert!(r.body["Resources"][0].get("members").is_none());
    let r = entra
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "Add", "path": "members", "value": [{"value": id}]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(member_ids(&r.body), vec![id.clone()]);
    let r = entra
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "Remove", "path": "members", "value": [{"value": id}]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(member_ids(&r.body).is_empty());
    entra
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "Add", "path": "members", "value": [{"value": id}]}]}),
        )
        .await;

    // Soft delete: Entra sends the boolean as a string, in any case.
    let r = entra
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "active", "value": "False"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["active"], false);
    let r = entra
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "active", "value": "true"}]}),
        )
        .await;
    assert_eq!(r.body["active"], true);
    let r = entra
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "REPLACE", "path": "active", "value": "FALSE"}]}),
        )
        .await;
    assert_eq!(r.body["active"], false);

    // Hard delete.
    assert_eq!(
        entra.delete(&format!("/Users/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    let r = entra.get(&format!("/Groups/{gid}")).await;
    assert!(member_ids(&r.body).is_empty());

    let store = s.store().await;
    let kinds: Vec<&'static str> = store
        .events_after(&OrgId::new("acme"), 0, 1000)
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
    store.close().await;
    s.stop().await;
}
both_backends!(entra_sequence);
