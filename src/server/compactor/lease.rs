//! Who compacts a tenant when several servers share a bucket: one lease object per
//! tenant (`<tenant>/compaction.lease`) names a server and an expiry. Only the holder
//! compacts the tenant, deletes its replaced blocks and sweeps its retention; the others
//! skip it. Two compactors merging overlapping sets of blocks would both publish a block
//! replacing some of the same inputs, and queries would count those spans twice.
//!
//! The lease is only ever written conditionally — created with `If-None-Match: *`,
//! replaced with `If-Match: <etag>` of the copy just read — so of two servers racing for
//! it exactly one wins. A holder renews it once half of `compaction.lease_duration` has
//! passed (every cycle looks), and confirms it again right before a compaction's
//! result becomes visible, so a server that stalled past its expiry (and whose lease
//! another server took) discards its result instead of publishing it. A server that dies
//! stops renewing; another takes over once the lease has expired. Expiry compares wall
//! clocks of different hosts, so clock skew must stay well under the lease duration.
//!
//! A local directory belongs to one server: there the lease is always held, with no I/O.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::server::storage::{BlockStore, StorageError};
use crate::tenant::TenantId;

/// Format version of the lease object.
const LEASE_VERSION: u32 = 1;

/// The lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecord {
    version: u32,
    /// The server's instance ID (its WAL's).
    holder: Uuid,
    expires_at_unix_ms: u64,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The compaction leases this server holds or looks at.
#[derive(Debug)]
pub struct TenantLeases {
    /// `None` for a store only this server uses.
    shared: Option<SharedLeases>,
}

#[derive(Debug)]
struct SharedLeases {
    store: BlockStore,
    holder: Uuid,
    duration: Duration,
    /// Tenant → when the lease this server last wrote expires (unix ms).
    held: Mutex<HashMap<TenantId, u64>>,
}

impl TenantLeases {
    /// For a store no other server writes to: every tenant is this server's.
    pub fn exclusive() -> TenantLeases {
        TenantLeases { shared: None }
    }

