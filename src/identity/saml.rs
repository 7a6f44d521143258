//! The SAML 2.0 service provider for one org: SP metadata, the AuthnRequest (HTTP-Redirect
//! binding) and the ACS (HTTP-POST binding), validated strictly.
//!
//! `samael` verifies signatures with xmlsec against the pinned certificates only (a
//! certificate carried in the message is never used), with our algorithm allow-list, then
//! keeps only what the signatures cover (the defence against signature wrapping). It checks
//! the issuer, `NotBefore`/`NotOnOrAfter` with our skew, the bearer confirmation's
//! `Recipient` and `InResponseTo`. What it leaves to us, and this module does:
//! - before any parsing: the size cap, no DOCTYPE (XXE, entity expansion), no processing
//!   instruction, no comment (comment injection into a signed NameID);
//! - on the envelope, which may be unsigned: exactly one `Assertion` and no
//!   `EncryptedAssertion`, a `Success` status, `Destination` equal to our ACS, `InResponseTo`
//!   equal to the request this browser started;
//! - on the verified assertion: an `AudienceRestriction` naming our entity id is required
//!   (samael checks it only when present).
//!
//! Encrypted assertions are refused with a clear error: the IdP must send them signed in the
//! clear over TLS. IdP-initiated login is off.

use base64::Engine;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use samael::crypto::AllowedSignatureAlgorithm;
use samael::schema::Assertion;
use samael::service_provider::{ServiceProvider, ServiceProviderBuilder};

use super::SignInError;
use super::oidc::Identity;
use crate::config::SamlConfig;

const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// The attribute Entra sends instead of the groups when a user has too many (overage).
const GROUPS_LINK: &str = "http://schemas.microsoft.com/claims/groups.link";
/// Clock skew allowed on `NotBefore` and `NotOnOrAfter`.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// A verified assertion: who, and until when its ID must stay in the replay cache.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The person.
    pub identity: Identity,
    /// The assertion's ID.
    pub assertion_id: String,
    /// How long the replay cache must remember it.
    pub remember_secs: u64,
}

/// One org's SAML IdP.
pub struct SamlProvider {
    cfg: SamlConfig,
    sp: ServiceProvider,
    sp_entity_id: String,
    acs_url: String,
}

