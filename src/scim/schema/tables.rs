//! The attribute tables of the User, Group and Enterprise User schemas (RFC 7643 §3.1, §4,
//! §8.7.1), with the common attributes `id`, `externalId` and `meta` leading each core table.

use super::{AttrDef, Mutability, Returned, Uniqueness};

const IMMUTABLE: Mutability = Mutability::Immutable;

/// `id`: assigned by the broker, always returned (RFC 7643 §3.1).
const ID: AttrDef = AttrDef::string("id")
    .desc("Unique identifier of the resource, assigned by the service provider.")
    .case_exact()
    .read_only()
    .returned(Returned::Always)
    .unique(Uniqueness::Server);

/// `externalId`: the identity provider's own identifier for the resource.
const EXTERNAL_ID: AttrDef = AttrDef::string("externalId")
    .desc("Identifier of the resource as defined by the provisioning client.")
    .case_exact();

/// `meta` sub-attributes (RFC 7643 §3.1).
const META_SUBS: &[AttrDef] = &[
    AttrDef::string("resourceType")
        .desc("Name of the resource type of the resource.")
        .case_exact()
        .read_only(),
    AttrDef::new("created", super::AttrType::DateTime)
        .desc("When the resource was added to the service provider.")
        .read_only(),
    AttrDef::new("lastModified", super::AttrType::DateTime)
        .desc("When the resource was last updated.")
        .read_only(),
    AttrDef::reference("location", &["uri"])
        .desc("URI of the resource being returned.")
        .case_exact()
        .read_only(),
    AttrDef::string("version")
        .desc("Version (entity tag) of the resource.")
        .case_exact()
        .read_only(),
];

/// `meta`: resource metadata maintained by the broker.
const META: AttrDef = AttrDef::complex("meta", META_SUBS)
    .desc("Resource metadata maintained by the service provider.")
    .read_only();

const NAME_SUBS: &[AttrDef] = &[
    AttrDef::string("formatted").desc("Full name, formatted for display."),
    AttrDef::string("familyName").desc("Family name, or last name in most Western languages."),
    AttrDef::string("givenName").desc("Given name, or first name in most Western languages."),
    AttrDef::string("middleName").desc("Middle name(s)."),
    AttrDef::string("honorificPrefix").desc("Honorific prefix(es), or title (e.g. 'Ms.')."),
    AttrDef::string("honorificSuffix").desc("Honorific suffix(es) (e.g. 'III')."),
];

/// The usual sub-attributes of a multi-valued attribute (RFC 7643 §2.4) with a string `value`.
macro_rules! plural_subs {
    ($what:literal, [$($canon:literal),*]) => {
        &[
            AttrDef::string("value").desc(concat!("The ", $what, " value.")),
            AttrDef::string("display").desc("Human-readable name, primarily for display."),
            AttrDef::string("type")
                .desc(concat!("Label indicating the ", $what, "'s function."))
                .canonical(&[$($canon),*]),
            AttrDef::boolean("primary")
                .desc(concat!("Whether this is the preferred ", $what, "; at most one is.")),
        ]
    };
}

