//! RFC 8414 discovery: which document is read, what wins, caching, and the issuer check.

use super::*;

fn generic(issuer: &str) -> Upstream {
    Upstream {
        issuer: Some(issuer.into()),
        client_id: "broker".into(),
        ..Upstream::default()
    }
}

fn metadata(issuer: &str, base: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/auth"),
        "token_endpoint": format!("{base}/token"),
        "revocation_endpoint": format!("{base}/token/revocation"),
        "introspection_endpoint": format!("{base}/token/introspection"),
    })
}

#[tokio::test]
async fn rfc8414_metadata_completes_the_endpoints_and_is_cached() {
    let a = TestAs::start().await;
    let issuer = a.url("/tenant");
    a.on(
        "/.well-known/oauth-authorization-server/tenant",
        Reply::json(200, metadata(&issuer, &a.base)),
    );
    let c = client();
    let ep = c.endpoints(&generic(&issuer)).await.unwrap();
    assert_eq!(ep.token_endpoint.as_str(), a.url("/token"));
    assert_eq!(ep.authorization_endpoint.unwrap().as_str(), a.url("/auth"));
    assert_eq!(
        ep.revocation_endpoint.unwrap().as_str(),
        a.url("/token/revocation")
    );
    assert_eq!(
        ep.introspection_endpoint.unwrap().as_str(),
        a.url("/token/introspection")
    );
    assert_eq!(
        (ep.issuer.as_deref(), &ep.revocation),
        (Some(issuer.as_str()), &Revocation::Rfc7009)
    );
    c.endpoints(&generic(&issuer)).await.unwrap();
    assert_eq!(
        a.seen().len(),
        1,
        "the second call is served from the cache"
    );
}

#[tokio::test]
async fn openid_configuration_is_the_fallback_and_explicit_endpoints_win() {
    let a = TestAs::start().await;
    let issuer = a.base.clone();
    a.on(
        "/.well-known/openid-configuration",
        Reply::json(200, metadata(&issuer, &a.base)),
    );
    let u = Upstream {
        token_endpoint: Some("https://proxy.example/token".into()),
        ..generic(&issuer)
    };
    let ep = client().endpoints(&u).await.unwrap();
    assert_eq!(ep.token_endpoint.as_str(), "https://proxy.example/token");
    assert_eq!(ep.authorization_endpoint.unwrap().as_str(), a.url("/auth"));
    let paths: Vec<String> = a.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration"
        ]
    );
}

#[tokio::test]
async fn metadata_naming_another_issuer_is_refused() {
    let a = TestAs::start().await;
    let issuer = a.base.clone();
    a.on(
        "/.well-known/oauth-authorization-server",
        Reply::json(200, metadata("https://evil.example", &a.base)),
    );
    a.on(
        "/.well-known/openid-configuration",
        Reply::json(200, metadata(&issuer, &a.base)),
    );
    let e = client().endpoints(&generic(&issuer)).await.unwrap_err();
    assert!(
        matches!(&e, UpstreamError::Config(m) if m.contains("RFC 8414")),
        "{e:?}"
    );
    assert_eq!(
        a.seen().len(),
        1,
        "no second document is tried to find one that matches"
    );
    // Even when the explicit endpoints would suffice.
    let explicit = Upstream {
        token_endpoint: Some(a.url("/token")),
        ..generic(&issuer)
    };
    assert!(matches!(
        client().endpoints(&explicit).await,
        Err(UpstreamError::Config(_))
    ));
}

#[tokio::test]
async fn a_failed_discovery_is_fatal_only_without_a_token_endpoint() {
    let a = TestAs::start().await;
    let issuer = a.base.clone();
    let c = client();
    let e = c.endpoints(&generic(&issuer)).await.unwrap_err();
    assert_eq!(e.code(), "unexpected_response", "both documents 404");
    let explicit = Upstream {
        token_endpoint: Some(a.url("/token")),
        ..generic(&issuer)
    };
    let ep = c.endpoints(&explicit).await.unwrap();
    assert_eq!(ep.revocation_endpoint, None);
    assert_eq!(a.seen().len(), 2, "the failure is remembered for a while");
    // No issuer and no token endpoint: nothing to go on.
    let bare = Upstream {
        client_id: "broker".into(),
        ..Upstream::default()
    };
    assert!(matches!(
        c.endpoints(&bare).await,
        Err(UpstreamError::Config(_))
    ));
    // Presets are not discovered.
    let google = Upstream {
        provider: Provider::Google,
        ..generic(&issuer)
    };
    let ep = c.endpoints(&google).await.unwrap();
    assert_eq!(
        ep.token_endpoint.as_str(),
        "https://oauth2.googleapis.com/token"
    );
    assert_eq!(a.seen().len(), 2);
}
