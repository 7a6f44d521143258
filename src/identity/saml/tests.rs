use super::precheck;

const OK: &str = r#"<?xml version="1.0"?><samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" Destination="https://b/acs" InResponseTo="_r1"><saml:Issuer>x</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"><samlp:StatusCode Value="nested"/></samlp:StatusCode></samlp:Status><saml:Assertion ID="_a"/></samlp:Response>"#;

#[test]
fn the_envelope_is_read() {
    let e = precheck(OK).unwrap();
    assert_eq!(
        e.status.as_deref(),
        Some("urn:oasis:names:tc:SAML:2.0:status:Success"),
        "the top-level code, not the nested one"
    );
    assert_eq!(e.destination.as_deref(), Some("https://b/acs"));
    assert_eq!(e.in_response_to.as_deref(), Some("_r1"));
}

#[test]
fn dangerous_constructs_are_refused_before_parsing() {
    let cases = [
        OK.replace(
            "<?xml version=\"1.0\"?>",
            "<!DOCTYPE r [<!ENTITY x \"y\">]>",
        ),
        OK.replace(
            "<?xml version=\"1.0\"?>",
            "<?xml version=\"1.0\"?><?evil x?>",
        ),
        OK.replace(
            "<saml:Issuer>x</saml:Issuer>",
            "<saml:Issuer>x<!---->y</saml:Issuer>",
        ),
        OK.replace(
            "<saml:Assertion ID=\"_a\"/>",
            "<saml:Assertion ID=\"_a\"/><saml:Assertion ID=\"_b\"/>",
        ),
        OK.replace("<saml:Assertion ID=\"_a\"/>", ""),
        OK.replace("<saml:Assertion ID=\"_a\"/>", "<saml:EncryptedAssertion/>"),
        OK.replace("samlp:Response", "samlp:LogoutResponse"),
        "not xml at all <".to_string(),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert!(precheck(c).is_err(), "case {i} must be refused: {c}");
    }
    // An Assertion hidden in another element still counts.
    let wrapped = OK.replace(
        "<saml:Issuer>x</saml:Issuer>",
        "<saml:Issuer>x</saml:Issuer><samlp:Extensions><saml:Assertion ID=\"_evil\"/></samlp:Extensions>",
    );
    assert!(precheck(&wrapped).is_err());
}
