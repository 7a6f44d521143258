//! Concurrent writes: membership PATCHes of one group all land; a userName race has one winner.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestServer, member_ids};

async fn concurrent_membership_adds_all_land(backend: Backend) {
    let s = TestServer::start(backend).await;
    let acme = s.acme();
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(acme.create_user(&format!("c{i}@acme.example")).await);
    }
    let gid = acme.create_group("Concurrent", &[]).await;
    let mut tasks = Vec::new();
    for u in users.clone() {
        let acme = acme.clone();
        let gid = gid.clone();
        tasks.push(tokio::spawn(async move {
            acme.patch(
                &format!("/Groups/{gid}"),
                json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": u}]}]}),
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let r = acme.get(&format!("/Groups/{gid}")).await;
    users.sort();
    assert_eq!(member_ids(&r.body), users, "every concurrent add landed");
    assert_eq!(
        r.body["meta"]["version"],
        format!("W/\"{}\"", 1 + users.len())
    );
    s.stop().await;
}
both_backends!(concurrent_membership_adds_all_land);

async fn concurrent_creates_of_one_user_name(backend: Backend) {
    let s = TestServer::start(backend).await;
    let acme = s.acme();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let acme = acme.clone();
        let name = if i % 2 == 0 {
            "Race@acme.example"
        } else {
            "race@ACME.example"
        };
        tasks.push(tokio::spawn(async move {
            acme.post("/Users", json!({"userName": name, "active": true}))
                .await
                .status
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(acme.get("/Users").await.body["totalResults"], 1);
    s.stop().await;
}
both_backends!(concurrent_creates_of_one_user_name);