const EMAIL_SUBS: &[AttrDef] = plural_subs!("email address", ["work", "home", "other"]);
const PHONE_SUBS: &[AttrDef] = plural_subs!(
    "phone number",
    ["work", "home", "mobile", "fax", "pager", "other"]
);
const IM_SUBS: &[AttrDef] = plural_subs!(
    "instant messaging address",
    ["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]
);
const ENTITLEMENT_SUBS: &[AttrDef] = plural_subs!("entitlement", []);
const ROLE_SUBS: &[AttrDef] = plural_subs!("role", []);

const PHOTO_SUBS: &[AttrDef] = &[
    AttrDef::reference("value", &["external"]).desc("URL of the image."),
    AttrDef::string("display").desc("Human-readable name, primarily for display."),
    AttrDef::string("type")
        .desc("Label indicating the photo's function.")
        .canonical(&["photo", "thumbnail"]),
    AttrDef::boolean("primary").desc("Whether this is the preferred photo; at most one is."),
];

const ADDRESS_SUBS: &[AttrDef] = &[
    AttrDef::string("formatted").desc("Full mailing address, formatted for display."),
    AttrDef::string("streetAddress").desc("Street address, possibly on several lines."),
    AttrDef::string("locality").desc("City or locality."),
    AttrDef::string("region").desc("State or region."),
    AttrDef::string("postalCode").desc("Zip code or postal code."),
    AttrDef::string("country").desc("Country name (ISO 3166-1 alpha-2 code)."),
    AttrDef::string("type")
        .desc("Label indicating the address's function.")
        .canonical(&["work", "home", "other"]),
    AttrDef::boolean("primary").desc("Whether this is the preferred address; at most one is."),
];

const GROUPS_SUBS: &[AttrDef] = &[
    AttrDef::string("value")
        .desc("Identifier of the group.")
        .read_only(),
    AttrDef::reference("$ref", &["User", "Group"])
        .desc("URI of the group.")
        .read_only(),
    AttrDef::string("display")
        .desc("Human-readable name of the group.")
        .read_only(),
    AttrDef::string("type")
        .desc("Whether membership is direct or indirect (through a nested group).")
        .canonical(&["direct", "indirect"])
        .read_only(),
];

const X509_SUBS: &[AttrDef] = &[
    AttrDef::new("value", super::AttrType::Binary).desc("DER-encoded X.509 certificate, base64."),
    AttrDef::string("display").desc("Human-readable name, primarily for display."),
    AttrDef::string("type").desc("Label indicating the certificate's function."),
    AttrDef::boolean("primary").desc("Whether this is the preferred certificate; at most one is."),
];

/// The User resource: common attributes, then RFC 7643 §4.1 in RFC order.
pub(super) static USER: &[AttrDef] = &[
    ID,
    EXTERNAL_ID,
    META,
    AttrDef::string("userName")
        .desc("Unique identifier of the user, typically used to sign in.")
        .required()
        .unique(Uniqueness::Server),
    AttrDef::complex("name", NAME_SUBS).desc("Components of the user's real name."),
    AttrDef::string("displayName").desc("Name of the user, suitable for display."),
    AttrDef::string("nickName").desc("Casual way to address the user."),
    AttrDef::reference("profileUrl", &["external"]).desc("URL of the user's online profile."),
    AttrDef::string("title").desc("The user's title, such as 'Vice President'."),
    AttrDef::string("userType").desc("Relationship to the organization, e.g. 'Employee'."),
    AttrDef::string("preferredLanguage").desc("Preferred written or spoken language."),
    AttrDef::string("locale").desc("Default location for localization, e.g. 'en-US'."),
    AttrDef::string("timezone").desc("Time zone in IANA format, e.g. 'America/Los_Angeles'."),
    AttrDef::boolean("active").desc("The user's administrative status."),
    AttrDef::string("password")
        .desc("Cleartext password; accepted but never stored nor returned.")
        .mutability(Mutability::WriteOnly)
        .returned(Returned::Never),
    AttrDef::complex("emails", EMAIL_SUBS)
        .multi()
        .desc("Email addresses of the user."),
    AttrDef::complex("phoneNumbers", PHONE_SUBS)
        .multi()
        .desc("Phone numbers of the user."),
    AttrDef::complex("ims", IM_SUBS)
        .multi()
        .desc("Instant messaging addresses of the user."),
    AttrDef::complex("photos", PHOTO_SUBS)
        .multi()
        .desc("URLs of photos of the user."),
    AttrDef::complex("addresses", ADDRESS_SUBS)
        .multi()
        .desc("Physical mailing addresses."),
    AttrDef::complex("groups", GROUPS_SUBS)
        .multi()
        .desc("Groups the user belongs to, maintained through the Group resources.")
        .read_only(),
    AttrDef::complex("entitlements", ENTITLEMENT_SUBS)
        .multi()
        .desc("Entitlements of the user."),
    AttrDef::complex("roles", ROLE_SUBS)
        .multi()
        .desc("Roles of the user."),
    AttrDef::complex("x509Certificates", X509_SUBS)
        .multi()
        .desc("X.509 certificates issued to the user."),
];

const MEMBER_SUBS: &[AttrDef] = &[
    AttrDef::string("value")
        .desc("Identifier of the member.")
        .mutability(IMMUTABLE),
    AttrDef::reference("$ref", &["User", "Group"])
        .desc("URI of the member.")
        .mutability(IMMUTABLE),
    AttrDef::string("type")
        .desc("Resource type of the member.")
        .canonical(&["User", "Group"])
        .mutability(IMMUTABLE),
];

/// The Group resource: common attributes, then RFC 7643 §4.2.
///
/// `displayName` is published as required: §4.2 says REQUIRED and the broker enforces it, although
/// the §8.7.1 representation says otherwise.
pub(super) static GROUP: &[AttrDef] = &[
    ID,
    EXTERNAL_ID,
    META,
    AttrDef::string("displayName")
        .desc("Human-readable name of the group.")
        .required(),
    AttrDef::complex("members", MEMBER_SUBS)
        .multi()
        .desc("Members of the group."),
];

const MANAGER_SUBS: &[AttrDef] = &[
    AttrDef::string("value").desc("Identifier of the user's manager."),
    AttrDef::reference("$ref", &["User"]).desc("URI of the manager's User resource."),
    AttrDef::string("displayName")
        .desc("Display name of the manager.")
        .read_only(),
];

/// The Enterprise User extension, RFC 7643 §4.3.
pub(super) static ENTERPRISE_USER: &[AttrDef] = &[
    AttrDef::string("employeeNumber").desc("Identifier assigned by the organization."),
    AttrDef::string("costCenter").desc("Name of a cost center."),
    AttrDef::string("organization").desc("Name of an organization."),
    AttrDef::string("division").desc("Name of a division."),
    AttrDef::string("department").desc("Name of a department."),
    AttrDef::complex("manager", MANAGER_SUBS).desc("The user's manager."),
];
