use super::*;
use crate::domain::connector::Strategy;
use crate::domain::ids::OrgId;

const A: Action = Action::Allow;
const N: Action = Action::NeedsApproval;
const B: Action = Action::Blocked;

fn acts(read: Action, write: Action, delete: Action) -> ActionSet {
    ActionSet {
        read,
        write,
        delete,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn connector_in(org: &str, id: &str, scopes: &[&str], ceiling: ActionSet) -> Connector {
    Connector {
        org: OrgId::new(org),
        id: id.to_owned(),
        display_name: id.to_uppercase(),
        strategy: Strategy::BrokerJwt,
        audience: format!("https://{id}.example"),
        scopes: strings(scopes),
        tools: BTreeMap::from([
            ("list_issues".to_owned(), Category::Read),
            ("create_issue".to_owned(), Category::Write),
            ("delete_repo".to_owned(), Category::Delete),
        ]),
        default_actions: ceiling,
        enabled: true,
        token_ttl_secs: 600,
        upstream: None,
    }
}

fn github() -> Connector {
    connector_in(
        "acme",
        "github",
        &["repo:read", "repo:write", "issues:read"],
        ActionSet::ALLOW_ALL,
    )
}

fn grant_in(
    org: &str,
    id: &str,
    group: GroupSelector,
    connector: &str,
    scopes: &[&str],
    actions: ActionSet,
) -> Grant {
    Grant {
        id: id.to_owned(),
        org: OrgId::new(org),
        group,
        connector: connector.to_owned(),
        scopes: strings(scopes),
        actions,
    }
}

fn grant(id: &str, group: &str, scopes: &[&str], actions: ActionSet) -> Grant {
    grant_in("acme", id, name(group), "github", scopes, actions)
}

fn name(n: &str) -> GroupSelector {
    GroupSelector::Name(n.to_owned())
}

fn gid(n: &str) -> GroupSelector {
    GroupSelector::Id(GroupId::new(n))
}

/// The user's groups as owned (id, display name) pairs; `memberships` borrows them.
fn groups(v: &[(&str, &str)]) -> Vec<(GroupId, String)> {
    v.iter()
        .map(|(id, n)| (GroupId::new(*id), (*n).to_owned()))
        .collect()
}

fn memberships(g: &[(GroupId, String)]) -> Vec<Membership<'_>> {
    g.iter()
        .map(|(id, n)| Membership {
            id,
            display_name: n,
        })
        .collect()
}

/// The usual user: in Engineering and Ops.
fn eng_ops() -> Vec<(GroupId, String)> {
    groups(&[("g-eng", "Engineering"), ("g-ops", "Ops")])
}

fn ent_for(
    g: &[(GroupId, String)],
    connectors: &[Connector],
    grants: &[Grant],
    org: ActionSet,
) -> Entitlements {
    entitlements(
        true,
        &memberships(g),
        connectors,
        grants,
        &OrgPolicy { max_actions: org },
    )
}

fn codes(reasons: &[Reason]) -> Vec<&'static str> {
    reasons.iter().map(|r| r.code).collect()
}

fn github_ent(ent: &Entitlements) -> &ConnectorEntitlement {
    match ent.connectors.get("github") {
        Some(e) => e,
        None => panic!(
            "github missing from {:?}",
            ent.connectors.keys().collect::<Vec<_>>()
        ),
    }
}

#[test]
fn one_group_one_grant() {
    let g = eng_ops();
    let ent = ent_for(
        &g,
        &[github()],
        &[grant("gr-1", "Engineering", &["repo:read"], acts(A, N, B))],
        ActionSet::ALLOW_ALL,
    );
    assert!(ent.active);
    assert_eq!(ent.connectors.keys().collect::<Vec<_>>(), ["github"]);
    let e = github_ent(&ent);
    assert_eq!(e.connector, "github");
    assert_eq!(e.scopes, ["repo:read"]);
    let got: Vec<(Category, Action)> = e.actions.iter().map(|(c, d)| (*c, d.action)).collect();
    assert_eq!(
        got,
        [
            (Category::Read, A),
            (Category::Write, N),
            (Category::Delete, B)
        ]
    );
    assert_eq!(
        e.tools,
        BTreeMap::from([
            ("list_issues".to_owned(), A),
            ("create_issue".to_owned(), N),
            ("delete_repo".to_owned(), B),
        ])
    );
    assert_eq!(codes(&e.via), [code::GRANT_APPLIES]);
    assert_eq!(
        codes(&e.actions[&Category::Read].reasons),
        [code::GRANT_ALLOWS]
    );
    assert_eq!(
        codes(&e.actions[&Category::Write].reasons),
        [code::GRANT_NEEDS_APPROVAL]
    );
    assert_eq!(
        codes(&e.actions[&Category::Delete].reasons),
        [code::GRANT_BLOCKS]
    );
}