    /// For a bucket shared with other servers; `holder` identifies this one.
    pub fn shared(store: BlockStore, holder: Uuid, duration: Duration) -> TenantLeases {
        TenantLeases {
            shared: Some(SharedLeases {
                store,
                holder,
                duration,
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// This server's ID in the leases; `None` when the store is not shared.
    pub fn holder(&self) -> Option<Uuid> {
        self.shared.as_ref().map(|shared| shared.holder)
    }

    /// Whether this server held `tenant`'s lease when it last looked, without asking the
    /// store: the holder lists the tenant's blocks itself and writes its index.
    pub fn holds(&self, tenant: &TenantId, now: SystemTime) -> bool {
        match &self.shared {
            None => true,
            Some(shared) => shared
                .held
                .lock()
                .get(tenant)
                .is_some_and(|expires| unix_ms(now) < *expires),
        }
    }

    /// Whether this server may compact `tenant` now. Renews (or takes) the lease when
    /// less than half of it is left, so a holder calling this every cycle keeps it.
    ///
    /// # Errors
    /// The store could not be read or written; the caller skips the tenant this time.
    pub async fn hold(&self, tenant: &TenantId, now: SystemTime) -> Result<bool, StorageError> {
        let Some(shared) = &self.shared else {
            return Ok(true);
        };
        let half = u64::try_from(shared.duration.as_millis() / 2).unwrap_or(u64::MAX);
        if shared
            .held
            .lock()
            .get(tenant)
            .is_some_and(|expires| unix_ms(now).saturating_add(half) < *expires)
        {
            return Ok(true);
        }
        shared.renew(tenant, now).await
    }

    /// Renews the lease whatever its age and says whether this server still holds it:
    /// right before a compaction's result becomes visible.
    ///
    /// # Errors
    /// The store could not be read or written.
    pub async fn confirm(&self, tenant: &TenantId, now: SystemTime) -> Result<bool, StorageError> {
        match &self.shared {
            None => Ok(true),
            Some(shared) => shared.renew(tenant, now).await,
        }
    }
}

impl SharedLeases {
    async fn renew(&self, tenant: &TenantId, now: SystemTime) -> Result<bool, StorageError> {
        let now_ms = unix_ms(now);
        let current = self.store.read_lease(tenant).await?;
        let (previous, replacing) = match current {
            None => (None, None),
            Some((bytes, version)) => match serde_json::from_slice::<LeaseRecord>(&bytes) {
                Ok(record) => (Some(record), Some(version)),
                Err(error) => {
                    // Replaced like an expired one: a lease nobody can read would
                    // otherwise stop compaction of the tenant for good.
                    tracing::warn!(tenant = %tenant, %error, "replacing unreadable compaction lease");
                    (None, Some(version))
                }
            },
        };
        if let Some(record) = &previous {
            if record.holder != self.holder && record.expires_at_unix_ms > now_ms {
                self.held.lock().remove(tenant);
                tracing::debug!(tenant = %tenant, holder = %record.holder, "compaction lease held by another server");
                return Ok(false);
            }
        }
        let expires_at_unix_ms =
            now_ms.saturating_add(u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX));
        let record = LeaseRecord {
            version: LEASE_VERSION,
            holder: self.holder,
            expires_at_unix_ms,
        };
        let body = serde_json::to_vec(&record).map_err(|error| StorageError::Lease {
            tenant: tenant.clone(),
            message: error.to_string(),
        })?;
        if !self
            .store
            .write_lease(tenant, Bytes::from(body), replacing)
            .await?
        {
            self.held.lock().remove(tenant);
            tracing::debug!(tenant = %tenant, "another server took the compaction lease first");
            return Ok(false);
        }
        let was_ours = self
            .held
            .lock()
            .insert(tenant.clone(), expires_at_unix_ms)
            .is_some();
        if !was_ours {
            let previous_holder = previous
                .filter(|record| record.holder != self.holder)
                .map(|record| record.holder.to_string());
            tracing::info!(
                tenant = %tenant,
                previous_holder = previous_holder.as_deref().unwrap_or("none"),
                lease_duration = ?self.duration,
                "compaction lease taken; this server compacts the tenant"
            );
        }
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    fn leases(store: &BlockStore, holder: u128) -> TenantLeases {
        TenantLeases::shared(
            store.clone(),
            Uuid::from_u128(holder),
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn one_server_holds_the_lease_until_it_expires() {
        let store = BlockStore::in_memory();
        let (a, b) = (leases(&store, 1), leases(&store, 2));
        let start = SystemTime::now();
        assert!(a.hold(&tenant(), start).await.unwrap());
        assert!(!b.hold(&tenant(), start).await.unwrap());
        // The holder renews after half the duration; the other still waits.
        let later = start + Duration::from_secs(45);
        assert!(a.hold(&tenant(), later).await.unwrap());
        assert!(!b
            .hold(&tenant(), later + Duration::from_secs(30))
            .await
            .unwrap());
        // The holder stops renewing (dies): the other takes over after expiry, and the
        // old holder cannot confirm any more.
        let after_expiry = later + Duration::from_secs(61);
        assert!(b.hold(&tenant(), after_expiry).await.unwrap());
        assert!(!a.confirm(&tenant(), after_expiry).await.unwrap());
        assert!(!a.hold(&tenant(), after_expiry).await.unwrap());
        // Other tenants have leases of their own.
        let other = TenantId::new("other").unwrap();
        assert!(a.hold(&other, after_expiry).await.unwrap());
    }

    #[tokio::test]
    async fn of_two_servers_racing_for_a_free_lease_exactly_one_wins() {
        let store = BlockStore::in_memory();
        let servers: Vec<TenantLeases> = (0..8).map(|i| leases(&store, i)).collect();
        let (tenant, now) = (tenant(), SystemTime::now());
        let won = futures::future::join_all(servers.iter().map(|s| s.hold(&tenant, now))).await;
        assert_eq!(won.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
        // An expired lease: again exactly one of the racers.
        let later = now + Duration::from_secs(120);
        let won =
            futures::future::join_all(servers.iter().map(|s| s.confirm(&tenant, later))).await;
        assert_eq!(won.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
    }

    #[tokio::test]
    async fn an_unreadable_lease_is_replaced_and_an_exclusive_store_needs_none() {
        let store = BlockStore::in_memory();
        store
            .write_lease(&tenant(), Bytes::from_static(b"not json"), None)
            .await
            .unwrap();
        assert!(leases(&store, 1)
            .hold(&tenant(), SystemTime::now())
            .await
            .unwrap());
        assert!(TenantLeases::exclusive()
            .hold(&tenant(), SystemTime::now())
            .await
            .unwrap());
    }
}
