//! List queries (RFC 7644 §3.4.2): filter, sort, paging and attribute projection.
//!
//! A filter whose top level (or a top-level AND) pins an indexed attribute with `eq`
//! (`userName`, `externalId`, `id`; `displayName` for groups) is answered from that index and
//! re-checked in full in memory. Any other filter examines the org's resources in memory, at
//! most `scim.max_filter_scan` of them; beyond that the answer is 400 `tooMany`. Without a
//! filter, paging and sorting by name, `meta.created` or `meta.lastModified` happen in SQL.

use serde_json::{Value, json};

use super::{Provisioning, ScimCtx, render, store_error};
use crate::domain::ports::{IndexedAttr, Scan, SortAttr};
use crate::scim::filter::{self, AttrPath, Filter};
use crate::scim::schema::LIST_RESPONSE;
use crate::scim::{ResourceKind, ScimError, ScimType, project};

/// The query parameters of a list request, as received.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `filter`
    pub filter: Option<String>,
    /// `startIndex` (1-based)
    pub start_index: Option<i64>,
    /// `count`
    pub count: Option<i64>,
    /// `sortBy`
    pub sort_by: Option<String>,
    /// `sortOrder` (`ascending` | `descending`)
    pub sort_order: Option<String>,
    /// `attributes`
    pub attributes: Vec<String>,
    /// `excludedAttributes`
    pub excluded: Vec<String>,
}

enum Sort {
    Sql(SortAttr),
    Memory(AttrPath),
}

impl Provisioning {
    /// GET /Users or /Groups with query parameters: a ListResponse.
    pub async fn list(
        &self,
        ctx: &ScimCtx,
        kind: ResourceKind,
        q: &ListQuery,
    ) -> Result<Value, ScimError> {
        let filter = match q.filter.as_deref().map(str::trim) {
            Some(f) if !f.is_empty() => Some(filter::parse(f)?),
            _ => None,
        };
        let start = q.start_index.unwrap_or(1).max(1) as u64;
        let count = q
            .count
            .unwrap_or(self.limits.default_count as i64)
            .clamp(0, self.limits.max_results as i64) as u64;
        let descending = match q
            .sort_order
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("ascending") => false,
            Some("descending") => true,
            Some(other) => {
                return Err(ScimError::invalid_value(format!(
                    "sortOrder must be ascending or descending, not {other}"
                )));
            }
        };
        let sort = match q
            .sort_by
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => Sort::Sql(SortAttr::Natural),
            Some(s) => sort_for(kind, s)?,
        };

        let (mut items, total) = match (&filter, &sort) {
            (None, Sort::Sql(attr)) => {
                let scan = Scan {
                    lookup: None,
                    sort: *attr,
                    descending,
                    offset: start - 1,
                    limit: count,
                };
                if count == 0 {
                    let scan = Scan { limit: 0, ..scan };
                    (Vec::new(), self.scan_rendered(ctx, kind, &scan).await?.1)
                } else {
                    self.scan_rendered(ctx, kind, &scan).await?
                }
            }
            _ => {
                let lookup = filter.as_ref().and_then(|f| index_lookup(kind, f));
                let max = self.limits.max_filter_scan as u64;
                let scan = Scan {
                    lookup,
                    sort: SortAttr::Natural,
                    descending: false,
                    offset: 0,
                    limit: max + 1,
                };
                let (mut all, _) = self.scan_rendered(ctx, kind, &scan).await?;
                if all.len() as u64 > max {
                    return Err(ScimError::bad_request(
                        ScimType::TooMany,
                        format!(
                            "the filter would examine more than {max} resources; narrow it \
                             (e.g. userName eq, externalId eq or id eq)"
                        ),
                    ));
                }
                if let Some(f) = &filter {
                    all.retain(|r| f.matches(r));
                }
                match &sort {
                    Sort::Memory(path) => all.sort_by(|a, b| filter::sort_key_cmp(a, b, path)),
                    Sort::Sql(attr) => {
                        let path = sql_sort_path(kind, *attr);
                        all.sort_by(|a, b| filter::sort_key_cmp(a, b, &path));
                    }
                }
                if descending {
                    all.reverse();
                }
                let total = all.len() as u64;
                let page: Vec<Value> = all
                    .into_iter()
                    .skip((start - 1) as usize)
                    .take(count as usize)
                    .collect();
                (page, total)
            }
        };
        for item in &mut items {
            project::project(item, kind, &q.attributes, &q.excluded);
        }
        Ok(json!({
            "schemas": [LIST_RESPONSE],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": items.len(),
            "Resources": items,
        }))
    }

    async fn scan_rendered(
        &self,
        ctx: &ScimCtx,
        kind: ResourceKind,
        scan: &Scan,
    ) -> Result<(Vec<Value>, u64), ScimError> {
        match kind {
            ResourceKind::User => {
                let page = self
                    .dir
                    .scan_users(&ctx.org, scan)
                    .await
                    .map_err(store_error)?;
                let ids: Vec<_> = page.items.iter().map(|u| u.id.clone()).collect();
                let mut groups = if ids.is_empty() {
                    Default::default()
                } else {
                    self.dir
                        .groups_of(&ctx.org, &ids)
                        .await
                        .map_err(store_error)?
                };
                let items = page
                    .items
                    .iter()
                    .map(|u| {
                        render::user(u, &groups.remove(&u.id).unwrap_or_default(), &ctx.base_url)
                    })
                    .collect();
                Ok((items, page.total))
            }
            ResourceKind::Group => {
                let page = self
                    .dir
                    .scan_groups(&ctx.org, scan)
                    .await
                    .map_err(store_error)?;
                let ids: Vec<_> = page.items.iter().map(|g| g.id.clone()).collect();
                let mut members = if ids.is_empty() {
                    Default::default()
                } else {
                    self.dir
                        .members_of(&ctx.org, &ids)
                        .await
                        .map_err(store_error)?
                };
                let items = page
                    .items
                    .iter()
                    .map(|g| {
                        render::group(g, &members.remove(&g.id).unwrap_or_default(), &ctx.base_url)
                    })
                    .collect();
                Ok((items, page.total))
            }
        }
    }
}

