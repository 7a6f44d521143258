//! Users: the CRUD surface, filters, paging, projection, ETags, uniqueness.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestServer};

async fn user_lifecycle(backend: Backend) {
    let s = TestServer::start(backend).await;
    let acme = s.acme();
    let r = acme
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                "userName": "Ann.Lee@acme.example",
                "externalId": "ext-ann",
                "name": {"givenName": "Ann", "familyName": "Lee"},
                "emails": [{"value": "ann.lee@acme.example", "type": "work", "primary": true}],
                "active": true,
                "password": "never-stored-Secret-1",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"}
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/scim+json")
    );
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    assert_eq!(
        r.header("location"),
        Some(format!("{}/Users/{id}", s.scim("acme")))
    );
    assert_eq!(r.body["meta"]["resourceType"], "User");
    assert_eq!(r.body["meta"]["version"], "W/\"1\"");
    assert!(
        r.body.get("password").is_none(),
        "password must never be returned"
    );
    assert_eq!(
        r.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "R&D"
    );

    // GET by id, with projection.
    let r = acme
        .get(&format!("/Users/{id}?attributes=userName,name.givenName"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["userName"], "Ann.Lee@acme.example");
    assert_eq!(r.body["name"]["givenName"], "Ann");
    assert!(r.body["name"].get("familyName").is_none());
    assert!(r.body.get("emails").is_none());
    assert_eq!(r.body["id"], id.as_str());
    let r = acme
        .get(&format!("/Users/{id}?excludedAttributes=emails"))
        .await;
    assert!(r.body.get("emails").is_none());
    assert!(r.body.get("userName").is_some());

    // userName is unique per org, case-insensitively.
    let r = acme
        .post("/Users", json!({"userName": "ann.lee@ACME.example"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["scimType"], "uniqueness");
    assert_eq!(
        r.body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );

    // Filters: Okta's exact form, case-insensitive userName, externalId (case-exact).
    let r = acme
        .get("/Users?filter=userName%20eq%20%22ann.lee%40acme.example%22&startIndex=1&count=100")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());
    assert_eq!(
        r.body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:ListResponse"
    );
    let r = acme.get("/Users?filter=externalId+eq+%22ext-ann%22").await;
    assert_eq!(r.body["totalResults"], 1);
    let r = acme.get("/Users?filter=externalId+eq+%22EXT-ANN%22").await;
    assert_eq!(r.body["totalResults"], 0);
    let r = acme
        .get("/Users?filter=emails%5Btype+eq+%22work%22%5D.value+co+%22acme.example%22+and+active+eq+true")
        .await;
    assert_eq!(r.body["totalResults"], 1, "{:?}", r.body);
    let r = acme
        .get("/Users?filter=name.familyName+sw+%22L%22+and+not+(userName+eq+%22x%22)")
        .await;
    assert_eq!(r.body["totalResults"], 1, "{:?}", r.body);

    // PUT replaces; If-Match with a stale version is 412.
    let put = json!({"userName": "Ann.Lee@acme.example", "active": true, "displayName": "Ann L"});
    let r = acme
        .send_with(
            reqwest::Method::PUT,
            &format!("/Users/{id}"),
            Some(put.clone()),
            &[("if-match", "W/\"7\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = acme
        .send_with(
            reqwest::Method::PUT,
            &format!("/Users/{id}"),
            Some(put),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["displayName"], "Ann L");
    assert!(
        r.body.get("name").is_none(),
        "PUT replaces the whole resource"
    );
    assert_eq!(r.header("etag").as_deref(), Some("W/\"2\""));
    assert_eq!(r.body["active"], true);

    // A no-op PATCH does not bump the version.
    let r = acme
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "displayName", "value": "Ann L"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("etag").as_deref(), Some("W/\"2\""));

    // DELETE, then 404.
    let r = acme.delete(&format!("/Users/{id}")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = acme.get(&format!("/Users/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["status"], "404");
    let r = acme.delete(&format!("/Users/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    s.stop().await;
}
both_backends!(user_lifecycle);

async fn paging_and_sorting(backend: Backend) {
    let s = TestServer::start(backend).await;
    let acme = s.acme();
    for name in ["carol", "alice", "bob", "dave", "erin"] {
        acme.create_user(&format!("{name}@acme.example")).await;
    }
    let r = acme
        .get("/Users?sortBy=userName&startIndex=2&count=2")
        .await;
    assert_eq!(r.body["totalResults"], 5);
    assert_eq!(r.body["startIndex"], 2);
    assert_eq!(r.body["itemsPerPage"], 2);
    let names: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["bob@acme.example", "carol@acme.example"]);
    let r = acme
        .get("/Users?sortBy=userName&sortOrder=descending&count=1")
        .await;
    assert_eq!(r.body["Resources"][0]["userName"], "erin@acme.example");
    // In-memory sort on a non-indexed attribute with a filter.
    let r = acme.get("/Users?filter=not+(userName+sw+%22b%22)+and+not+(userName+sw+%22e%22)&sortBy=emails.value&count=10").await;
    let names: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "alice@acme.example",
            "carol@acme.example",
            "dave@acme.example"
        ]
    );
    // count=0 returns only the total; count is capped at max_results.
    let r = acme.get("/Users?count=0").await;
    assert_eq!(r.body["totalResults"], 5);
    assert_eq!(r.body["Resources"].as_array().map(Vec::len).unwrap_or(0), 0);
    let r = acme.get("/Users?count=999999").await;
    assert_eq!(r.body["itemsPerPage"], 5);
    // POST .search
    let r = acme
        .post(
            "/Users/.search",
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                        "filter": "userName sw \"b\"", "attributes": ["userName"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["totalResults"], 1);
    assert!(r.body["Resources"][0].get("emails").is_none());
    s.stop().await;
}
both_backends!(paging_and_sorting);

async fn discovery_documents(backend: Backend) {
    let s = TestServer::start(backend).await;
    let acme = s.acme();
    let r = acme.get("/ServiceProviderConfig").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["patch"]["supported"], true);
    assert_eq!(r.body["filter"]["maxResults"], 1000);
    assert_eq!(r.body["etag"]["supported"], true);
    let r = acme.get("/ResourceTypes").await;
    assert_eq!(r.body["totalResults"], 2);
    let r = acme.get("/ResourceTypes/User").await;
    assert_eq!(r.body["endpoint"], "/Users");
    let r = acme.get("/Schemas").await;
    let ids: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"));
    let r = acme
        .get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "Group");
    let r = acme.get("/Schemas/urn:nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    s.stop().await;
}
both_backends!(discovery_documents);
