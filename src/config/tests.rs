use super::*;

fn parse(toml: &str) -> Result<Config, String> {
    let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml));
    figment.extract::<Config>().map_err(render_figment)
}

#[test]
fn defaults_are_valid_embedded() {
    let c = Config::default();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    assert!(c.database_url().starts_with("sqlite://"));
    assert!(c.database_url().contains("auth-broker.db"));
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let err = parse("[storage]\ndatabase_urll = \"postgres://x\"\n").unwrap_err();
    assert!(err.contains("database_urll"), "{err}");
    let err = parse("[server]\nmax_body_bytes = \"big\"\n").unwrap_err();
    assert!(err.contains("server.max_body_bytes"), "{err}");
}

#[test]
fn validation_names_each_bad_key() {
    let c = parse(
        "[server]\nlisten = \"nowhere\"\n[storage]\ndatabase_url = \"mysql://x\"\n\
         [orgs.Bad_Org]\nscim_token_hashes = [\"sha256:zz\"]\n",
    )
    .unwrap();
    let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    assert!(keys.contains(&"server.listen".to_string()), "{keys:?}");
    assert!(
        keys.contains(&"storage.database_url".to_string()),
        "{keys:?}"
    );
    assert!(keys.contains(&"orgs.Bad_Org".to_string()), "{keys:?}");
    assert!(
        keys.contains(&"orgs.Bad_Org.scim_token_hashes[0]".to_string()),
        "{keys:?}"
    );
}

#[test]
fn org_without_scim_token_is_rejected() {
    let c = parse("[orgs.acme]\ndisplay_name = \"Acme\"\n").unwrap();
    let problems = c.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.key == "orgs.acme.scim_token_hashes"),
        "{problems:?}"
    );
}

#[test]
fn secret_references_resolve_to_hashes() {
    let dir = std::env::temp_dir().join(format!("ab-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "ab_scim_from_file\n").unwrap();
    let hash = crate::crypto::secret::hash_str("ab_scim_other_one");
    let c = parse(&format!(
        "[orgs.acme]\nscim_token_hashes = [\"{hash}\"]\nscim_token_file = \"{}\"\n",
        file.display()
    ))
    .unwrap();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let orgs = c.resolved_orgs().unwrap();
    assert_eq!(orgs[0].scim_tokens.len(), 2);
    assert!(orgs[0].scim_tokens[1].ct_eq(&crate::crypto::secret::hash_str("ab_scim_from_file")));

    let c = parse("[orgs.acme]\nscim_token_env = \"AUTH_BROKER_TEST_SURELY_UNSET_VAR\"\n").unwrap();
    let problems = c.validate();
    assert!(
        problems.iter().any(|p| p.key == "orgs.acme.scim_token_env"),
        "{problems:?}"
    );
}

#[test]
fn org_ids_are_url_safe() {
    assert!(valid_org_id("acme"));
    assert!(valid_org_id("acme-eu_1"));
    assert!(!valid_org_id("Acme"));
    assert!(!valid_org_id("-acme"));
    assert!(!valid_org_id("a/b"));
    assert!(!valid_org_id(""));
}