/// One row: grants (id, group, actions) for github, its ceiling, the org limit, and the expected
/// action and reason codes per category.
struct Case {
    name: &'static str,
    grants: &'static [(&'static str, &'static str, [Action; 3])],
    ceiling: [Action; 3],
    org: [Action; 3],
    expect: [(Action, &'static [&'static str]); 3],
}

const AAA: [Action; 3] = [A, A, A];

#[test]
fn actions_combine_grants_ceiling_and_org() {
    use code::*;
    let cases = [
        Case {
            name: "two groups: allow beats needs_approval",
            grants: &[
                ("gr-1", "Engineering", [N, N, N]),
                ("gr-2", "Ops", [A, N, B]),
            ],
            ceiling: AAA,
            org: AAA,
            expect: [
                (A, &[GRANT_NEEDS_APPROVAL, GRANT_ALLOWS]),
                (N, &[GRANT_NEEDS_APPROVAL, GRANT_NEEDS_APPROVAL]),
                (B, &[GRANT_NEEDS_APPROVAL, GRANT_BLOCKS, EXPLICIT_BLOCK]),
            ],
        },
        Case {
            name: "explicit block in one group beats allow in another",
            grants: &[
                ("gr-1", "Engineering", [A, A, A]),
                ("gr-2", "Ops", [B, A, A]),
            ],
            ceiling: AAA,
            org: AAA,
            expect: [
                (B, &[GRANT_ALLOWS, GRANT_BLOCKS, EXPLICIT_BLOCK]),
                (A, &[GRANT_ALLOWS, GRANT_ALLOWS]),
                (A, &[GRANT_ALLOWS, GRANT_ALLOWS]),
            ],
        },
        Case {
            name: "a block nobody else contradicts is just a block",
            grants: &[
                ("gr-1", "Engineering", [B, B, B]),
                ("gr-2", "Ops", [A, B, B]),
            ],
            ceiling: AAA,
            org: AAA,
            expect: [
                (B, &[GRANT_BLOCKS, GRANT_ALLOWS, EXPLICIT_BLOCK]),
                (B, &[GRANT_BLOCKS, GRANT_BLOCKS]),
                (B, &[GRANT_BLOCKS, GRANT_BLOCKS]),
            ],
        },
        Case {
            name: "explicit block wins even when the ceiling is lower still",
            grants: &[
                ("gr-1", "Engineering", [A, A, A]),
                ("gr-2", "Ops", [A, A, B]),
            ],
            ceiling: [A, A, N],
            org: [A, A, N],
            expect: [
                (A, &[GRANT_ALLOWS, GRANT_ALLOWS]),
                (A, &[GRANT_ALLOWS, GRANT_ALLOWS]),
                (B, &[GRANT_ALLOWS, GRANT_BLOCKS, EXPLICIT_BLOCK]),
            ],
        },
        Case {
            name: "connector ceiling narrows, and is silent when it does not",
            grants: &[("gr-1", "Engineering", [A, A, N])],
            ceiling: [A, N, B],
            org: AAA,
            expect: [
                (A, &[GRANT_ALLOWS]),
                (N, &[GRANT_ALLOWS, CONNECTOR_CEILING]),
                (B, &[GRANT_NEEDS_APPROVAL, CONNECTOR_CEILING]),
            ],
        },
        Case {
            name: "ceiling never widens",
            grants: &[("gr-1", "Engineering", [N, B, N])],
            ceiling: AAA,
            org: AAA,
            expect: [
                (N, &[GRANT_NEEDS_APPROVAL]),
                (B, &[GRANT_BLOCKS]),
                (N, &[GRANT_NEEDS_APPROVAL]),
            ],
        },
        Case {
            name: "org restriction narrows",
            grants: &[("gr-1", "Engineering", [A, A, A])],
            ceiling: AAA,
            org: [A, N, B],
            expect: [
                (A, &[GRANT_ALLOWS]),
                (N, &[GRANT_ALLOWS, ORG_RESTRICTION]),
                (B, &[GRANT_ALLOWS, ORG_RESTRICTION]),
            ],
        },
        Case {
            name: "org restriction never widens",
            grants: &[("gr-1", "Engineering", [B, N, N])],
            ceiling: [A, A, N],
            org: AAA,
            expect: [
                (B, &[GRANT_BLOCKS]),
                (N, &[GRANT_NEEDS_APPROVAL]),
                (N, &[GRANT_NEEDS_APPROVAL]),
            ],
        },
        Case {
            name: "ceiling then org, each noted when it lowers",
            grants: &[("gr-1", "Engineering", [A, A, A])],
            ceiling: [N, N, A],
            org: [B, N, N],
            expect: [
                (B, &[GRANT_ALLOWS, CONNECTOR_CEILING, ORG_RESTRICTION]),
                (N, &[GRANT_ALLOWS, CONNECTOR_CEILING]),
                (N, &[GRANT_ALLOWS, ORG_RESTRICTION]),
            ],
        },
    ];
    for case in cases {
        let [cr, cw, cd] = case.ceiling;
        let conn = connector_in("acme", "github", &["repo:read"], acts(cr, cw, cd));
        let grants: Vec<Grant> = case
            .grants
            .iter()
            .map(|(id, group, [r, w, d])| grant(id, group, &["repo:read"], acts(*r, *w, *d)))
            .collect();
        let [or, ow, od] = case.org;
        let ent = ent_for(&eng_ops(), &[conn], &grants, acts(or, ow, od));
        let e = github_ent(&ent);
        for (category, (action, want)) in Category::ALL.into_iter().zip(case.expect) {
            let d = &e.actions[&category];
            assert_eq!(d.action, action, "{}: {category:?}", case.name);
            assert_eq!(codes(&d.reasons), want, "{}: {category:?}", case.name);
        }
        let tool_actions: Vec<Action> = ["list_issues", "create_issue", "delete_repo"]
            .iter()
            .map(|t| e.tools[*t])
            .collect();
        let want: Vec<Action> = case.expect.iter().map(|(a, _)| *a).collect();
        assert_eq!(tool_actions, want, "{}: tools", case.name);
    }
}

