//! Per-department shares of the node's resources that a hostile or broken
//! client could otherwise take all of (the mempool's share is in
//! `mempool.rs`). Each limit, when reached, is a
//! `RESOURCE_EXHAUSTED` that names it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Status;

use crate::errors;

/// Block subscriptions one department may hold open on a node.
pub const SUBSCRIPTIONS_PER_DEPARTMENT_MAX: u32 = 16;
/// Block subscriptions a node serves at once, all departments together.
pub const SUBSCRIPTIONS_MAX: u32 = 128;
const _: () = assert!(SUBSCRIPTIONS_PER_DEPARTMENT_MAX <= SUBSCRIPTIONS_MAX);

/// How long a subscriber may leave its buffer full before it is
/// disconnected: a subscriber that does not read must not hold blocks (and
/// the HTTP/2 buffers behind them) for ever.
pub const SUBSCRIBER_STALL_MAX: Duration = Duration::from_secs(30);

/// Uploads one department may stream into a node at once.
pub const UPLOADS_PER_DEPARTMENT_MAX: u32 = 8;
/// Uploads a node takes at once, all departments together.
pub const UPLOADS_MAX: u32 = 64;
const _: () = assert!(UPLOADS_PER_DEPARTMENT_MAX <= UPLOADS_MAX);

/// Transaction feeds (`SubmitTransactionStream`) one department may hold
/// open on a node.
pub const FEEDS_PER_DEPARTMENT_MAX: u32 = 8;
/// Transaction feeds a node serves at once, all departments together.
pub const FEEDS_MAX: u32 = 64;
const _: () = assert!(FEEDS_PER_DEPARTMENT_MAX <= FEEDS_MAX);

/// Calls one department may make to a node per second, on average
/// ([`RequestRates`]); a burst may reach [`REQUESTS_BURST_MAX`]. Far above
/// what the load generator needs (it submits about 2,000 per department
/// and second and learns of commits from one block subscription), far below
/// what would let one department starve the others.
pub const REQUESTS_PER_SECOND_PER_DEPARTMENT: u32 = 10_000;
pub const REQUESTS_BURST_MAX: u32 = 20_000;
const _: () = assert!(REQUESTS_PER_SECOND_PER_DEPARTMENT <= REQUESTS_BURST_MAX);

/// A token bucket per department: each call takes a token, tokens come back
/// at [`REQUESTS_PER_SECOND_PER_DEPARTMENT`] up to [`REQUESTS_BURST_MAX`].
#[derive(Debug, Default)]
pub struct RequestRates {
    buckets: Mutex<BTreeMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl RequestRates {
    /// Takes one call's token for `caller` (a department's certificate
    /// identity) at `now`, or refuses.
    pub fn take(&self, caller: &str, now: std::time::Instant) -> Result<(), Status> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let burst = f64::from(REQUESTS_BURST_MAX);
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * f64::from(REQUESTS_PER_SECOND_PER_DEPARTMENT)).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        // The bucket holds a token again after this long.
        let wait = (1.0 - bucket.tokens) / f64::from(REQUESTS_PER_SECOND_PER_DEPARTMENT);
        Err(errors::Failure::new(
            tonic::Code::ResourceExhausted,
            errors::ErrorReason::LimitReached,
            format!(
                "{caller} is calling this node faster than {REQUESTS_PER_SECOND_PER_DEPARTMENT} times a second (REQUESTS_PER_SECOND_PER_DEPARTMENT); slow down and retry"
            ),
        )
        .meta("limit", "REQUESTS_PER_SECOND_PER_DEPARTMENT")
        .retry_after(Duration::from_secs_f64(wait.max(0.001)))
        .status())
    }
}

/// Places for long-lived calls of one kind (block subscriptions, uploads),
/// counted by department, with a per-department and a node-wide bound.
#[derive(Debug)]
pub struct Slots {
    /// What a place is for, e.g. "block subscriptions", and the names of
    /// the two limits, for the refusal.
    what: &'static str,
    per_department: (u32, &'static str),
    total: (u32, &'static str),
    open: Mutex<BTreeMap<String, u32>>,
}

/// One call's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    department: String,
}

impl Slots {
    pub fn subscriptions() -> Arc<Self> {
        Arc::new(Self {
            what: "block subscriptions",
            per_department: (
                SUBSCRIPTIONS_PER_DEPARTMENT_MAX,
                "SUBSCRIPTIONS_PER_DEPARTMENT_MAX",
            ),
            total: (SUBSCRIPTIONS_MAX, "SUBSCRIPTIONS_MAX"),
            open: Mutex::default(),
        })
    }

