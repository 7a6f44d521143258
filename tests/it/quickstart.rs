//! The README's quickstart, run as written, so that the README cannot rot.
//!
//! The binary starts on the embedded default as `scripts/run.sh` starts it; the variables
//! the README tells the reader to set come from what that first start printed. Then every
//! ` ```sh ` block of the README's "Quickstart" section runs, in order, in one `bash` session
//! with `set -euo pipefail`: a command that fails fails the test, naming the block. A block
//! followed by a fence whose info string ends in `output` (` ```json output `) must print
//! that text, compared with runs of whitespace collapsed and `…` matching anything.

use std::time::Duration;

use crate::cli::{Running, temp_dir, value_of};

const README: &str = include_str!("../../README.md");

/// A command block and the output the README says it prints, if it says.
#[derive(Debug)]
struct Step {
    script: String,
    output: Option<String>,
}

/// The `sh` blocks of the "Quickstart" section, each with the output block that follows it.
fn steps(readme: &str) -> Vec<Step> {
    let section: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim() != "## Quickstart")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect();
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = section.into_iter();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let body = body.join("\n");
        if info.trim() == "sh" {
            steps.push(Step {
                script: body,
                output: None,
            });
        } else if info.split_whitespace().last() == Some("output") {
            let last = steps
                .last_mut()
                .expect("an output block follows a command block");
            assert!(last.output.is_none(), "two output blocks for one command");
            last.output = Some(body);
        }
    }
    steps
}

/// `actual` matches `expected` when, whitespace runs collapsed, it holds the text between
/// `expected`'s `…` in order, starting with its first piece and ending with its last.
fn matches(expected: &str, actual: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let (expected, actual) = (norm(expected), norm(actual));
    let pieces: Vec<&str> = expected.split('…').map(str::trim).collect();
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if pieces.len() == 1 {
        return actual == first;
    }
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn output_patterns_match_as_documented() {
    assert!(matches("{ \"a\": 1 }", "{\n  \"a\": 1\n}"));
    assert!(matches(
        "{ \"t\": \"…\", \"e\": … }",
        "{ \"t\": \"eyJ.x\", \"e\": 17 }"
    ));
    assert!(!matches(
        "{ \"t\": \"…\", \"e\": 2 }",
        "{ \"t\": \"x\", \"e\": 17 }"
    ));
    assert!(!matches("403", "200"));
    assert!(matches("…403", "{\"code\":\"user_inactive\"}\n403"));
}

#[test]
fn the_readme_has_a_quickstart_that_walks_the_whole_lifecycle() {
    let steps = steps(README);
    let all: String = steps.iter().map(|s| s.script.as_str()).collect();
    // Each step of the lifecycle, as the commands spell it.
    for part in [
        "/admin/v1/orgs/default/",
        "connectors",
        "grants",
        "/scim/v2/default/",
        "Users",
        "Groups",
        "/internal/v1/",
        "token",
        "authorize",
        "\"active\": false",
        "offboarding",
    ] {
        assert!(all.contains(part), "the quickstart never uses {part}");
    }
    assert!(
        steps.iter().filter(|s| s.output.is_some()).count() >= 4,
        "the quickstart shows what its commands print"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_runs_as_written() {
    let steps = steps(README);
    assert!(!steps.is_empty(), "README.md has no Quickstart commands");
    let dir = temp_dir();
    let broker = Running::start(&dir, &[]);
    let banner = broker.banner();
    let scim_url = value_of(&banner, "SCIM base URL:").expect("first start prints the SCIM URL");
    let base = scim_url
        .strip_suffix("/scim/v2/default")
        .expect("the embedded default's org is `default`")
        .to_string();
    let secret =
        |label: &str| value_of(&banner, label).unwrap_or_else(|| panic!("{label} in {banner:?}"));

    let mut script = String::from("set -euo pipefail\n");
    for (i, step) in steps.iter().enumerate() {
        script.push_str(&format!("printf '\\n@@step {i}@@\\n'\n{}\n", step.script));
    }
    script.push_str("printf '\\n@@end@@\\n'\n");
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .env("BROKER", &base)
        .env("ADMIN_KEY", secret("admin key:"))
        .env("GATEWAY_KEY", secret("gateway key:"))
        .env("SCIM_TOKEN", secret("SCIM token:"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the quickstart finishes within a minute")
        .expect("bash runs");
    broker.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // What each step printed, by the markers between them.
    let mut printed: Vec<String> = vec![String::new(); steps.len()];
    let mut current: Option<usize> = None;
    let mut ended = false;
    for line in stdout.lines() {
        if let Some(n) = line
            .strip_prefix("@@step ")
            .and_then(|r| r.strip_suffix("@@"))
        {
            current = n.parse().ok();
        } else if line == "@@end@@" {
            ended = true;
        } else if let Some(i) = current {
            printed[i].push_str(line);
            printed[i].push('\n');
        }
    }
    if !out.status.success() || !ended {
        let i = current.unwrap_or(0);
        panic!(
            "README quickstart step {} failed ({}):\n--- command\n{}\n--- printed\n{}\n--- stderr\n{}",
            i + 1,
            out.status,
            steps[i].script,
            printed[i],
            stderr
        );
    }
    for (i, step) in steps.iter().enumerate() {
        if let Some(expected) = &step.output {
            assert!(
                matches(expected, &printed[i]),
                "README quickstart step {}:\n--- command\n{}\n--- the README says it prints\n{}\n--- it printed\n{}",
                i + 1,
                step.script,
                expected,
                printed[i]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