impl SamlProvider {
    /// Builds the service provider from config.
    pub fn new(cfg: SamlConfig, public_url: &str, org: &str) -> Result<Self, String> {
        let sp_entity_id = cfg
            .sp_entity_id
            .clone()
            .unwrap_or_else(|| format!("{public_url}/auth/{org}/saml/metadata"));
        let acs_url = format!("{public_url}/auth/{org}/saml/acs");
        let mut key_descriptors = String::new();
        for pem in cfg.certificates()? {
            let cert = openssl::x509::X509::from_pem(pem.as_bytes())
                .map_err(|_| "an IdP certificate is not PEM X.509".to_string())?;
            let der = cert.to_der().map_err(|e| e.to_string())?;
            key_descriptors.push_str(&format!(
                "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
                base64::engine::general_purpose::STANDARD.encode(der)
            ));
        }
        if key_descriptors.is_empty() {
            return Err("no pinned IdP signing certificate".into());
        }
        let metadata = format!(
            "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{}\">\
             <md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{}\
             <md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{}\"/>\
             </md:IDPSSODescriptor></md:EntityDescriptor>",
            xml_escape(&cfg.idp_entity_id),
            key_descriptors,
            xml_escape(&cfg.idp_sso_url)
        );
        let idp_metadata: samael::metadata::EntityDescriptor =
            metadata.parse().map_err(|e| format!("IdP metadata: {e}"))?;
        let allowed = cfg
            .signature_algorithms
            .iter()
            .map(|a| algorithm(a).ok_or_else(|| format!("unknown signature algorithm {a}")))
            .collect::<Result<Vec<_>, _>>()?;
        let sp = ServiceProviderBuilder::default()
            .entity_id(sp_entity_id.clone())
            .metadata_url(sp_entity_id.clone())
            .acs_url(acs_url.clone())
            .slo_url(None::<String>)
            .idp_metadata(idp_metadata)
            .allow_idp_initiated(false)
            .max_clock_skew(chrono::Duration::seconds(CLOCK_SKEW_SECS))
            .max_issue_delay(chrono::Duration::seconds(300))
            .allowed_signature_algorithms(Some(allowed))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            cfg,
            sp,
            sp_entity_id,
            acs_url,
        })
    }

    /// The IdP's entity id.
    pub fn idp_entity_id(&self) -> &str {
        &self.cfg.idp_entity_id
    }

    /// SP metadata XML: our entity id, the ACS (HTTP-POST) and that assertions must be signed.
    /// No single logout endpoint is published: sessions end at the broker's logout.
    pub fn metadata_xml(&self) -> Result<String, SignInError> {
        Ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"{entity}\">\n\
             <md:SPSSODescriptor AuthnRequestsSigned=\"false\" WantAssertionsSigned=\"true\" protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">\n\
             <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>\n\
             <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>\n\
             <md:AssertionConsumerService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"{acs}\" index=\"0\" isDefault=\"true\"/>\n\
             </md:SPSSODescriptor>\n\
             </md:EntityDescriptor>\n",
            entity = xml_escape(&self.sp_entity_id),
            acs = xml_escape(&self.acs_url),
        ))
    }

    /// A new AuthnRequest: its ID and the redirect URL carrying it.
    pub fn authn_request(&self, relay_state: &str) -> Result<(String, String), SignInError> {
        let req = self
            .sp
            .make_authentication_request(&self.cfg.idp_sso_url)
            .map_err(|e| SignInError::Config(format!("AuthnRequest: {e}")))?;
        let url = req
            .redirect(relay_state)
            .map_err(|e| SignInError::Config(format!("AuthnRequest: {e}")))?
            .ok_or_else(|| SignInError::Config("AuthnRequest has no destination".into()))?;
        Ok((req.id, url.to_string()))
    }

    /// Validates a posted `SAMLResponse` answering `request_id`.
    pub async fn verify(&self, encoded: &str, request_id: &str) -> Result<Verified, SignInError> {
        if encoded.len() > self.cfg.max_response_bytes {
            return Err(SignInError::InvalidAssertion(
                "the SAMLResponse is larger than allowed".into(),
            ));
        }
        let compact: String = encoded
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| SignInError::InvalidAssertion("the SAMLResponse is not base64".into()))?;
        let xml = String::from_utf8(bytes)
            .map_err(|_| SignInError::InvalidAssertion("the SAMLResponse is not UTF-8".into()))?;
        let envelope = precheck(&xml)?;
        if envelope.status.as_deref() != Some(SUCCESS) {
            return Err(SignInError::InvalidAssertion(format!(
                "the IdP answered status {}",
                envelope.status.as_deref().unwrap_or("(none)")
            )));
        }
        if envelope.destination.as_deref() != Some(self.acs_url.as_str()) {
            return Err(SignInError::InvalidAssertion(
                "Destination is not this ACS".into(),
            ));
        }
        if envelope.in_response_to.as_deref() != Some(request_id) {
            return Err(SignInError::InvalidAssertion(
                "InResponseTo is not the request this browser started".into(),
            ));
        }
        let sp = self.sp.clone();
        let request_id = request_id.to_string();
        // xmlsec and libxml2 work synchronously: off the async workers.
        let assertion = tokio::task::spawn_blocking(move || {
            sp.parse_xml_response(&xml, Some(&[request_id.as_str()]))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| SignInError::Unavailable(e.to_string()))?
        .map_err(|e| SignInError::InvalidAssertion(describe(&e)))?;
        self.check_assertion(&assertion)
    }

    fn check_assertion(&self, a: &Assertion) -> Result<Verified, SignInError> {
        let conditions = a.conditions.as_ref().ok_or_else(|| {
            SignInError::InvalidAssertion("the assertion has no Conditions".into())
        })?;
        let audience_ok = conditions.audience_restrictions.as_ref().is_some_and(|rs| {
            !rs.is_empty()
                && rs
                    .iter()
                    .all(|r| r.audience.iter().any(|x| x == &self.sp_entity_id))
        });
        if !audience_ok {
            return Err(SignInError::InvalidAssertion(
                "the assertion has no AudienceRestriction naming this service provider".into(),
            ));
        }
        let now = chrono::Utc::now();
        let until = conditions
            .not_on_or_after
            .or_else(|| {
                a.subject
                    .as_ref()
                    .and_then(|s| s.subject_confirmations.as_ref())
                    .and_then(|c| {
                        c.iter()
                            .filter_map(|c| c.subject_confirmation_data.as_ref()?.not_on_or_after)
                            .max()
                    })
            })
            .ok_or_else(|| SignInError::InvalidAssertion("the assertion never expires".into()))?;
        let remember_secs = ((until - now).num_seconds() + CLOCK_SKEW_SECS).max(1) as u64;

        let attr = |name: &str| -> Vec<String> {
            a.attribute_statements
                .iter()
                .flatten()
                .flat_map(|s| s.attributes.iter())
                .filter(|at| {
                    at.name.as_deref() == Some(name) || at.friendly_name.as_deref() == Some(name)
                })
                .flat_map(|at| at.values.iter().filter_map(|v| v.value.clone()))
                .collect()
        };
        let name_id = a
            .subject
            .as_ref()
            .and_then(|s| s.name_id.as_ref())
            .map(|n| n.value.trim().to_string())
            .filter(|v| !v.is_empty());
        let subject = match &self.cfg.subject_attribute {
            Some(name) => attr(name).into_iter().next(),
            None => name_id.clone(),
        }
        .ok_or_else(|| SignInError::InvalidAssertion("the assertion names nobody".into()))?;
        let email = attr(&self.cfg.email_attribute)
            .into_iter()
            .next()
            .or_else(|| name_id.filter(|n| n.contains('@')));
        Ok(Verified {
            identity: Identity {
                issuer: self.cfg.idp_entity_id.clone(),
                subject,
                email,
                preferred_username: None,
                name: attr("displayName").into_iter().next(),
                groups: attr(&self.cfg.groups_attribute),
                // Entra replaces a long group list by a link to the Graph API.
                groups_overage: !attr(GROUPS_LINK).is_empty(),
            },
            assertion_id: a.id.clone(),
            remember_secs,
        })
    }
}

