//! The cost ledger: exact money accounting in integer nano-dollars (never summed floats), with
//! an optional budget. Spending goes through reservations: a caller reserves an upper bound for
//! a call before making it and settles the real cost after, so concurrent calls can never push
//! the total past the budget — a call that would is refused before it starts.

use std::sync::atomic::{AtomicU64, Ordering};

/// Nano-dollars per dollar.
pub const NANOS: f64 = 1e9;

pub fn usd_to_nanos(usd: f64) -> u64 {
    (usd * NANOS).round().max(0.0) as u64
}

pub fn nanos_to_usd(n: u64) -> f64 {
    n as f64 / NANOS
}

#[derive(Debug, Default)]
pub struct Ledger {
    budget: Option<u64>,
    spent: AtomicU64,
    reserved: AtomicU64,
    calls: AtomicU64,
}

/// A reservation: settle it with the call's real cost; dropped unsettled (the call was
/// abandoned), it is released.
#[derive(Debug)]
#[must_use]
pub struct Reservation<'a> {
    ledger: &'a Ledger,
    amount: u64,
    settled: bool,
}

impl Reservation<'_> {
    /// Record the real cost of the reserved call.
    pub fn settle(mut self, cost: u64) {
        self.ledger.spent.fetch_add(cost, Ordering::SeqCst);
        self.ledger.calls.fetch_add(1, Ordering::SeqCst);
        self.ledger.reserved.fetch_sub(self.amount, Ordering::SeqCst);
        self.settled = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.ledger.reserved.fetch_sub(self.amount, Ordering::SeqCst);
        }
    }
}

impl Ledger {
    pub fn new(budget_usd: Option<f64>) -> Ledger {
        Ledger { budget: budget_usd.map(usd_to_nanos), ..Ledger::default() }
    }

    /// Restore a ledger from a checkpoint.
    pub fn with_spent(budget_usd: Option<f64>, spent: u64, calls: u64) -> Ledger {
        let l = Ledger::new(budget_usd);
        l.spent.store(spent, Ordering::SeqCst);
        l.calls.store(calls, Ordering::SeqCst);
        l
    }

    /// Reserve `max_cost` nano-dollars, or refuse if spent + reserved + max_cost would pass the
    /// budget.
    pub fn reserve(&self, max_cost: u64) -> Option<Reservation<'_>> {
        let Some(budget) = self.budget else {
            self.reserved.fetch_add(max_cost, Ordering::SeqCst);
            return Some(Reservation { ledger: self, amount: max_cost, settled: false });
        };
        let mut cur = self.reserved.load(Ordering::SeqCst);
        loop {
            if self.spent.load(Ordering::SeqCst) + cur + max_cost > budget {
                return None;
            }
            match self.reserved.compare_exchange(cur, cur + max_cost, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(Reservation { ledger: self, amount: max_cost, settled: false }),
                Err(now) => cur = now,
            }
        }
    }

    /// Add spending recorded elsewhere (a stage resumed from its checkpoint).
    pub fn add_spent(&self, nanos: u64) {
        self.spent.fetch_add(nanos, Ordering::SeqCst);
    }

    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::SeqCst)
    }

    /// Nano-dollars reserved by calls still in flight.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn budget(&self) -> Option<u64> {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_keep_spending_within_budget() {
        let l = Ledger::new(Some(1.0));
        let a = l.reserve(600_000_000).unwrap();
        assert!(l.reserve(500_000_000).is_none(), "two reservations past the budget");
        a.settle(400_000_000);
        let b = l.reserve(500_000_000).unwrap();
        b.settle(500_000_000);
        assert_eq!(l.spent(), 900_000_000);
        assert!(l.reserve(200_000_000).is_none());
        assert_eq!(l.calls(), 2);
        // An abandoned call releases its reservation.
        let l = Ledger::new(Some(1.0));
        drop(l.reserve(900_000_000).unwrap());
        assert!(l.reserve(900_000_000).is_some());
    }
}
