//! The upstream declaration's rules: presets, validation messages naming the key, URLs.

use super::*;
use crate::domain::connector::Strategy;

fn generic() -> Upstream {
    Upstream {
        client_id: "broker".into(),
        client_secret: Some(vec![1]),
        ..Upstream::default()
    }
}

#[test]
fn a_preset_fills_what_the_admin_left_out_and_yields_to_what_they_gave() {
    let mut u = Upstream {
        provider: Provider::Google,
        ..generic()
    };
    let r = u.resolved();
    assert_eq!(
        r.token_endpoint.as_deref(),
        Some("https://oauth2.googleapis.com/token")
    );
    assert_eq!(
        r.preset.auth_params,
        &[("access_type", "offline"), ("prompt", "consent")]
    );
    u.token_endpoint = Some("https://proxy.example/token".into());
    assert_eq!(
        u.resolved().token_endpoint.as_deref(),
        Some("https://proxy.example/token")
    );
}

#[test]
fn providers_without_rfc7009_say_so() {
    for p in [Provider::Microsoft, Provider::Atlassian] {
        assert!(
            matches!(p.preset().revocation, Revocation::Unsupported { .. }),
            "{p:?}"
        );
    }
    assert!(matches!(
        Provider::Github.preset().revocation,
        Revocation::DeleteWithClientAuth { .. }
    ));
    assert!(matches!(
        Provider::Slack.preset().revocation,
        Revocation::BearerPost { .. }
    ));
}

#[test]
fn problems_name_the_key() {
    let keys = |u: &Upstream, s| {
        u.problems(s)
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&generic(), Strategy::AuthorizationCode),
        ["token_endpoint", "authorization_endpoint"]
    );
    let discovered = Upstream {
        issuer: Some("https://as.example".into()),
        ..generic()
    };
    assert!(keys(&discovered, Strategy::AuthorizationCode).is_empty());
    assert!(keys(&discovered, Strategy::IdJag).is_empty());
    let no_secret = Upstream {
        client_secret: None,
        ..discovered.clone()
    };
    assert_eq!(keys(&no_secret, Strategy::TokenExchange), ["client_secret"]);
    let pkjwt = Upstream {
        client_auth: ClientAuth::PrivateKeyJwt,
        ..no_secret
    };
    assert!(keys(&pkjwt, Strategy::TokenExchange).is_empty());
    let bad = Upstream {
        token_endpoint: Some("ftp://x".into()),
        timeout_ms: Some(5),
        ..discovered
    };
    assert_eq!(
        keys(&bad, Strategy::IdJag),
        ["token_endpoint", "timeout_ms"]
    );
}

#[test]
fn upstream_urls_are_plain_http_urls() {
    for good in [
        "https://as.example",
        "http://127.0.0.1:8080/token",
        "https://login.example.com/common/oauth2/v2.0/token",
    ] {
        assert!(plain_url(good), "{good}");
    }
    for bad in [
        "ftp://as.example",
        "http://",
        "http://[",
        "https://as.example?x=1",
        "https://as.example#f",
        "https://user@as.example",
        "https://as.example:123456",
        "https://as .example",
    ] {
        assert!(!plain_url(bad), "{bad}");
    }
}

#[test]
fn the_secret_is_never_serialized() {
    let v = serde_json::to_value(generic()).unwrap();
    assert_eq!(v["client_secret_set"], true);
    assert!(!v.to_string().contains("client_secret\""));
    // Nor can it be set by deserializing (the admin API seals it on the way in).
    let u: Upstream =
        serde_json::from_value(serde_json::json!({"client_id": "x", "client_secret_set": true}))
            .unwrap();
    assert_eq!(u.client_secret, None);
}
