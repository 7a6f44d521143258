//! Token request shapes for each grant and each client authentication method, the reading
//! of token answers, and the authorization URL.

use base64::Engine;
use secrecy::ExposeSecret;

use super::*;
use crate::crypto::signing::SigningKey;

fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn authorization_code_with_client_secret_basic() {
    let a = TestAs::start().await;
    a.on("/token", Reply::token());
    let u = Upstream {
        resource: Some("https://api.example".into()),
        ..upstream(&a)
    };
    let grant = TokenGrant::AuthorizationCode {
        code: "C-1",
        redirect_uri: "https://broker/cb",
        code_verifier: "V-1",
    };
    let t = token_at(&client(), &a, &u, grant).await.unwrap();
    assert_eq!(t.access_token.expose_secret(), "AT-1");
    assert_eq!(t.refresh_token.unwrap().expose_secret(), "RT-1");
    assert_eq!(t.expires_in, Some(3600));
    assert_eq!(t.scope, Some(vec!["read".into(), "write".into()]));
    assert_eq!(t.token_type, "Bearer");
    let seen = a.last();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/token")
    );
    assert_eq!(
        seen.form(),
        form(&[
            ("grant_type", "authorization_code"),
            ("code", "C-1"),
            ("redirect_uri", "https://broker/cb"),
            ("code_verifier", "V-1"),
            ("resource", "https://api.example"),
        ])
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("broker:s3cret");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        seen.header("user-agent")
            .unwrap()
            .starts_with("auth-broker/")
    );
}

#[tokio::test]
async fn refresh_with_client_secret_post_and_scopes() {
    let a = TestAs::start().await;
    a.on("/token", Reply::token());
    let u = Upstream {
        client_auth: ClientAuth::ClientSecretPost,
        ..upstream(&a)
    };
    let scopes = vec!["read".to_string(), "write".to_string()];
    let grant = TokenGrant::RefreshToken {
        refresh_token: "RT-0",
        scopes: Some(&scopes),
    };
    token_at(&client(), &a, &u, grant).await.unwrap();
    let seen = a.last();
    assert_eq!(
        seen.form(),
        form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "RT-0"),
            ("scope", "read write"),
            ("client_id", "broker"),
            ("client_secret", "s3cret"),
        ])
    );
    assert_eq!(seen.header("authorization"), None);
}

#[tokio::test]
async fn jwt_bearer_with_private_key_jwt_signed_by_the_org_key() {
    let a = TestAs::start().await;
    a.on(
        "/token",
        Reply::json(
            200,
            json!({"access_token":"AT-J","token_type":"Bearer","expires_in":300}),
        ),
    );
    let u = Upstream {
        client_auth: ClientAuth::PrivateKeyJwt,
        ..upstream(&a)
    };
    let key = SigningKey::generate("k1");
    let auds = Mutex::new(Vec::new());
    let sign = |aud: &str| {
        auds.lock().unwrap().push(aud.to_string());
        let claims =
            client_assertion_claims("broker", aud, 1_763_716_500_000, Duration::from_secs(60));
        key.sign_jwt(JWT_TYP, &claims).unwrap()
    };
    let auth = ClientAuthn {
        client_id: "broker",
        secret: None,
        assertion: Some(&sign),
    };
    let scopes = vec!["read".to_string()];
    let grant = TokenGrant::JwtBearer {
        assertion: "ID-JAG",
        scopes: Some(&scopes),
    };
    let ep = endpoints(&a, Revocation::Rfc7009);
    let t = client().token(&u, &ep, &auth, grant).await.unwrap();
    assert!(t.refresh_token.is_none());
    assert_eq!(*auds.lock().unwrap(), [a.url("/token")]);
    let f = a.last().form();
    assert_eq!(f["grant_type"], GRANT_JWT_BEARER);
    assert_eq!(f["assertion"], "ID-JAG");
    assert_eq!(f["scope"], "read");
    assert_eq!(f["client_id"], "broker");
    assert_eq!(f["client_assertion_type"], CLIENT_ASSERTION_TYPE);
    assert_eq!(f.len(), 6, "{f:?}");
    let payload = f["client_assertion"].split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (claims["iss"].as_str(), claims["sub"].as_str()),
        (Some("broker"), Some("broker"))
    );
    assert_eq!(claims["aud"], a.url("/token"));
    assert_eq!(a.last().header("authorization"), None);
}