#[test]
fn reasons_name_the_group_and_grant() {
    let g = groups(&[("g-eng", "Engineering"), ("g-sec", "Security")]);
    let grants = [
        grant_in(
            "acme",
            "gr-eng",
            name("engineering"),
            "github",
            &["repo:read"],
            acts(A, A, A),
        ),
        grant_in(
            "acme",
            "gr-sec",
            gid("g-sec"),
            "github",
            &["repo:read"],
            acts(A, A, B),
        ),
    ];
    let ent = ent_for(&g, &[github()], &grants, ActionSet::ALLOW_ALL);
    let e = github_ent(&ent);
    let who = |r: &Reason| (r.code, r.group.clone(), r.grant.clone());
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        e.via.iter().map(who).collect::<Vec<_>>(),
        [
            (code::GRANT_APPLIES, s("Engineering"), s("gr-eng")),
            (code::GRANT_APPLIES, s("Security"), s("gr-sec")),
        ]
    );
    assert_eq!(
        e.actions[&Category::Delete]
            .reasons
            .iter()
            .map(who)
            .collect::<Vec<_>>(),
        [
            (code::GRANT_ALLOWS, s("Engineering"), s("gr-eng")),
            (code::GRANT_BLOCKS, s("Security"), s("gr-sec")),
            (code::EXPLICIT_BLOCK, s("Security"), s("gr-sec")),
        ]
    );
    let explicit = &e.actions[&Category::Delete].reasons[2];
    assert!(explicit.detail.contains("gr-eng"), "{}", explicit.detail);
    assert!(e.via[1].detail.contains("g-sec"), "{}", e.via[1].detail);
}

