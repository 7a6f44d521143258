use super::*;

fn parse(toml: &str) -> Result<Config, String> {
    let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml));
    figment.extract::<Config>().map_err(render_figment)
}

/// The keys validation names as wrong in the config `toml` parses to.
fn problem_keys(toml: &str) -> Vec<String> {
    let c = parse(toml).unwrap();
    c.validate().into_iter().map(|p| p.key).collect()
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
fn waiting_for_replicas_is_accepted_with_every_deployment() {
    for url in [
        "redis+sentinel://127.0.0.1:26379/m",
        "redis://127.0.0.1:6379",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
    ] {
        for n in [0, 1, 2] {
            let keys = problem_keys(&format!(
                "[storage]\nredis_url = \"{url}\"\nredis_wait_replicas = {n}\n\
                 [vault.keys.k1]\nenv = \"AUTH_BROKER_VAULT_KEY_K1\"\n"
            ));
            assert!(
                !keys.contains(&"storage.redis_wait_replicas".into()),
                "{url} waiting for {n}: {keys:?}"
            );
        }
    }
}

#[test]
fn idle_connections_may_not_exceed_the_pool() {
    assert!(problem_keys("[storage]\nmax_connections = 4\nmin_connections = 4\n").is_empty());
    assert_eq!(
        problem_keys("[storage]\nmax_connections = 4\nmin_connections = 5\n"),
        ["storage.min_connections"]
    );
    // Unset, it follows a smaller pool instead of refusing it.
    let c = parse("[storage]\nmax_connections = 4\n").unwrap();
    assert!(c.validate().is_empty());
    assert_eq!(c.idle_connections(), 4);
    assert_eq!(Config::default().idle_connections(), 8);
}

#[test]
fn removed_keys_are_refused_by_name() {
    for (key, line) in [
        ("server.io_threads", "io_threads = 2"),
        ("server.pin_io_threads", "pin_io_threads = false"),
        ("server.io_thread_nice", "io_thread_nice = -5"),
    ] {
        let err = parse(&format!("[server]\n{line}\n")).unwrap_err();
        assert!(
            err.starts_with(&format!("{key}: this key was removed (")),
            "{key}: {err}"
        );
    }
    // Any other unknown key keeps the generic message.
    let err = parse("[server]\nio_thread = 2\n").unwrap_err();
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn redis_tls_and_a_zero_signing_key_age_are_refused_by_key() {
    let keys = problem_keys(
        "[storage]\nredis_url = \"rediss://r:6380\"\n[vault]\nactive_key = \"k\"\n\
         [vault.keys.k]\nenv = \"AB_TEST_UNSET_KEY\"\n[broker]\nsigning_key_max_age_days = 0\n",
    );
    assert!(keys.contains(&"storage.redis_url".to_string()), "{keys:?}");
    assert!(
        keys.contains(&"broker.signing_key_max_age_days".to_string()),
        "{keys:?}"
    );
}

#[test]
fn a_signing_key_lead_shorter_than_two_reloads_is_refused_by_key() {
    let keys = problem_keys(
        "[broker]\nsigning_key_publish_lead_secs = 1\nsigning_key_poll_interval_ms = 600\n",
    );
    assert_eq!(keys, ["broker.signing_key_publish_lead_secs"]);
    let keys = problem_keys("[broker]\nsigning_key_poll_interval_ms = 50\n");
    assert_eq!(keys, ["broker.signing_key_poll_interval_ms"]);
    assert!(
        problem_keys(
            "[broker]\nsigning_key_publish_lead_secs = 1\n\
         signing_key_poll_interval_ms = 500\n"
        )
        .is_empty()
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

const ORG: &str = "[orgs.acme]\nscim_token_hashes = [\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"]\n";

fn sign_in_problems(section: &str) -> Vec<ConfigProblem> {
    let c = parse(&format!("{ORG}{section}")).unwrap();
    c.validate()
}

/// A self-signed certificate made for this test.
fn test_certificate() -> String {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "test-idp").unwrap();
    let name = name.build();
    let mut b = x509::X509Builder::new().unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

#[test]
fn oidc_refuses_none_and_hmac_algorithms() {
    let base = "[orgs.acme.sign_in.oidc]\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n";
    assert!(
        sign_in_problems(base).is_empty(),
        "{:?}",
        sign_in_problems(base)
    );
    for alg in ["none", "HS256", "HS512"] {
        let p = sign_in_problems(&format!("{base}algorithms = [\"{alg}\"]\n"));
        assert!(
            p.iter()
                .any(|p| p.key == "orgs.acme.sign_in.oidc.algorithms"),
            "{alg}: {p:?}"
        );
    }
    let p = sign_in_problems(&base.replace("https://idp.example", "http://idp.example"));
    assert!(p.iter().any(|p| p.key.ends_with("oidc.issuer")), "{p:?}");
}

#[test]
fn saml_requires_a_pinned_certificate_and_strong_algorithms() {
    let base = "[orgs.acme.sign_in.saml]\nidp_entity_id = \"https://idp.example\"\nidp_sso_url = \"https://idp.example/sso\"\n";
    let p = sign_in_problems(base);
    assert!(
        p.iter()
            .any(|p| p.key.ends_with("saml.idp_certificates") && p.message.contains("pin")),
        "an IdP without a pinned certificate is refused: {p:?}"
    );
    let cert = test_certificate();
    let pinned = format!("{base}idp_certificates = [\"\"\"{cert}\"\"\"]\n");
    assert!(
        sign_in_problems(&pinned).is_empty(),
        "{:?}",
        sign_in_problems(&pinned)
    );
    let p = sign_in_problems(&format!("{pinned}signature_algorithms = [\"rsa-sha1\"]\n"));
    assert!(
        p.iter()
            .any(|p| p.key.ends_with("saml.signature_algorithms")),
        "{p:?}"
    );
    let p = sign_in_problems(&format!(
        "{base}idp_certificates = [\"not a certificate\"]\n"
    ));
    assert!(p.iter().any(|p| p.message.contains("X.509")), "{p:?}");
    let both = format!(
        "{pinned}[orgs.acme.sign_in.oidc]\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n"
    );
    assert!(
        sign_in_problems(&both)
            .iter()
            .any(|p| p.message.contains("exactly one of oidc or saml")),
        "{:?}",
        sign_in_problems(&both)
    );
}

#[test]
fn broker_issuer_is_the_base_of_the_org_issuers() {
    for ok in [
        "https://broker.example",
        "https://broker.example/",
        "http://10.0.0.1:8080/ab",
    ] {
        let keys = problem_keys(&format!("[broker]\nissuer = \"{ok}\"\n"));
        assert!(
            !keys.contains(&"broker.issuer".to_string()),
            "{ok}: {keys:?}"
        );
    }
    for bad in [
        "broker.example",
        "https://broker.example/orgs/acme",
        "https://broker.example?x=1",
        "https://broker.example#f",
    ] {
        let keys = problem_keys(&format!("[broker]\nissuer = \"{bad}\"\n"));
        assert!(
            keys.contains(&"broker.issuer".to_string()),
            "{bad}: {keys:?}"
        );
    }
}

#[test]
fn idp_exchange_needs_oidc_sign_in_in_the_same_org() {
    let connector = "[orgs.acme.connectors.jag]\nstrategy = \"id_jag\"\naudience = \"https://a.example\"\n\
        [orgs.acme.connectors.jag.upstream]\nissuer = \"https://as.example\"\nclient_id = \"c\"\n\
        client_secret_env = \"S\"\nid_jag_source = \"idp_exchange\"\n";
    let key = "orgs.acme.connectors.jag.upstream.id_jag_source";
    let p = sign_in_problems(connector);
    assert!(p.iter().any(|p| p.key == key), "{p:?}");
    let oidc = "[orgs.acme.sign_in.oidc]\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n";
    let p = sign_in_problems(&format!("{oidc}{connector}"));
    assert!(!p.iter().any(|p| p.key == key), "{p:?}");
    // Only id_jag connectors take their assertion from the IdP.
    let p = sign_in_problems(&format!(
        "{oidc}{}",
        connector.replace("\"id_jag\"", "\"token_exchange\"")
    ));
    assert!(p.iter().any(|p| p.key == key), "{p:?}");
}
