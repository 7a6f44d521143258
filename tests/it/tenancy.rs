//! Tenant isolation: tokens are bound to their org; ids never cross orgs.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, Scim, TestServer};

async fn orgs_are_isolated(backend: Backend) {
    let s = TestServer::start(backend).await;
    let acme = s.acme();
    let globex = s.globex();
    let a = acme.create_user("same@example.com").await;
    // The same userName may exist in another org.
    let g = globex.create_user("same@example.com").await;
    assert_ne!(a, g);

    // Org A's token on org B's endpoint: 401 with a SCIM error body.
    let cross = Scim {
        base: s.scim("globex"),
        ..acme.clone()
    };
    let r = cross.get("/Users").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"scim\"")
    );

    // Org B's id under org A: 404, for every verb.
    assert_eq!(
        acme.get(&format!("/Users/{g}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        acme.delete(&format!("/Users/{g}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        acme.put(
            &format!("/Users/{g}"),
            json!({"userName": "x@acme.example", "active": true})
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        globex.get(&format!("/Users/{g}")).await.status,
        StatusCode::OK
    );
    // A group in org A cannot take org B's user as a member.
    let r = acme
        .post(
            "/Groups",
            json!({"displayName": "X", "members": [{"value": g}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Listing shows only the org's own users.
    assert_eq!(acme.get("/Users").await.body["totalResults"], 1);

    // Missing, malformed and wrong tokens; unknown org.
    let no_token = s
        .http
        .get(format!("{}/Users", s.scim("acme")))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let basic = s
        .http
        .get(format!("{}/Users", s.scim("acme")))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let wrong = Scim {
        token: "ab_scim_wrong".into(),
        ..acme.clone()
    };
    assert_eq!(wrong.get("/Users").await.status, StatusCode::UNAUTHORIZED);
    let unknown = Scim {
        base: s.scim("initech"),
        ..acme.clone()
    };
    assert_eq!(unknown.get("/Users").await.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}
both_backends!(orgs_are_isolated);