/// What the (possibly unsigned) envelope says.
#[derive(Debug, Default, PartialEq)]
pub struct Envelope {
    /// Top-level status code.
    pub status: Option<String>,
    /// `Destination`.
    pub destination: Option<String>,
    /// `InResponseTo`.
    pub in_response_to: Option<String>,
}

/// Refuses what must never reach the XML parsers, and reads the envelope.
pub fn precheck(xml: &str) -> Result<Envelope, SignInError> {
    let bad = |m: &str| SignInError::InvalidAssertion(m.to_string());
    let mut reader = quick_xml::reader::NsReader::from_str(xml);
    let mut stack: Vec<(bool, Vec<u8>)> = Vec::new(); // (in protocol ns, local name)
    let mut env = Envelope::default();
    let mut assertions = 0;
    let mut seen_root = false;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|_| bad("the SAMLResponse is not well-formed XML"))?;
        match event {
            Event::DocType(_) => return Err(bad("a DOCTYPE is not allowed")),
            Event::PI(_) => return Err(bad("processing instructions are not allowed")),
            Event::Comment(_) => return Err(bad("comments are not allowed")),
            Event::Decl(_) if seen_root => return Err(bad("misplaced XML declaration")),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_empty = matches!(event, Event::Empty(_));
                let local = e.local_name().as_ref().to_vec();
                let in_ns =
                    |want: &[u8]| matches!(ns, ResolveResult::Bound(n) if n.as_ref() == want);
                let protocol = in_ns(PROTOCOL_NS);
                if !seen_root {
                    if !(protocol && local == b"Response") {
                        return Err(bad("the document is not a samlp:Response"));
                    }
                    seen_root = true;
                    env.destination = attr(e, "Destination");
                    env.in_response_to = attr(e, "InResponseTo");
                } else if stack.is_empty() {
                    return Err(bad("more than one root element"));
                }
                if in_ns(ASSERTION_NS) && local == b"Assertion" {
                    assertions += 1;
                }
                if in_ns(ASSERTION_NS) && local == b"EncryptedAssertion" {
                    return Err(bad(
                        "encrypted assertions are not supported: turn off assertion encryption at the IdP",
                    ));
                }
                if protocol
                    && local == b"StatusCode"
                    && stack.len() == 2
                    && stack[1] == (true, b"Status".to_vec())
                {
                    env.status = attr(e, "Value");
                }
                if !is_empty {
                    stack.push((protocol, local));
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if assertions != 1 {
        return Err(bad(&format!(
            "the response must carry exactly one Assertion (found {assertions})"
        )));
    }
    Ok(env)
}

fn attr(e: &quick_xml::events::BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name).ok().flatten().and_then(|a| {
        a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .ok()
            .map(|v| v.into_owned())
    })
}

fn algorithm(name: &str) -> Option<AllowedSignatureAlgorithm> {
    Some(match name {
        "rsa-sha256" => AllowedSignatureAlgorithm::RsaSha256,
        "rsa-sha384" => AllowedSignatureAlgorithm::RsaSha384,
        "rsa-sha512" => AllowedSignatureAlgorithm::RsaSha512,
        "ecdsa-sha256" => AllowedSignatureAlgorithm::EcdsaSha256,
        "ecdsa-sha384" => AllowedSignatureAlgorithm::EcdsaSha384,
        "ecdsa-sha512" => AllowedSignatureAlgorithm::EcdsaSha512,
        _ => return None,
    })
}

/// samael's error as a short reason (it never carries the assertion).
fn describe(e: &str) -> String {
    let mut s = e.to_string();
    s.truncate(200);
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests;
