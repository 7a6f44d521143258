//! The deactivation benchmark: a user holding a token on each of N connectors is deactivated
//! with the Okta PATCH, the vault is checked empty when the answer arrives, and the user is
//! reactivated and re-vended; repeated.

use super::*;
use crate::provision::*;

pub(crate) async fn deactivation(f: &Flags) -> Result<(), String> {
    let base = f.get("base")?.trim_end_matches('/');
    let org = f.get("org")?;
    let scim_token = f.get("scim-token")?;
    let key = f.get("gateway-key")?;
    let redis_url = f.get("redis-url")?;
    let iterations: usize = f.num("iterations", 200)?;
    let tokens: usize = f.num("tokens", 20)?;
    let group = f.or("group", "Offboarding");
    let prefix = f.or("prefix", "svc");
    let http = http_client();
    let scim = format!("{base}/scim/v2/{org}");
    let connectors: Vec<String> = (1..=tokens).map(|i| format!("{prefix}{i:02}")).collect();

    let redis = redis::Client::open(redis_url).map_err(|e| format!("redis: {e}"))?;
    let mut redis = redis
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("redis: {e}"))?;

    let user_name = format!(
        "offboarding-{}@bench.example",
        uuid::Uuid::new_v4().simple()
    );
    let user = create_user(&http, &scim, scim_token, &user_name).await?;
    join_group(&http, &scim, scim_token, group, &user).await?;
    let vault_key = format!("ab:{{{org}/{user}}}");
    let user_url = format!("{scim}/Users/{user}");
    let patch = |active: bool| {
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": active}}]
        })
    };
    let (deactivate, reactivate) = (patch(false), patch(true));

    let (mut off, mut on, mut mint) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for round in 0..iterations {
        // The user holds one token per connector.
        for c in &connectors {
            let t = Instant::now();
            let (status, body) = vend_once(&http, base, key, org, &user, c).await?;
            mint.push(t.elapsed().as_nanos() as u64);
            expect(status, 200, &format!("round {round}: vend {c}"), &body)?;
        }
        let held = held_tokens(&mut redis, &vault_key).await?;
        if held != tokens {
            return Err(format!(
                "round {round}: the vault holds {held} tokens of the user, expected {tokens}"
            ));
        }

        let (took, status, body) = timed_patch(&http, &user_url, scim_token, &deactivate).await?;
        off.push(took);
        expect(status, 200, &format!("round {round}: deactivate"), &body)?;
        let held = held_tokens(&mut redis, &vault_key).await?;
        if held != 0 {
            return Err(format!(
                "round {round}: {held} tokens still in the vault after the deactivation answered"
            ));
        }
        let (status, body) = vend_once(&http, base, key, org, &user, &connectors[0]).await?;
        if status != 403 || body["code"] != "user_inactive" {
            return Err(format!(
                "round {round}: vend after deactivation gave {status} {body}"
            ));
        }

        let (took, status, body) = timed_patch(&http, &user_url, scim_token, &reactivate).await?;
        on.push(took);
        expect(status, 200, &format!("round {round}: reactivate"), &body)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut slowest: Vec<(u64, usize)> = off.iter().copied().zip(0..).collect();
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    let slowest: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|(t, round)| format!("round {round} {:.1} ms", ms(*t)))
        .collect();
    for v in [&mut off, &mut on, &mut mint] {
        v.sort_unstable();
    }
    let line = |name: &str, v: &[u64]| {
        println!(
            "deactivation: {name}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.9)),
            ms(percentile(v, 0.99)),
            ms(v.last().copied().unwrap_or(0)),
            v.len()
        )
    };
    println!(
        "deactivation: {iterations} rounds of {tokens} vends, deactivate, check, reactivate ({secs:.1}s)"
    );
    line(
        &format!("PATCH active=false with {tokens} tokens held"),
        &off,
    );
    println!("deactivation: slowest: {}", slowest.join(", "));
    line("PATCH active=true", &on);
    line("vend after reactivation (mint + store)", &mint);
    println!(
        "RESULT deactivation rounds={iterations} tokens={tokens} p50_ms={:.3} p90_ms={:.3} \
         p99_ms={:.3} max_ms={:.3} reactivate_p50_ms={:.3} reactivate_p99_ms={:.3} \
         mint_p50_ms={:.3} mint_p99_ms={:.3}",
        ms(percentile(&off, 0.5)),
        ms(percentile(&off, 0.9)),
        ms(percentile(&off, 0.99)),
        ms(off.last().copied().unwrap_or(0)),
        ms(percentile(&on, 0.5)),
        ms(percentile(&on, 0.99)),
        ms(percentile(&mint, 0.5)),
        ms(percentile(&mint, 0.99)),
    );
    Ok(())
}

/// How many token fields the user's vault hash holds.
pub(crate) async fn held_tokens(
    redis: &mut redis::aio::MultiplexedConnection,
    vault_key: &str,
) -> Result<usize, String> {
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(vault_key)
        .query_async(redis)
        .await
        .map_err(|e| format!("redis HKEYS: {e}"))?;
    Ok(fields.iter().filter(|f| f.starts_with("t:")).count())
}

// ---------------------------------------------------------------------------------------

/// Sends one SCIM PATCH to `url`; its latency in nanoseconds, the status and the body.
async fn timed_patch(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    patch: &Value,
) -> Result<(u64, u16, Value), String> {
    let t = Instant::now();
    let (status, body) = call(http, reqwest::Method::PATCH, url, token, Some(patch), true).await?;
    Ok((t.elapsed().as_nanos() as u64, status, body))
}
