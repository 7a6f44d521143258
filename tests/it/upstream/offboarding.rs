//! Offboarding at the upstreams: a SCIM deactivation answers after the local revocation, and
//! every upstream token the person held (the grant's refresh token, the access tokens in the
//! vault) is revoked at its AS through the durable outbox, each result on the receipt; with
//! the revocation endpoint down and the broker restarted, every revocation is still
//! delivered, exactly as recorded.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{declare, eventually, setup, vend_ok};
use crate::support::{Backend, TestServer};

fn upstream_rows(receipt: &Value) -> Vec<Value> {
    receipt["upstream"].as_array().cloned().unwrap_or_default()
}

fn statuses(receipt: &Value) -> Vec<String> {
    upstream_rows(receipt)
        .iter()
        .map(|r| format!("{}/{}:{}", r["connector"], r["token_kind"], r["status"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivation_revokes_every_upstream_token_and_the_receipt_says_so() {
    let t = setup("token_exchange", json!({}), 120, 60).await;
    declare(&t.s, &t.up, "notes", "id_jag", json!({})).await;
    let exchanged = vend_ok(&t.s, &t.user, "linear").await;
    let jag = vend_ok(&t.s, &t.user, "notes").await;
    assert!(t.up.active(&exchanged).await && t.up.active(&jag).await);

    let r = t.s.okta_deactivate(&t.user).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Queued before the answer: the receipt already lists all three.
    let receipt = t.s.offboarding_of(&t.user).await.body;
    assert_eq!(upstream_rows(&receipt).len(), 3, "{receipt}");
    let done = eventually(Duration::from_secs(15), || async {
        let rows = upstream_rows(&t.s.offboarding_of(&t.user).await.body);
        rows.iter().all(|r| r["status"] == "revoked")
    })
    .await;
    let receipt = t.s.offboarding_of(&t.user).await.body;
    assert!(done, "{:?}", statuses(&receipt));
    let mut kinds = statuses(&receipt);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "\"linear\"/\"access_token\":\"revoked\"",
            "\"linear\"/\"refresh_token\":\"revoked\"",
            "\"notes\"/\"access_token\":\"revoked\"",
        ]
    );
    assert!(
        !t.up.active(&exchanged).await,
        "the exchanged token is dead at the AS"
    );
    assert!(
        !t.up.active(&jag).await,
        "the ID-JAG token is dead at the AS"
    );
    let audit = t.s.audit_of(&t.user).await.body.to_string();
    assert!(audit.contains("upstream.revocation.revoked"), "{audit}");
    let metrics = t.s.metrics_text().await;
    let sample = |series: &str| crate::support::sample(&metrics, series);
    assert_eq!(
        sample("auth_broker_upstream_revocations_total{status=\"revoked\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample("auth_broker_upstream_revocations_pending"),
        Some(0.0)
    );
    assert_eq!(
        sample("auth_broker_upstream_mints_total"),
        Some(2.0),
        "{metrics}"
    );
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_survive_a_restart_while_the_upstream_endpoint_is_down() {
    let t = setup("token_exchange", json!({}), 120, 60).await;
    let token = vend_ok(&t.s, &t.user, "linear").await;
    t.up.fault(json!({"mode": "unavailable", "path": "revocation"}))
        .await;

    let r = t.s.okta_deactivate(&t.user).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the local revocation does not wait for the AS"
    );
    let tried = eventually(Duration::from_secs(10), || async {
        upstream_rows(&t.s.offboarding_of(&t.user).await.body)
            .iter()
            .all(|r| r["attempts"].as_u64() >= Some(1) && r["status"] == "pending")
    })
    .await;
    let receipt = t.s.offboarding_of(&t.user).await.body;
    assert!(tried, "{receipt}");
    assert!(
        upstream_rows(&receipt)
            .iter()
            .all(|r| r["last_error"].as_str().is_some_and(|e| !e.is_empty())),
        "{receipt}"
    );
    assert!(
        t.up.active(&token).await,
        "not revoked while the endpoint is down"
    );

    // The broker stops; another starts on the same system of record; the AS comes back.
    let (config, up, user) = (t.config.clone(), t.up, t.user.clone());
    t.s.halt().await;
    let s = TestServer::start_with(Backend::Postgres, config).await;
    up.fault(json!({"mode": "none"})).await;
    let delivered = eventually(Duration::from_secs(30), || async {
        upstream_rows(&s.offboarding_of(&user).await.body)
            .iter()
            .all(|r| r["status"] == "revoked")
    })
    .await;
    let receipt = s.offboarding_of(&user).await.body;
    assert!(delivered, "{receipt}");
    assert!(!up.active(&token).await);
    // Exactly what the receipt records reached the AS: one revocation per row.
    let stats = up.stats().await;
    assert_eq!(
        stats["revocations"].as_u64(),
        Some(upstream_rows(&receipt).len() as u64),
        "{stats} {receipt}"
    );
    up.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connector_revokes_only_its_grant_and_a_lock_revokes_the_rest() {
    let t = setup("token_exchange", json!({}), 120, 60).await;
    // A second connector granted to another group the person is also in.
    declare(&t.s, &t.up, "notes", "token_exchange", json!({})).await;
    let acme = t.s.acme();
    let writers = acme.create_group("Writers", &[&t.user]).await;
    let r =
        t.s.admin(reqwest::Method::GET, "/admin/v1/orgs/acme/grants", None)
            .await;
    let notes_grant = r.body["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["connector"] == "notes")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r =
        t.s.admin(
            reqwest::Method::DELETE,
            &format!("/admin/v1/orgs/acme/grants/{notes_grant}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r =
        t.s.admin(
            reqwest::Method::POST,
            "/admin/v1/orgs/acme/grants",
            Some(
                json!({"group": "Writers", "connector": "notes", "scopes": ["read"],
                "actions": {"read": "allow", "write": "allow", "delete": "blocked"}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let linear = vend_ok(&t.s, &t.user, "linear").await;
    let notes = vend_ok(&t.s, &t.user, "notes").await;

    // Leaving Writers loses `notes` only: its grant and token are revoked upstream, linear's stay.
    let r = acme
        .patch(
            &format!("/Groups/{writers}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", t.user)}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let revoked = eventually(Duration::from_secs(15), || async {
        let rows = upstream_rows(&t.s.offboarding_of(&t.user).await.body);
        !rows.is_empty() && rows.iter().all(|r| r["status"] == "revoked")
    })
    .await;
    let receipt = t.s.offboarding_of(&t.user).await.body;
    assert!(revoked, "{receipt}");
    assert!(
        upstream_rows(&receipt)
            .iter()
            .all(|r| r["connector"] == "notes"),
        "only the lost connector: {receipt}"
    );
    assert!(!t.up.active(&notes).await);
    assert!(
        t.up.active(&linear).await,
        "the kept connector's token lives"
    );

    // A lock ends the rest.
    let r =
        t.s.admin(
            reqwest::Method::POST,
            &format!("/admin/v1/orgs/acme/users/{}/lock", t.user),
            Some(json!({"reason": "investigation"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let revoked = eventually(Duration::from_secs(15), || async {
        let rows = upstream_rows(&t.s.offboarding_of(&t.user).await.body);
        rows.iter().any(|r| r["connector"] == "linear")
            && rows.iter().all(|r| r["status"] == "revoked")
    })
    .await;
    assert!(revoked, "{}", t.s.offboarding_of(&t.user).await.body);
    assert!(!t.up.active(&linear).await);
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_revokes_a_grant_an_interrupted_offboarding_left_behind() {
    let mut config = super::broker_config(60).await;
    config.reconciler.sweep_interval_secs = 1;
    let t = super::setup_with(config, "token_exchange", json!({}), 120).await;
    vend_ok(&t.s, &t.user, "linear").await;
    // The person is deactivated; then a grant row is put back as an offboarding whose upstream
    // half failed would have left it (the projection already says inactive).
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&t.s.database_url)
        .await
        .unwrap();
    let saved: (String, String) =
        sqlx::query_as("SELECT sealed, scopes FROM upstream_grants WHERE user_id = $1")
            .bind(&t.user)
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(t.s.okta_deactivate(&t.user).await.status, StatusCode::OK);
    let queued = upstream_rows(&t.s.offboarding_of(&t.user).await.body).len();
    sqlx::query(
        "INSERT INTO upstream_grants (org_id, user_id, connector_id, sealed, version, status, \
         scopes, updated_ms) VALUES ('acme', $1, 'linear', $2, 9, 'active', $3, 0)",
    )
    .bind(&t.user)
    .bind(&saved.0)
    .bind(&saved.1)
    .execute(&mut c)
    .await
    .unwrap();
    // The sweep finds it and queues its revocation; the grant is gone.
    let repaired = eventually(Duration::from_secs(15), || async {
        upstream_rows(&t.s.offboarding_of(&t.user).await.body).len() == queued + 1
    })
    .await;
    assert!(repaired, "{}", t.s.offboarding_of(&t.user).await.body);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upstream_grants WHERE user_id = $1")
        .bind(&t.user)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0);
    t.up.stop().await;
    t.s.stop().await;
}