    pub fn uploads() -> Arc<Self> {
        Arc::new(Self {
            what: "uploads",
            per_department: (UPLOADS_PER_DEPARTMENT_MAX, "UPLOADS_PER_DEPARTMENT_MAX"),
            total: (UPLOADS_MAX, "UPLOADS_MAX"),
            open: Mutex::default(),
        })
    }

    pub fn feeds() -> Arc<Self> {
        Arc::new(Self {
            what: "transaction feeds",
            per_department: (FEEDS_PER_DEPARTMENT_MAX, "FEEDS_PER_DEPARTMENT_MAX"),
            total: (FEEDS_MAX, "FEEDS_MAX"),
            open: Mutex::default(),
        })
    }

    /// A place for one more call of `department`, unless that department or
    /// the node is at its limit.
    pub fn open(self: &Arc<Self>, department: &str) -> Result<Slot, Status> {
        let mut open = self.lock();
        let total: u32 = open.values().sum();
        let mine = open.get(department).copied().unwrap_or(0);
        let what = self.what;
        let (per_department, per_department_name) = self.per_department;
        let (total_max, total_name) = self.total;
        if mine >= per_department {
            return Err(errors::limit_reached(
                per_department_name,
                format!(
                    "department {department:?} has {mine} {what} open on this node, the most one department may ({per_department_name}); finish one first"
                ),
            ));
        }
        if total >= total_max {
            return Err(errors::limit_reached(
                total_name,
                format!(
                    "this node has {total} {what} open, its most ({total_name}); try another node or later"
                ),
            ));
        }
        open.insert(department.to_owned(), mine + 1);
        Ok(Slot {
            slots: self.clone(),
            department: department.to_owned(),
        })
    }

    /// Open places of `department`.
    #[cfg(test)]
    pub fn count(&self, department: &str) -> u32 {
        self.lock().get(department).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        // Counts stay consistent between calls; a panic elsewhere while
        // holding the lock does not corrupt them.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        if let Some(count) = open.get_mut(&self.department) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.department);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_department_gets_its_share_and_places_come_back() {
        let subscriptions = Slots::subscriptions();
        let slots: Vec<_> = (0..SUBSCRIPTIONS_PER_DEPARTMENT_MAX)
            .map(|_| subscriptions.open("tax").expect("within the share"))
            .collect();
        let refused = subscriptions.open("tax").expect_err("over the share");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("SUBSCRIPTIONS_PER_DEPARTMENT_MAX")
        );
        // Another department is not affected.
        let health = subscriptions.open("health").expect("its own share");
        drop(slots);
        assert_eq!(subscriptions.count("tax"), 0);
        assert_eq!(subscriptions.count("health"), 1);
        drop(health);
        assert_eq!(subscriptions.count("health"), 0);
    }

    #[test]
    fn the_node_has_a_total() {
        let subscriptions = Slots::subscriptions();
        let departments = SUBSCRIPTIONS_MAX / SUBSCRIPTIONS_PER_DEPARTMENT_MAX;
        let _slots: Vec<_> = (0..departments)
            .flat_map(|d| {
                let subscriptions = subscriptions.clone();
                (0..SUBSCRIPTIONS_PER_DEPARTMENT_MAX)
                    .map(move |_| subscriptions.open(&format!("d{d}")).expect("within"))
            })
            .collect();
        let refused = subscriptions.open("late").expect_err("node full");
        assert!(
            refused.message().contains("SUBSCRIPTIONS_MAX"),
            "{refused:?}"
        );
    }

    #[test]
    fn uploads_have_their_own_limits() {
        let uploads = Slots::uploads();
        let _held: Vec<_> = (0..UPLOADS_PER_DEPARTMENT_MAX)
            .map(|_| uploads.open("civil").expect("within"))
            .collect();
        let refused = uploads.open("civil").expect_err("over the share");
        assert!(
            refused.message().contains("8 uploads open")
                && refused.message().contains("UPLOADS_PER_DEPARTMENT_MAX"),
            "{refused:?}"
        );
        // Subscriptions are counted apart.
        Slots::subscriptions().open("civil").expect("another kind");
    }

    #[test]
    fn a_department_calling_too_fast_is_slowed_and_others_are_not() {
        let rates = RequestRates::default();
        let start = std::time::Instant::now();
        for _ in 0..REQUESTS_BURST_MAX {
            rates.take("tax", start).expect("within the burst");
        }
        let refused = rates.take("tax", start).expect_err("burst spent");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("REQUESTS_PER_SECOND_PER_DEPARTMENT")
        );
        rates
            .take("health", start)
            .expect("another department's bucket");
        // A tenth of a second later, a tenth of the rate has come back.
        let later = start + std::time::Duration::from_millis(100);
        for _ in 0..REQUESTS_PER_SECOND_PER_DEPARTMENT / 10 {
            rates.take("tax", later).expect("refilled");
        }
        assert!(rates.take("tax", later).is_err());
    }
}