#[test]
fn ceiling_and_org_reasons_name_no_grant() {
    let ent = ent_for(
        &eng_ops(),
        &[connector_in(
            "acme",
            "github",
            &["repo:read"],
            acts(A, N, A),
        )],
        &[grant("gr-1", "Ops", &["repo:read"], acts(A, A, A))],
        acts(A, A, N),
    );
    let e = github_ent(&ent);
    for (category, code) in [
        (Category::Write, code::CONNECTOR_CEILING),
        (Category::Delete, code::ORG_RESTRICTION),
    ] {
        let r = &e.actions[&category].reasons[1];
        assert_eq!(
            (r.code, &r.group, &r.grant),
            (code, &None, &None),
            "{category:?}"
        );
    }
}

/// (case, the user's groups, the grant's selector, applies?)
type SelectorCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    GroupSelector,
    bool,
);

#[test]
fn which_grants_apply() {
    let cases: [SelectorCase; 11] = [
        (
            "by name, same case",
            &[("g-eng", "Engineering")],
            name("Engineering"),
            true,
        ),
        (
            "by name, lower case",
            &[("g-eng", "Engineering")],
            name("engineering"),
            true,
        ),
        (
            "by name, upper case",
            &[("g-eng", "Engineering")],
            name("ENGINEERING"),
            true,
        ),
        (
            "by name, non-ASCII",
            &[("g-sec", "Équipe Sécurité")],
            name("éQUIPE sÉCURITÉ"),
            true,
        ),
        (
            "by name, trailing space",
            &[("g-eng", "Engineering")],
            name("Engineering "),
            false,
        ),
        (
            "by name, prefix",
            &[("g-eng", "Engineering")],
            name("Eng"),
            false,
        ),
        ("by name, empty", &[("g-x", "")], name(""), false),
        ("by id", &[("g-eng", "Engineering")], gid("g-eng"), true),
        (
            "by id, exact case only",
            &[("g-eng", "Engineering")],
            gid("G-ENG"),
            false,
        ),
        (
            "by id, the name is not an id",
            &[("g-eng", "Engineering")],
            gid("Engineering"),
            false,
        ),
        (
            "group the user is not in",
            &[("g-eng", "Engineering")],
            name("Ops"),
            false,
        ),
    ];
    for (case, user, selector, applies) in cases {
        let g = groups(user);
        let grants = [grant_in(
            "acme",
            "gr-1",
            selector,
            "github",
            &["repo:read"],
            acts(A, A, A),
        )];
        let ent = ent_for(&g, &[github()], &grants, ActionSet::ALLOW_ALL);
        assert_eq!(ent.connectors.contains_key("github"), applies, "{case}");
        let d = decide_tool(&ent, &[github()], "github", "list_issues", None);
        let want = if applies { A } else { B };
        assert_eq!(d.action, want, "{case}");
        if !applies {
            assert_eq!(codes(&d.reasons), [code::NOT_ENTITLED], "{case}");
        }
    }
}

#[test]
fn a_grant_matching_two_of_the_users_groups_counts_once() {
    let g = groups(&[("g-2", "ENG"), ("g-1", "eng")]);
    let ent = ent_for(
        &g,
        &[github()],
        &[grant("gr-1", "Eng", &["repo:read"], acts(A, A, A))],
        ActionSet::ALLOW_ALL,
    );
    let e = github_ent(&ent);
    assert_eq!(e.via.len(), 1);
    // The smallest display name names the group, whatever the membership order.
    assert_eq!(e.via[0].group.as_deref(), Some("ENG"));
}

#[test]
fn disabled_connector_grants_nothing() {
    let mut disabled = connector_in("acme", "jira", &["issues:read"], ActionSet::ALLOW_ALL);
    disabled.enabled = false;
    let connectors = [github(), disabled];
    let grants = [
        grant_in(
            "acme",
            "gr-1",
            name("Engineering"),
            "jira",
            &["issues:read"],
            acts(A, A, A),
        ),
        grant("gr-2", "Engineering", &["repo:read"], acts(A, A, A)),
    ];
    let ent = ent_for(&eng_ops(), &connectors, &grants, ActionSet::ALLOW_ALL);
    assert_eq!(ent.connectors.keys().collect::<Vec<_>>(), ["github"]);
    let d = decide_tool(
        &ent,
        &connectors,
        "jira",
        "list_issues",
        Some(Category::Read),
    );
    assert_eq!(
        (d.action, codes(&d.reasons)),
        (B, vec![code::CONNECTOR_DISABLED])
    );
}

