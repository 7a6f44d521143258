//! The interleavings property (`crate::interleavings`) across two real `auth-broker serve`
//! processes sharing PostgreSQL and Redis.

use super::*;
use crate::interleavings::{Size, Target, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleavings_across_two_processes() {
    let d = Deployment::new().await;
    let cfg = d.config("broker", &["k1"], "k1");
    let pa = Broker::start(&cfg, &d.dir, "a").await;
    let pb = Broker::start(&cfg, &d.dir, "b").await;
    let (a, b) = (Api::new(&d, &pa), Api::new(&d, &pb));
    let target = Target {
        bases: vec![a.base.clone(), b.base.clone()],
        org: d.org.clone(),
        scim: d.scim_token.clone(),
        gateway: d.gateway_key.clone(),
        admin: d.admin_key.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    };
    run(
        &target,
        Size {
            users: 8,
            rounds: 6,
            streams: 3,
            ops: 10,
        },
    )
    .await;
    pa.stop(&a).await;
    pb.stop(&b).await;
    d.remove().await;
}
