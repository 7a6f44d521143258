//! The one projection writer, [`Access::converge`]: read the stored projection, then the
//! system of record, then compare-and-set on the version read; revoke (epoch moved, tokens
//! purged in the same vault step) when anything was lost. The rule and why it holds are in
//! the parent module's header.

use super::*;

impl Access {
    /// The one projection writer (see the module header).
    pub(super) async fn converge(
        &self,
        org: &OrgId,
        user: &UserId,
        mode: Mode,
        reason: &str,
        actor: &str,
    ) -> Result<SyncOutcome, AccessError> {
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            // The projection is read before the system of record: if the write below lands,
            // nothing was written in between, so this read is still what is stored.
            let current = self.vault.read(org, user, "_").await?.projection;
            if mode == Mode::Repair && current.is_none() {
                return Ok(SyncOutcome {
                    epoch: 0,
                    revoked: Vec::new(),
                    bumped: false,
                    changed: false,
                });
            }
            let derived = self.derive(org, user).await?;
            if !derived.exists && current.is_none() {
                // Nobody to protect: no projection means no token can be served.
                return Ok(SyncOutcome {
                    epoch: 0,
                    revoked: Vec::new(),
                    bumped: false,
                    changed: false,
                });
            }
            let held = self.vault.token_connectors(org, user).await?;
            let lost = lost_access(current.as_ref(), &derived, &held);
            // Without a projection no token can exist: nothing to revoke by force.
            let forced = matches!(mode, Mode::Revoke | Mode::Kill) && current.is_some();
            let revoke = lost || forced;
            let next = Projection {
                active: derived.active,
                locked: derived.locked,
                // Where a new projection starts: now, so that a projection rebuilt after a
                // vault flush is newer than any token minted before it.
                epoch: current.as_ref().map_or_else(now_micros, |p| p.epoch),
                version: 0,
                connectors: derived.connectors,
            };
            let same = current.as_ref().is_some_and(|c| c.same_access(&next));
            if same && !revoke {
                // Already in line with this read of the system of record. Unless repairing,
                // the sync still ends in a compare-and-set of its own (a version move with
                // the same access): a writer that read the system of record before this
                // sync's change committed, and has not written yet, then finds the version
                // moved and re-reads, instead of landing its older view after this one.
                let epoch = current.as_ref().map_or(0, |p| p.epoch);
                if mode != Mode::Repair {
                    let write = ProjectionWrite {
                        expected: current.as_ref().map(|p| p.version),
                        projection: &next,
                        revoke: false,
                    };
                    if self.vault.write_projection(org, user, write).await? == Written::Moved {
                        continue;
                    }
                } else {
                    // An offboarding whose upstream part failed (the projection already says
                    // so) may have left grants behind: they end now.
                    self.repair_upstream_grants(org, user, &next.connectors, epoch)
                        .await?;
                }
                return Ok(SyncOutcome {
                    epoch,
                    revoked: Vec::new(),
                    bumped: false,
                    changed: false,
                });
            }
            // Upstream access tokens about to be purged, read first: the purge leaves nothing
            // to revoke them with.
            let upstream_held = if revoke {
                self.upstream_tokens(org, user, current.as_ref(), &held)
                    .await?
            } else {
                Vec::new()
            };
            let write = ProjectionWrite {
                expected: current.as_ref().map(|p| p.version),
                projection: &next,
                revoke,
            };
            let (epoch, purged) = match self.vault.write_projection(org, user, write).await? {
                Written::Moved => continue,
                Written::Stored { epoch, purged, .. } => (epoch, purged),
            };
            if mode == Mode::Repair {
                self.counters.repairs.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(org = %org, user = %user, "projection repaired by the reconciler");
            }
            if !revoke {
                if current.is_some() {
                    self.announce_change(org, user, &next, epoch).await;
                }
                return Ok(SyncOutcome {
                    epoch,
                    revoked: Vec::new(),
                    bumped: false,
                    changed: true,
                });
            }
            self.counters.revocations.fetch_add(1, Ordering::Relaxed);
            let kind = if derived.locked {
                "user.locked"
            } else if !next.active {
                "user.deactivated"
            } else {
                "token.revoked"
            };
            let lost_connectors: Vec<String> = current
                .as_ref()
                .map(|p| {
                    p.connectors
                        .keys()
                        .filter(|c| !next.connectors.contains_key(*c))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            // Grants end with the access that needed them: all of them when the user can no
            // longer use anything, else those of the connectors lost; the kill switch ends
            // only tokens (the person's consents stay).
            let everything = !next.active || next.locked || !derived.exists;
            let ended: Option<&[String]> = if mode == Mode::Kill {
                Some(&[])
            } else if everything {
                None
            } else {
                Some(&lost_connectors)
            };
            self.offboard_upstream(org, user, ended, &upstream_held, epoch)
                .await?;
            self.record_revocation(
                org,
                user,
                epoch,
                &purged,
                Revocation {
                    kind,
                    reason,
                    action: if mode == Mode::Kill {
                        "access.kill_switch"
                    } else {
                        "access.revoke"
                    },
                    actor,
                    lost: lost_connectors,
                    all: (mode != Mode::Kill).then_some(!next.active || next.locked),
                },
            )
            .await?;
            return Ok(SyncOutcome {
                epoch,
                revoked: purged,
                bumped: true,
                changed: true,
            });
        }
        tracing::warn!(org = %org, user = %user, "projection write gave up: it kept moving");
        Err(AccessError::Contended)
    }
}

/// Whether going from `current` to `derived` takes anything away: the user stops being
/// active, becomes locked, or loses a connector or one of its scopes; or a token is held for
/// a connector no longer entitled.
fn lost_access(current: Option<&Projection>, derived: &Derived, held: &[String]) -> bool {
    let usable = derived.active && !derived.locked;
    let was_usable = current.is_some_and(|p| p.active && !p.locked);
    let shrank = current.is_some_and(|p| {
        p.connectors
            .iter()
            .any(|(c, scopes)| match derived.connectors.get(c) {
                None => true,
                Some(now) => !scopes.iter().all(|s| now.contains(s)),
            })
    });
    let orphaned = held
        .iter()
        .any(|f| !derived.connectors.contains_key(field_connector(f)));
    (!usable && (was_usable || !held.is_empty())) || shrank || orphaned
}

/// Now in microseconds: the epoch a projection starts at when none exists.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