fn is_core(kind: ResourceKind, path: &AttrPath) -> bool {
    path.urn
        .as_deref()
        .is_none_or(|u| u.eq_ignore_ascii_case(kind.core_schema()))
}

/// The index that can answer the filter's pinned `eq`, if any.
fn index_lookup(kind: ResourceKind, f: &Filter) -> Option<(IndexedAttr, String)> {
    let (path, value) = filter::eq_hint(f)?;
    if path.sub.is_some() || !is_core(kind, path) {
        return None;
    }
    let name = path.name.to_ascii_lowercase();
    let attr = match (kind, name.as_str()) {
        (_, "id") => IndexedAttr::Id,
        (_, "externalid") => IndexedAttr::ExternalId,
        (ResourceKind::User, "username") => IndexedAttr::UserName,
        (ResourceKind::Group, "displayname") => IndexedAttr::DisplayName,
        _ => return None,
    };
    Some((attr, value.to_string()))
}

fn sort_for(kind: ResourceKind, raw: &str) -> Result<Sort, ScimError> {
    let lower = raw.to_ascii_lowercase();
    let short = lower.rsplit_once(':').map(|(_, a)| a).unwrap_or(&lower);
    let sql = match (kind, short) {
        (ResourceKind::User, "username") | (ResourceKind::Group, "displayname") => {
            Some(SortAttr::Name)
        }
        (_, "meta.created") => Some(SortAttr::Created),
        (_, "meta.lastmodified") => Some(SortAttr::Modified),
        _ => None,
    };
    if let Some(attr) = sql {
        return Ok(Sort::Sql(attr));
    }
    // Any other attribute path sorts in memory; reuse the filter grammar to parse it.
    let probe = format!("{raw} pr");
    match filter::parse(&probe) {
        Ok(Filter::Present(path)) => Ok(Sort::Memory(path)),
        _ => Err(ScimError::invalid_value(format!(
            "sortBy {raw} is not an attribute path"
        ))),
    }
}

fn sql_sort_path(kind: ResourceKind, attr: SortAttr) -> AttrPath {
    let (name, sub) = match (kind, attr) {
        (ResourceKind::User, SortAttr::Name) => ("userName", None),
        (ResourceKind::Group, SortAttr::Name) => ("displayName", None),
        (_, SortAttr::Modified) => ("meta", Some("lastModified")),
        (_, SortAttr::Created | SortAttr::Natural) => ("meta", Some("created")),
    };
    AttrPath {
        urn: None,
        name: name.to_string(),
        sub: sub.map(str::to_string),
    }
}
