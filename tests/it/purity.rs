//! The domain stays pure: no adapter or framework crate is imported under src/domain.

#[test]
fn domain_is_pure() {
    let forbidden = [
        "axum",
        "sqlx",
        "redis",
        "reqwest",
        "openidconnect",
        "samael",
        "hyper",
        "tower",
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let l = line.trim_start();
            for c in forbidden {
                assert!(
                    !(l.starts_with(&format!("use {c}")) || l.contains(&format!("{c}::"))),
                    "{} imports {c}: {line}",
                    path.display()
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "expected the domain modules, found {checked}");
}