#[test]
fn connector_disabled_after_entitlements_were_computed_is_blocked() {
    let ent = ent_for(
        &eng_ops(),
        &[github()],
        &[grant("gr-1", "Ops", &["repo:read"], acts(A, A, A))],
        ActionSet::ALLOW_ALL,
    );
    assert_eq!(
        decide_tool(&ent, &[github()], "github", "list_issues", None).action,
        A
    );
    let mut now = github();
    now.enabled = false;
    let d = decide_tool(&ent, &[now], "github", "list_issues", None);
    assert_eq!(
        (d.action, codes(&d.reasons)),
        (B, vec![code::CONNECTOR_DISABLED])
    );
    let d = decide_tool(&ent, &[], "github", "list_issues", None);
    assert_eq!((d.action, codes(&d.reasons)), (B, vec![code::NOT_ENTITLED]));
}

#[test]
fn unknown_connector_in_grant_grants_nothing() {
    let grants = [grant_in(
        "acme",
        "gr-1",
        name("Engineering"),
        "gitlab",
        &["api"],
        acts(A, A, A),
    )];
    let ent = ent_for(&eng_ops(), &[github()], &grants, ActionSet::ALLOW_ALL);
    assert!(ent.active);
    assert!(
        ent.connectors.is_empty(),
        "{:?}",
        ent.connectors.keys().collect::<Vec<_>>()
    );
    for connector in ["gitlab", "github"] {
        let d = decide_tool(
            &ent,
            &[github()],
            connector,
            "anything",
            Some(Category::Read),
        );
        assert_eq!(
            (d.action, codes(&d.reasons)),
            (B, vec![code::NOT_ENTITLED]),
            "{connector}"
        );
    }
}

#[test]
fn grant_of_another_org_grants_nothing() {
    let grants = [grant_in(
        "globex",
        "gr-1",
        name("Engineering"),
        "github",
        &["repo:read"],
        acts(A, A, A),
    )];
    let ent = ent_for(&eng_ops(), &[github()], &grants, ActionSet::ALLOW_ALL);
    assert!(ent.connectors.is_empty());
}

#[test]
fn connector_id_shared_by_two_orgs_is_refused() {
    let connectors = [
        github(),
        connector_in("globex", "github", &["repo:read"], ActionSet::ALLOW_ALL),
    ];
    let one = [grant_in(
        "globex",
        "gr-2",
        name("Ops"),
        "github",
        &["repo:read"],
        acts(A, A, A),
    )];
    let ent = ent_for(&eng_ops(), &connectors, &one, ActionSet::ALLOW_ALL);
    assert!(ent.connectors.contains_key("github"));
    let both = [
        one[0].clone(),
        grant("gr-1", "Engineering", &["repo:read"], acts(A, A, A)),
    ];
    let ent = ent_for(&eng_ops(), &connectors, &both, ActionSet::ALLOW_ALL);
    assert!(ent.connectors.is_empty());
}

#[test]
fn inactive_user_gets_nothing() {
    let g = eng_ops();
    let grants = [grant("gr-1", "Engineering", &["repo:read"], acts(A, A, A))];
    let ent = entitlements(
        false,
        &memberships(&g),
        &[github()],
        &grants,
        &OrgPolicy::default(),
    );
    assert_eq!(
        ent,
        Entitlements {
            active: false,
            connectors: BTreeMap::new()
        }
    );
    let d = decide_tool(
        &ent,
        &[github()],
        "github",
        "list_issues",
        Some(Category::Read),
    );
    assert_eq!(
        (d.action, codes(&d.reasons)),
        (B, vec![code::USER_INACTIVE])
    );

    // Even entitlements that still list connectors answer nothing once marked inactive.
    let mut stale = ent_for(&g, &[github()], &grants, ActionSet::ALLOW_ALL);
    assert_eq!(
        decide_tool(&stale, &[github()], "github", "list_issues", None).action,
        A
    );
    stale.active = false;
    let d = decide_tool(&stale, &[github()], "github", "list_issues", None);
    assert_eq!(
        (d.action, codes(&d.reasons)),
        (B, vec![code::USER_INACTIVE])
    );
}