#[tokio::test]
async fn token_exchange_sends_every_rfc8693_field() {
    let a = TestAs::start().await;
    a.on(
        "/token",
        Reply::json(
            200,
            json!({"access_token":"AT-X","token_type":"N_A","expires_in":"600",
                   "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN, "refresh_token":"RT-X"}),
        ),
    );
    let u = upstream(&a);
    let scopes = vec!["read".to_string(), "admin".to_string()];
    let grant = TokenGrant::TokenExchange {
        subject_token: "SUBJ",
        subject_token_type: TOKEN_TYPE_JWT,
        requested_token_type: Some(TOKEN_TYPE_ACCESS_TOKEN),
        audience: Some("https://api.example"),
        scopes: Some(&scopes),
        resource: Some("https://api.example/v1"),
    };
    let t = token_at(&client(), &a, &u, grant).await.unwrap();
    assert_eq!(
        t.issued_token_type.as_deref(),
        Some(TOKEN_TYPE_ACCESS_TOKEN)
    );
    assert_eq!((t.expires_in, t.token_type.as_str()), (Some(600), "N_A"));
    assert_eq!(
        a.last().form(),
        form(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", "SUBJ"),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("requested_token_type", TOKEN_TYPE_ACCESS_TOKEN),
            ("audience", "https://api.example"),
            ("resource", "https://api.example/v1"),
            ("scope", "read admin"),
        ])
    );
}

#[tokio::test]
async fn missing_expires_in_and_refresh_token_are_none_and_comma_scopes_split() {
    let a = TestAs::start().await;
    // GitHub's shape: comma-separated scopes, `bearer`, no lifetime, no refresh token.
    a.on(
        "/token",
        Reply::json(
            200,
            json!({"access_token":"gho_x","token_type":"bearer","scope":"repo,gist"}),
        ),
    );
    let u = Upstream {
        provider: Provider::Github,
        ..upstream(&a)
    };
    let scopes = vec!["repo".to_string(), "gist".to_string()];
    let grant = TokenGrant::RefreshToken {
        refresh_token: "RT-0",
        scopes: Some(&scopes),
    };
    let t = token_at(&client(), &a, &u, grant).await.unwrap();
    assert_eq!((t.expires_in, t.refresh_token.is_none()), (None, true));
    assert_eq!(t.scope, Some(scopes.clone()));
    assert_eq!(
        a.last().form()["scope"],
        "repo,gist",
        "the preset's separator"
    );
}

#[tokio::test]
async fn missing_client_material_is_a_configuration_error_and_sends_nothing() {
    let a = TestAs::start().await;
    let ep = endpoints(&a, Revocation::Rfc7009);
    let none = ClientAuthn {
        client_id: "broker",
        secret: None,
        assertion: None,
    };
    for method in [
        ClientAuth::ClientSecretBasic,
        ClientAuth::ClientSecretPost,
        ClientAuth::PrivateKeyJwt,
    ] {
        let u = Upstream {
            client_auth: method,
            ..upstream(&a)
        };
        let e = client().token(&u, &ep, &none, REFRESH).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Config(_)), "{method:?}: {e:?}");
    }
    assert!(a.seen().is_empty());
}

#[test]
fn authorization_url_carries_pkce_state_scopes_preset_params_and_resource() {
    let u = Upstream {
        provider: Provider::Google,
        client_id: "broker id".into(),
        resource: Some("https://api.example".into()),
        ..Upstream::default()
    };
    let ep = Endpoints {
        issuer: None,
        authorization_endpoint: Some("https://accounts.example/auth?tenant=t1".parse().unwrap()),
        token_endpoint: "https://accounts.example/token".parse().unwrap(),
        revocation_endpoint: None,
        introspection_endpoint: None,
        revocation: Revocation::Rfc7009,
        sends_iss: false,
    };
    let (verifier, challenge) = pkce_pair();
    let state = random_state();
    let scopes = vec!["openid".to_string(), "drive.readonly".to_string()];
    let req = AuthorizationRequest {
        redirect_uri: "https://broker/cb",
        scopes: &scopes,
        state: &state,
        code_challenge: &challenge,
    };
    let url = client().authorization_url(&ep, &u, &req).unwrap();
    let q: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("tenant", "t1"),
        ("response_type", "code"),
        ("client_id", "broker id"),
        ("redirect_uri", "https://broker/cb"),
        ("scope", "openid drive.readonly"),
        ("state", &state),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("access_type", "offline"),
        ("prompt", "consent"),
        ("resource", "https://api.example"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(q, expected);
    assert!(!url.as_str().contains(verifier.expose_secret()));
    // Slack asks for the person's own token (`user_scope`), comma-separated; no endpoint is
    // a configuration error.
    let slack = Upstream {
        provider: Provider::Slack,
        ..u.clone()
    };
    let url = client().authorization_url(&ep, &slack, &req).unwrap();
    assert!(
        url.query_pairs()
            .any(|(k, v)| k == "user_scope" && v == "openid,drive.readonly")
    );
    let none = Endpoints {
        authorization_endpoint: None,
        ..ep
    };
    assert!(matches!(
        client().authorization_url(&none, &u, &req),
        Err(UpstreamError::Config(_))
    ));
}
