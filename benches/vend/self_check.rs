//! What the binary checks when run without a command (as `cargo test --all-targets` does):
//! its hand-written parsers, percentiles and flags, on fixed inputs.

use super::*;

/// Checks the hand-written parts (response parser, percentiles, flags).
pub(crate) fn self_check() {
    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(
        parse_head(head).unwrap(),
        Some(Head {
            len: head.len() - 5,
            status: 200,
            content_length: 5,
            close: false
        })
    );
    assert_eq!(
        parse_head(b"HTTP/1.1 503 Service Unavailable\r\ncontent-len").unwrap(),
        None
    );
    let closing = b"HTTP/1.1 503 X\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    assert!(parse_head(closing).unwrap().unwrap().close);
    assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    let v: Vec<u64> = (1..=1000).collect();
    assert_eq!(percentile(&v, 0.5), 500);
    assert_eq!(percentile(&v, 0.99), 990);
    assert_eq!(percentile(&v, 0.999), 999);
    assert_eq!(percentile(&v, 1.0), 1000);
    assert_eq!(percentile(&[], 0.5), 0);
    assert_eq!(
        resp_command(&["GET", "k"]),
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    );
    assert_eq!(parse_resp_reply(b"$3\r\nabc\r\n$1").unwrap(), Some(9));
    assert_eq!(parse_resp_reply(b"$3\r\nab").unwrap(), None);
    assert_eq!(parse_resp_reply(b"+OK\r\n").unwrap(), Some(5));
    assert!(parse_resp_reply(b"$-1\r\n").is_err());
    assert!(parse_resp_reply(b"-ERR x\r\n").is_err());
    let req = token_request("127.0.0.1:1", "k", "o", "u", "c");
    let text = String::from_utf8(req).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("content-length: {}", body.len())));
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"org": "o", "user": {"id": "u"}, "connector": "c"})
    );
    assert_eq!(
        parse_histogram(
            "# TYPE x histogram\nauth_broker_vend_seconds_bucket{le=\"0.001\"} 7\n\
             auth_broker_vend_seconds_bucket{le=\"+Inf\"} 9\nauth_broker_vend_seconds_count 9\n"
        ),
        vec![(0.001, 7), (f64::INFINITY, 9)]
    );
    // Sent 3 late and answered 2 after; the previous exchange would have ended by 0 or by 14.
    assert_eq!(ideal_end(10, 0, 13, 15), 12);
    assert_eq!(ideal_end(10, 14, 20, 22), 16);
    let flags = Flags::parse(&["--rate".into(), "5".into()]).unwrap();
    assert_eq!(flags.num::<f64>("rate", 0.0).unwrap(), 5.0);
    assert!(Flags::parse(&["--rate".into()]).is_err());
}