#[test]
fn scopes_are_the_union_of_grants_within_the_ceiling() {
    let grants = [
        grant(
            "gr-1",
            "Engineering",
            &["repo:read", "admin:org"],
            acts(A, A, A),
        ),
        grant("gr-2", "Ops", &["repo:write", "repo:read"], acts(A, A, A)),
        grant("gr-3", "Finance", &["issues:read"], acts(A, A, A)),
    ];
    let ent = ent_for(&eng_ops(), &[github()], &grants, ActionSet::ALLOW_ALL);
    let e = github_ent(&ent);
    assert_eq!(e.scopes, ["repo:read", "repo:write"]);
    assert_eq!(
        codes(&e.via),
        [
            code::GRANT_APPLIES,
            code::SCOPE_NOT_OFFERED,
            code::GRANT_APPLIES
        ]
    );
    assert_eq!(e.via[1].grant.as_deref(), Some("gr-1"));
    assert!(e.via[1].detail.contains("admin:org"), "{}", e.via[1].detail);
}

#[test]
fn entitled_with_no_scopes_still_lists_the_connector() {
    let grants = [grant("gr-1", "Engineering", &["admin:org"], acts(A, N, B))];
    let ent = ent_for(&eng_ops(), &[github()], &grants, ActionSet::ALLOW_ALL);
    let e = github_ent(&ent);
    assert!(e.scopes.is_empty());
    assert_eq!(
        codes(&e.via),
        [
            code::GRANT_APPLIES,
            code::SCOPE_NOT_OFFERED,
            code::NO_SCOPES
        ]
    );
    assert_eq!(e.actions[&Category::Write].action, N);
    assert_eq!(check_scopes(e, None), Ok(vec![]));
    assert_eq!(
        check_scopes(e, Some(&strings(&["repo:read"]))),
        Err("repo:read".to_owned())
    );
}

#[test]
fn tool_category_sources() {
    // (tool, hint, category, reason code)
    let cases = [
        ("delete_repo", None, Category::Delete, code::TOOL_MAPPED),
        (
            "delete_repo",
            Some(Category::Read),
            Category::Delete,
            code::TOOL_MAPPED,
        ),
        (
            "list_issues",
            Some(Category::Delete),
            Category::Read,
            code::TOOL_MAPPED,
        ),
        (
            "frobnicate",
            Some(Category::Read),
            Category::Read,
            code::CATEGORY_HINT,
        ),
        (
            "frobnicate",
            Some(Category::Delete),
            Category::Delete,
            code::CATEGORY_HINT,
        ),
        (
            "frobnicate",
            None,
            Category::Write,
            code::UNKNOWN_TOOL_COUNTS_AS_WRITE,
        ),
        (
            "Delete_Repo",
            None,
            Category::Write,
            code::UNKNOWN_TOOL_COUNTS_AS_WRITE,
        ),
    ];
    let conn = github();
    for (tool, hint, category, code) in cases {
        let (got, reason) = tool_category(&conn, tool, hint);
        assert_eq!((got, reason.code), (category, code), "{tool} {hint:?}");
        assert!(reason.detail.contains(tool), "{}", reason.detail);
    }
}

#[test]
fn decide_tool_uses_the_tool_category() {
    let ent = ent_for(
        &eng_ops(),
        &[github()],
        &[grant("gr-1", "Engineering", &["repo:read"], acts(A, N, B))],
        ActionSet::ALLOW_ALL,
    );
    // (tool, hint, action, reason codes)
    let cases = [
        (
            "list_issues",
            None,
            A,
            vec![code::GRANT_ALLOWS, code::TOOL_MAPPED],
        ),
        (
            "delete_repo",
            Some(Category::Read),
            B,
            vec![code::GRANT_BLOCKS, code::TOOL_MAPPED],
        ),
        (
            "list_issues",
            Some(Category::Delete),
            A,
            vec![code::GRANT_ALLOWS, code::TOOL_MAPPED],
        ),
        (
            "frobnicate",
            Some(Category::Read),
            A,
            vec![code::GRANT_ALLOWS, code::CATEGORY_HINT],
        ),
        (
            "frobnicate",
            Some(Category::Delete),
            B,
            vec![code::GRANT_BLOCKS, code::CATEGORY_HINT],
        ),
        (
            "frobnicate",
            None,
            N,
            vec![
                code::GRANT_NEEDS_APPROVAL,
                code::UNKNOWN_TOOL_COUNTS_AS_WRITE,
            ],
        ),
    ];
    for (tool, hint, action, want) in cases {
        let d = decide_tool(&ent, &[github()], "github", tool, hint);
        assert_eq!(
            (d.action, codes(&d.reasons)),
            (action, want),
            "{tool} {hint:?}"
        );
        assert_eq!(
            d.reasons[0].grant.as_deref(),
            Some("gr-1"),
            "{tool} {hint:?}"
        );
    }
}

