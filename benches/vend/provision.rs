//! Provisioning for the load runs: users created over SCIM, put in the group that grants
//! the connector, and vended once each so every later vend is warm.

use super::*;

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .expect("HTTP client")
}

/// Sends a JSON request with a bearer token and returns status and body.
pub(crate) async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
    scim: bool,
) -> Result<(u16, Value), String> {
    let mut req = http.request(method.clone(), url).bearer_auth(token);
    if let Some(b) = body {
        let ct = if scim {
            "application/scim+json"
        } else {
            "application/json"
        };
        req = req.header("content-type", ct).body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Ok((status, body))
}

pub(crate) fn expect(status: u16, want: u16, what: &str, body: &Value) -> Result<(), String> {
    if status == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want}, got {status}: {body}"))
    }
}

pub(crate) async fn create_user(
    http: &reqwest::Client,
    scim: &str,
    token: &str,
    user_name: &str,
) -> Result<String, String> {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "active": true,
        "emails": [{"value": user_name, "primary": true, "type": "work"}],
    });
    let (status, body) = call(
        http,
        reqwest::Method::POST,
        &format!("{scim}/Users"),
        token,
        Some(&body),
        true,
    )
    .await?;
    expect(status, 201, &format!("create user {user_name}"), &body)?;
    body["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("create user {user_name}: no id in {body}"))
}

pub(crate) async fn create_group(
    http: &reqwest::Client,
    scim: &str,
    token: &str,
    name: &str,
    members: &[String],
) -> Result<(), String> {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": name,
        "members": members,
    });
    let (status, body) = call(
        http,
        reqwest::Method::POST,
        &format!("{scim}/Groups"),
        token,
        Some(&body),
        true,
    )
    .await?;
    expect(status, 201, &format!("create group {name}"), &body)
}

/// Adds a user to the group named `name`, creating the group when there is none.
pub(crate) async fn join_group(
    http: &reqwest::Client,
    scim: &str,
    token: &str,
    name: &str,
    user: &str,
) -> Result<(), String> {
    let filter = format!("displayName eq \"{name}\"");
    let url = reqwest::Url::parse_with_params(&format!("{scim}/Groups"), [("filter", &filter)])
        .map_err(|e| e.to_string())?;
    let (status, body) = call(http, reqwest::Method::GET, url.as_str(), token, None, true).await?;
    expect(status, 200, &format!("find group {name}"), &body)?;
    let Some(id) = body["Resources"][0]["id"].as_str() else {
        return create_group(http, scim, token, name, &[user.to_string()]).await;
    };
    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": user}]}]
    });
    let (status, body) = call(
        http,
        reqwest::Method::PATCH,
        &format!("{scim}/Groups/{id}"),
        token,
        Some(&patch),
        true,
    )
    .await?;
    if status == 200 || status == 204 {
        Ok(())
    } else {
        Err(format!("add to group {name}: {status} {body}"))
    }
}

pub(crate) async fn vend_once(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    org: &str,
    user: &str,
    connector: &str,
) -> Result<(u16, Value), String> {
    let body = json!({"org": org, "user": {"id": user}, "connector": connector});
    call(
        http,
        reqwest::Method::POST,
        &format!("{base}/internal/v1/token"),
        key,
        Some(&body),
        false,
    )
    .await
}

// ---------------------------------------------------------------------------------------
// setup

pub(crate) async fn setup(f: &Flags) -> Result<(), String> {
    let base = f.get("base")?.trim_end_matches('/');
    let org = f.get("org")?;
    let scim_token = f.get("scim-token")?;
    let key = f.get("gateway-key")?;
    let n: usize = f.num("users", 100)?;
    let out = f.get("out")?;
    let group = f.or("group", "Engineering");
    let connector = f.or("connector", "github");
    let http = http_client();
    let scim = format!("{base}/scim/v2/{org}");

    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            create_user(
                &http,
                &scim,
                scim_token,
                &format!("vend-{i:04}@bench.example"),
            )
            .await?,
        );
    }
    create_group(&http, &scim, scim_token, group, &ids).await?;
    // One vend each: the projection is built and a token is minted and stored, so every vend
    // of the measured runs takes the warm path.
    for id in &ids {
        let (status, body) = vend_once(&http, base, key, org, id, connector).await?;
        expect(status, 200, "warm-up vend", &body)?;
        if body["access_token"].as_str().is_none_or(str::is_empty) {
            return Err(format!("warm-up vend: no access_token in {body}"));
        }
    }
    let mut file = std::fs::File::create(out).map_err(|e| format!("{out}: {e}"))?;
    for id in &ids {
        writeln!(file, "{id}").map_err(|e| format!("{out}: {e}"))?;
    }
    println!(
        "setup: {n} users in group {group}, each holding a {connector} token ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    println!("RESULT setup users={n}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// rate: open-loop client over raw HTTP/1.1 keep-alive connections
