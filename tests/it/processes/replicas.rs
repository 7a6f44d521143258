//! Two `auth-broker serve` processes sharing PostgreSQL and Redis see each other's
//! revocations: a deactivation on one and the kill switch on the other.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_see_each_others_revocations() {
    let d = Deployment::new().await;
    let cfg = d.config("broker", &["k1"], "k1");
    let pa = Broker::start(&cfg, &d.dir, "a").await;
    let pb = Broker::start(&cfg, &d.dir, "b").await;
    let (a, b) = (Api::new(&d, &pa), Api::new(&d, &pb));

    // A deactivation on A, seen on B.
    let ann = a.engineer("ann@processes.example").await;
    let token = a.token(&ann, "github").await;
    assert_eq!(b.token(&ann, "github").await, token, "one vault, one token");
    assert!(
        b.active(&token).await,
        "B verifies A's token before anything"
    );
    let mut b_events = b.events().await;
    let (s, body) = a.okta_deactivate(&ann).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["active"], false);
    let (s, body) = b.vend(&ann, "github").await;
    assert_eq!(s, 403, "B vends to a user A just deactivated: {body}");
    assert_eq!(body["code"], "user_inactive");
    assert!(!b.active(&token).await, "B still says the token is active");
    b_events
        .expect(
            &ann,
            &["user.deactivated", "token.revoked"],
            Duration::from_secs(5),
        )
        .await;

    // The kill switch on B, seen on A.
    let bob = b.engineer("bob@processes.example").await;
    let old = b.token(&bob, "github").await;
    assert_eq!(a.token(&bob, "github").await, old);
    assert!(a.active(&old).await);
    let mut a_events = a.events().await;
    let (s, body) = b.kill_switch(&bob).await;
    assert_eq!(s, 200, "{body}");
    assert!(
        !a.active(&old).await,
        "A still says the killed token is active"
    );
    let fresh = a.token(&bob, "github").await;
    assert_ne!(fresh, old, "A served the killed token");
    assert!(a.active(&fresh).await && b.active(&fresh).await);
    assert_eq!(b.token(&bob, "github").await, fresh);
    a_events
        .expect(&bob, &["token.revoked"], Duration::from_secs(5))
        .await;
    // And the deactivation still holds on A.
    assert_eq!(a.vend(&ann, "github").await.0, 403);

    drop((a_events, b_events));
    pa.stop(&a).await;
    pb.stop(&b).await;
    d.remove().await;
}