/// (case, requested scopes, expected answer)
type ScopeCase = (
    &'static str,
    Option<&'static [&'static str]>,
    Result<Vec<String>, String>,
);

#[test]
fn check_scopes_against_the_entitlement() {
    let ent = ent_for(
        &eng_ops(),
        &[github()],
        &[grant(
            "gr-1",
            "Engineering",
            &["repo:write", "issues:read", "repo:read"],
            acts(A, A, A),
        )],
        ActionSet::ALLOW_ALL,
    );
    let e = github_ent(&ent);
    let all = strings(&["issues:read", "repo:read", "repo:write"]);
    let cases: [ScopeCase; 7] = [
        ("no request", None, Ok(all.clone())),
        ("empty request", Some(&[]), Ok(all.clone())),
        (
            "subset, sorted",
            Some(&["repo:write", "issues:read"]),
            Ok(strings(&["issues:read", "repo:write"])),
        ),
        (
            "duplicates collapse",
            Some(&["repo:read", "repo:read"]),
            Ok(strings(&["repo:read"])),
        ),
        (
            "superset",
            Some(&["repo:read", "admin:org", "zzz"]),
            Err("admin:org".to_owned()),
        ),
        ("unknown only", Some(&["zzz"]), Err("zzz".to_owned())),
        (
            "empty scope name",
            Some(&["repo:read", ""]),
            Err(String::new()),
        ),
    ];
    for (case, requested, want) in cases {
        let requested = requested.map(strings);
        assert_eq!(check_scopes(e, requested.as_deref()), want, "{case}");
    }
}

#[test]
fn output_does_not_depend_on_input_order() {
    let grants = vec![
        grant("gr-b", "Ops", &["repo:write", "admin:org"], acts(B, A, N)),
        grant("gr-a", "Engineering", &["repo:read"], acts(A, N, A)),
        grant_in(
            "acme",
            "gr-c",
            gid("g-eng"),
            "github",
            &["issues:read"],
            acts(N, N, N),
        ),
    ];
    let g = eng_ops();
    let first = ent_for(&g, &[github()], &grants, acts(A, A, N));
    let mut reversed_grants = grants.clone();
    reversed_grants.reverse();
    let mut reversed_groups = g.clone();
    reversed_groups.reverse();
    let second = ent_for(
        &reversed_groups,
        &[github()],
        &reversed_grants,
        acts(A, A, N),
    );
    assert_eq!(first, second);
    let e = github_ent(&first);
    let order: Vec<Option<&str>> = e.actions[&Category::Read]
        .reasons
        .iter()
        .map(|r| r.grant.as_deref())
        .collect();
    assert_eq!(
        order,
        [Some("gr-a"), Some("gr-b"), Some("gr-c"), Some("gr-b")]
    );
}

#[test]
fn serializes_with_wire_names() {
    let ent = ent_for(
        &eng_ops(),
        &[github()],
        &[grant("gr-1", "Engineering", &["repo:read"], acts(A, N, B))],
        ActionSet::ALLOW_ALL,
    );
    let json = serde_json::to_value(&ent).unwrap();
    let e = &json["connectors"]["github"];
    assert_eq!(json["active"], true);
    assert_eq!(e["actions"]["write"]["action"], "needs_approval");
    assert_eq!(
        e["actions"]["write"]["reasons"][0]["code"],
        "grant-needs-approval"
    );
    assert_eq!(e["actions"]["write"]["reasons"][0]["group"], "Engineering");
    assert_eq!(e["actions"]["write"]["reasons"][0]["grant"], "gr-1");
    assert_eq!(e["tools"]["delete_repo"], "blocked");
    assert_eq!(e["scopes"], serde_json::json!(["repo:read"]));
}
