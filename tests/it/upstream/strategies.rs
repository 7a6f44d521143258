//! The strategies that need nobody's consent: ID-JAG + `jwt-bearer` (the AS verifies the
//! assertion against the org's JWKS) and RFC 8693 token exchange (whose refresh token becomes
//! the person's grant), and how the admin API declares and validates upstreams.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{setup, vend, vend_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_jag_tokens_come_from_the_upstream_and_are_kept_in_the_vault() {
    let t = setup("id_jag", json!({}), 120, 60).await;
    let r = vend(&t.s, &t.user, "linear").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["scopes"], json!(["read", "write"]));
    let token = r.body["access_token"].as_str().unwrap().to_string();
    // The AS accepted the broker's ID-JAG for this person and this client.
    let at = t.up.token(&token).await;
    assert_eq!(at["active"], true, "{at}");
    assert_eq!(at["sub"], t.user.as_str());
    assert_eq!(at["client_id"], super::CLIENT_ID);
    assert_eq!(at["scope"], "read write");
    // Warm vends are served from the vault: one grant at the AS for many vends.
    for _ in 0..5 {
        assert_eq!(vend_ok(&t.s, &t.user, "linear").await, token);
    }
    let stats = t.up.stats().await;
    assert_eq!(stats["jwt_bearer"], 1, "{stats}");
    assert!(
        stats["token_errors"].as_object().unwrap().is_empty(),
        "{stats}"
    );
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_scopes_are_what_was_asked_entitled_and_returned() {
    let t = setup("id_jag", json!({}), 120, 60).await;
    // The AS knows `read write admin`; a connector asking for `delete` too gets what the AS
    // returned, not what it asked for.
    let r =
        t.s.admin(
            Method::POST,
            "/admin/v1/orgs/acme/connectors",
            Some(
                json!({"id": "notes", "strategy": "id_jag", "audience": "https://notes.example",
                "scopes": ["read", "write", "delete"],
                "upstream": {"issuer": t.up.issuer, "client_id": super::CLIENT_ID,
                             "client_secret": super::CLIENT_SECRET}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r =
        t.s.admin(
            Method::POST,
            "/admin/v1/orgs/acme/grants",
            Some(json!({"group": "Engineering", "connector": "notes",
                "scopes": ["read", "delete"],
                "actions": {"read": "allow", "write": "allow", "delete": "allow"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = vend(&t.s, &t.user, "notes").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["scopes"],
        json!(["read"]),
        "entitled read+delete, AS granted read"
    );
    // The narrower token is cached under what was asked, not re-minted on every vend.
    vend_ok(&t.s, &t.user, "notes").await;
    assert_eq!(t.up.stats().await["jwt_bearer"], 1);
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_keeps_the_refresh_token_and_refreshes_with_it() {
    // Access tokens live 6 s and are refreshed 3 s early: fresh for three seconds.
    let t = setup("token_exchange", json!({}), 6, 3).await;
    let first = vend_ok(&t.s, &t.user, "linear").await;
    assert_eq!(t.up.token(&first).await["sub"], t.user.as_str());
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let second = vend_ok(&t.s, &t.user, "linear").await;
    assert_ne!(first, second, "refreshed near expiry");
    assert!(t.up.active(&second).await);
    let stats = t.up.stats().await;
    assert_eq!(
        (stats["token_exchange"].clone(), stats["refreshes"].clone()),
        (json!(1), json!(1)),
        "one exchange, then the stored refresh token: {stats}"
    );
    assert_eq!(stats["reuse_detected"], 0);
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_validates_upstreams_by_key_and_never_shows_the_secret() {
    let t = setup("id_jag", json!({}), 120, 60).await;
    let post = |body: serde_json::Value| {
        let s = &t.s;
        async move {
            s.admin(Method::POST, "/admin/v1/orgs/acme/connectors", Some(body))
                .await
        }
    };
    let base = |strategy: &str, upstream: serde_json::Value| {
        json!({"id": "x", "strategy": strategy, "audience": "https://x.example",
               "scopes": ["read"], "upstream": upstream})
    };
    let cases = [
        (
            json!({"id": "x", "strategy": "id_jag", "audience": "https://x.example"}),
            "upstream:",
        ),
        (
            base(
                "broker_jwt",
                json!({"client_id": "c", "client_secret": "s",
            "issuer": "https://as.example"}),
            ),
            "upstream:",
        ),
        (
            base(
                "id_jag",
                json!({"client_id": "c", "client_secret": "s",
            "token_endpoint": "ftp://as.example/token"}),
            ),
            "upstream.token_endpoint",
        ),
        (
            base(
                "authorization_code",
                json!({"client_id": "c", "client_secret": "s",
            "token_endpoint": "https://as.example/token"}),
            ),
            "upstream.authorization_endpoint",
        ),
        (
            base(
                "token_exchange",
                json!({"client_id": "c",
            "issuer": "https://as.example"}),
            ),
            "upstream.client_secret",
        ),
        (
            base(
                "token_exchange",
                json!({"client_id": "c", "client_secret": "s",
            "issuer": "https://as.example", "id_jag_source": "idp_exchange"}),
            ),
            "upstream.id_jag_source",
        ),
        (
            base(
                "id_jag",
                json!({"client_id": "c", "client_secret": "s",
            "issuer": "https://as.example", "surprise": 1}),
            ),
            "surprise",
        ),
    ];
    for (body, key) in cases {
        let r = post(body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert!(
            r.body["detail"].as_str().unwrap_or_default().contains(key),
            "{key}: {:?}",
            r.body
        );
    }
    // Stored sealed, shown only as set; a PUT without the secret keeps it.
    let r =
        t.s.admin(Method::GET, "/admin/v1/orgs/acme/connectors/linear", None)
            .await;
    assert_eq!(
        r.body["upstream"]["client_secret_set"], true,
        "{:?}",
        r.body
    );
    assert!(!r.body.to_string().contains(super::CLIENT_SECRET));
    let mut put = r.body.clone();
    for k in ["org", "default_actions", "token_ttl_secs"] {
        put.as_object_mut().unwrap().remove(k);
    }
    let upstream = put["upstream"].as_object_mut().unwrap();
    upstream.remove("client_secret_set");
    let r =
        t.s.admin(
            Method::PUT,
            "/admin/v1/orgs/acme/connectors/linear",
            Some(put),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    vend_ok(&t.s, &t.user, "linear").await;
    // The secret is nowhere in the logs either (log_capture checks at stop).
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_refresher_renews_tokens_before_vends_need_it() {
    // Tokens live 6 s, vends refresh 3 s early, the refresher a little earlier still.
    let mut config = super::broker_config(3).await;
    config.upstream.refresher_interval_ms = 200;
    let t = super::setup_with(config, "token_exchange", json!({}), 6).await;
    let first = vend_ok(&t.s, &t.user, "linear").await;
    // The refresher's mark: a renewal stored in the vault sets the grant's next due time.
    let due = || async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&t.s.database_url)
            .await
            .unwrap();
        sqlx::query_scalar::<_, Option<i64>>("SELECT due_ms FROM upstream_grants")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    let scheduled = due().await.expect("the first vend scheduled a renewal");
    let renewed = super::eventually(Duration::from_secs(8), || async {
        due().await.is_some_and(|d| d > scheduled)
    })
    .await;
    assert!(renewed, "renewed without a vend: {}", t.up.stats().await);
    // The next vend is served from the vault: the renewed token, no call to the AS.
    let second = vend_ok(&t.s, &t.user, "linear").await;
    assert_ne!(second, first);
    assert!(t.up.active(&second).await);
    let stats = t.up.stats().await;
    assert_eq!(
        (stats["refreshes"].clone(), stats["token_exchange"].clone()),
        (json!(1), json!(1)),
        "{stats}"
    );
    // A deactivated user is not renewed any more (fail closed): the grant is gone.
    assert_eq!(t.s.okta_deactivate(&t.user).await.status, StatusCode::OK);
    let before = t.up.stats().await["refreshes"].clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(t.up.stats().await["refreshes"], before);
    t.up.stop().await;
    t.s.stop().await;
}
