//! Per-department shares of the node's resources that a hostile or broken
//! client could otherwise take all of. Each limit, when reached, is a
//! `RESOURCE_EXHAUSTED` that names it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Status;

/// Block subscriptions one department may hold open on a node.
pub const SUBSCRIPTIONS_PER_DEPARTMENT_MAX: u32 = 16;
/// Block subscriptions a node serves at once, all departments together.
pub const SUBSCRIPTIONS_MAX: u32 = 128;
const _: () = assert!(SUBSCRIPTIONS_PER_DEPARTMENT_MAX <= SUBSCRIPTIONS_MAX);

/// How long a subscriber may leave its buffer full before it is
/// disconnected: a subscriber that does not read must not hold blocks (and
/// the HTTP/2 buffers behind them) for ever.
pub const SUBSCRIBER_STALL_MAX: Duration = Duration::from_secs(30);

/// Open subscriptions, by department.
#[derive(Debug, Default)]
pub struct Subscriptions {
    open: Mutex<BTreeMap<String, u32>>,
}

/// A subscription's place; dropping it frees the place.
#[derive(Debug)]
pub struct SubscriptionSlot {
    subscriptions: Arc<Subscriptions>,
    department: String,
}

impl Subscriptions {
    /// A place for one more subscription of `department`, unless that
    /// department or the node is at its limit.
    pub fn open(self: &Arc<Self>, department: &str) -> Result<SubscriptionSlot, Status> {
        let mut open = self.lock();
        let total: u32 = open.values().sum();
        let mine = open.get(department).copied().unwrap_or(0);
        if mine >= SUBSCRIPTIONS_PER_DEPARTMENT_MAX {
            return Err(Status::resource_exhausted(format!(
                "department {department:?} holds {mine} block subscriptions on this node, the most one department may (SUBSCRIPTIONS_PER_DEPARTMENT_MAX); close one first"
            )));
        }
        if total >= SUBSCRIPTIONS_MAX {
            return Err(Status::resource_exhausted(format!(
                "this node serves {total} block subscriptions, its most (SUBSCRIPTIONS_MAX); try another node or later"
            )));
        }
        open.insert(department.to_owned(), mine + 1);
        Ok(SubscriptionSlot {
            subscriptions: self.clone(),
            department: department.to_owned(),
        })
    }

    /// Open subscriptions of `department`.
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

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let mut open = self.subscriptions.lock();
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
        let subscriptions = Arc::new(Subscriptions::default());
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
        let subscriptions = Arc::new(Subscriptions::default());
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
}
