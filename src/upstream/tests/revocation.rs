//! Each revocation method: what is sent, and how each answer becomes a receipt.

use super::*;
use crate::domain::consent::TokenKind;

async fn revoke(a: &TestAs, u: &Upstream, revocation: Revocation, token: &str) -> RevokeOutcome {
    let s = secret();
    let ep = endpoints(a, revocation);
    client()
        .revoke(u, &ep, &with_secret(&s), token, TokenKind::RefreshToken)
        .await
}

#[tokio::test]
async fn rfc7009_posts_the_token_and_its_hint_with_client_authentication() {
    let a = TestAs::start().await;
    a.on("/revoke", Reply::empty(200));
    let u = Upstream {
        client_auth: ClientAuth::ClientSecretPost,
        ..upstream(&a)
    };
    assert_eq!(
        revoke(&a, &u, Revocation::Rfc7009, "RT-9").await,
        RevokeOutcome::Revoked
    );
    let seen = a.last();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/revoke")
    );
    let f = seen.form();
    assert_eq!(f["token"], "RT-9");
    assert_eq!(f["token_type_hint"], "refresh_token");
    assert_eq!(
        (f["client_id"].as_str(), f["client_secret"].as_str()),
        ("broker", "s3cret")
    );
}

#[tokio::test]
async fn rfc7009_failures_say_whether_to_retry() {
    let a = TestAs::start().await;
    let u = upstream(&a);
    a.on(
        "/revoke",
        Reply::json(503, json!({"error":"temporarily_unavailable"})),
    );
    assert_eq!(
        revoke(&a, &u, Revocation::Rfc7009, "RT").await,
        RevokeOutcome::Failed {
            transient: true,
            error: "temporarily_unavailable".into()
        }
    );
    a.on(
        "/revoke",
        Reply::json(400, json!({"error":"unsupported_token_type"})),
    );
    assert_eq!(
        revoke(&a, &u, Revocation::Rfc7009, "RT").await,
        RevokeOutcome::Failed {
            transient: false,
            error: "unsupported_token_type".into()
        }
    );
    let slow = Upstream {
        timeout_ms: Some(100),
        ..u.clone()
    };
    a.on("/revoke", Reply::empty(200).after(Duration::from_secs(3)));
    assert_eq!(
        revoke(&a, &slow, Revocation::Rfc7009, "RT").await,
        RevokeOutcome::Failed {
            transient: true,
            error: "temporarily_unavailable".into()
        }
    );
}

#[tokio::test]
async fn without_a_revocation_endpoint_or_method_nothing_is_sent() {
    let a = TestAs::start().await;
    let u = upstream(&a);
    let s = secret();
    let mut ep = endpoints(&a, Revocation::Rfc7009);
    ep.revocation_endpoint = None;
    let out = client()
        .revoke(&u, &ep, &with_secret(&s), "RT", TokenKind::AccessToken)
        .await;
    assert_eq!(
        out,
        RevokeOutcome::Unsupported("the upstream has no revocation endpoint".into())
    );
    let why = Revocation::Unsupported {
        why: "revoke it in the provider's console".into(),
    };
    assert_eq!(
        revoke(&a, &u, why, "RT").await,
        RevokeOutcome::Unsupported("revoke it in the provider's console".into())
    );
    assert!(a.seen().is_empty());
}

#[tokio::test]
async fn github_deletes_the_app_token_with_basic_client_authentication() {
    let a = TestAs::start().await;
    let u = Upstream {
        provider: Provider::Github,
        ..upstream(&a)
    };
    let method = Revocation::DeleteWithClientAuth {
        url: a.url("/applications/{client_id}/token"),
    };
    a.on("/applications/broker/token", Reply::empty(204));
    assert_eq!(
        revoke(&a, &u, method.clone(), "gho_1").await,
        RevokeOutcome::Revoked
    );
    let seen = a.last();
    assert_eq!(seen.method, "DELETE");
    let body: Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body, json!({"access_token":"gho_1"}));
    assert_eq!(seen.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert!(seen.header("authorization").unwrap().starts_with("Basic "));
    // Already gone.
    a.on(
        "/applications/broker/token",
        Reply::json(404, json!({"message":"Not Found"})),
    );
    assert_eq!(
        revoke(&a, &u, method.clone(), "gho_1").await,
        RevokeOutcome::Revoked
    );
    a.on(
        "/applications/broker/token",
        Reply::json(422, json!({"message":"Validation Failed"})),
    );
    assert!(matches!(
        revoke(&a, &u, method, "gho_1").await,
        RevokeOutcome::Failed {
            transient: false,
            ..
        }
    ));
}

#[tokio::test]
async fn slack_revokes_with_the_token_as_bearer() {
    let a = TestAs::start().await;
    let u = Upstream {
        provider: Provider::Slack,
        ..upstream(&a)
    };
    let method = Revocation::BearerPost {
        url: a.url("/api/auth.revoke"),
    };
    a.on(
        "/api/auth.revoke",
        Reply::json(200, json!({"ok":true,"revoked":true})),
    );
    assert_eq!(
        revoke(&a, &u, method.clone(), "xoxp-1").await,
        RevokeOutcome::Revoked
    );
    let seen = a.last();
    assert_eq!(
        (seen.method.as_str(), seen.header("authorization")),
        ("POST", Some("Bearer xoxp-1"))
    );
    for dead in ["token_revoked", "invalid_auth"] {
        a.on(
            "/api/auth.revoke",
            Reply::json(200, json!({"ok":false,"error":dead})),
        );
        assert_eq!(
            revoke(&a, &u, method.clone(), "xoxp-1").await,
            RevokeOutcome::Revoked,
            "{dead}"
        );
    }
    a.on(
        "/api/auth.revoke",
        Reply::json(200, json!({"ok":false,"error":"not_allowed_token_type"})),
    );
    assert_eq!(
        revoke(&a, &u, method, "xoxp-1").await,
        RevokeOutcome::Failed {
            transient: false,
            error: "not_allowed_token_type".into()
        }
    );
}
