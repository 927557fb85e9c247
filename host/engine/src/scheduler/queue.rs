//! Weighted fair queuing of turns between tenants: who runs next, and the books that decide
//! it. No threads and no futures here, so the ordering properties are tested on their own.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// The turn queue of every tenant, and how many turns run now.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    /// Turns that may run at once.
    slots: usize,
    /// Turns running now.
    running: usize,
    /// Turns waiting, over every tenant.
    waiting: usize,
    tenants: HashMap<Arc<str>, Tenant<T>>,
    /// The least virtual time among tenants with live calls, as last seen: a tenant coming
    /// back from idle starts here, so time away earns it no credit.
    floor: f64,
    /// Turns granted so far.
    granted: u64,
}

#[derive(Debug)]
struct Tenant<T> {
    /// CPU nanoseconds used, divided by the weight.
    vtime: f64,
    weight: f64,
    /// Turns waiting, in arrival order.
    ready: VecDeque<T>,
    /// Calls alive (running, waiting, or waiting on I/O).
    live: usize,
    /// When its last turn started (in turns granted): ties go to whoever waited longest.
    served: u64,
}

impl<T> Queue<T> {
    /// A queue letting `slots` turns run at once.
    pub(crate) fn new(slots: usize) -> Queue<T> {
        Queue {
            slots: slots.max(1),
            running: 0,
            waiting: 0,
            tenants: HashMap::new(),
            floor: 0.0,
            granted: 0,
        }
    }

    /// A new call of `tenant` with `weight` (1 and up).
    pub(crate) fn arrive(&mut self, tenant: &Arc<str>, weight: u32) {
        let floor = self.floor;
        let t = self.tenants.entry(tenant.clone()).or_insert(Tenant {
            vtime: floor,
            weight: 1.0,
            ready: VecDeque::new(),
            live: 0,
            served: 0,
        });
        if t.live == 0 {
            // Back from idle: no credit for the time away.
            t.vtime = t.vtime.max(floor);
        }
        t.weight = f64::from(weight.max(1));
        t.live += 1;
    }

    /// A call of `tenant` ended (finished or dropped).
    pub(crate) fn depart(&mut self, tenant: &str) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.live = t.live.saturating_sub(1);
        }
        self.tidy();
    }

    /// Whether a turn could start now without waiting: a slot is free and nobody waits.
    #[cfg(test)]
    pub(crate) fn free(&self) -> bool {
        self.running < self.slots && self.waiting == 0
    }

    /// Queues a turn of `tenant` (which has a live call).
    pub(crate) fn push(&mut self, tenant: &str, turn: T) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.ready.push_back(turn);
            self.waiting += 1;
        }
    }

    /// The next turn to run, if a slot is free: the first waiting turn of the tenant with the
    /// least virtual time. It holds a slot until [`Queue::end`].
    pub(crate) fn next(&mut self) -> Option<(Arc<str>, T)> {
        if self.running >= self.slots {
            return None;
        }
        let (name, t) = self
            .tenants
            .iter_mut()
            .filter(|(_, t)| !t.ready.is_empty())
            .min_by(|a, b| (a.1.vtime.total_cmp(&b.1.vtime)).then(a.1.served.cmp(&b.1.served)))?;
        let turn = t.ready.pop_front()?;
        self.granted += 1;
        t.served = self.granted;
        self.waiting -= 1;
        self.running += 1;
        let name = name.clone();
        self.tidy();
        Some((name, turn))
    }

    /// A turn of `tenant` ended after `used` of CPU time; its slot is free again.
    pub(crate) fn end(&mut self, tenant: &str, used: Duration) {
        self.running = self.running.saturating_sub(1);
        self.charge(tenant, used);
    }

    /// Books `used` of CPU time to `tenant` (a turn that ran outside the slots).
    pub(crate) fn charge(&mut self, tenant: &str, used: Duration) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.vtime += used.as_nanos() as f64 / t.weight;
        }
    }

    /// Every waiting turn (the queue is shutting down).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.waiting = 0;
        self.tenants
            .values_mut()
            .flat_map(|t| t.ready.drain(..))
            .collect()
    }

    /// Moves the floor up to the least virtual time of the tenants with live calls, and
    /// forgets tenants that have none and no lead over the floor.
    fn tidy(&mut self) {
        let least = self
            .tenants
            .values()
            .filter(|t| t.live > 0)
            .map(|t| t.vtime)
            .reduce(f64::min);
        if let Some(least) = least {
            self.floor = self.floor.max(least);
        }
        let floor = self.floor;
        self.tenants
            .retain(|_, t| t.live > 0 || !t.ready.is_empty() || t.vtime > floor);
    }

    /// Turns running now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so every case can be replayed from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn name(i: usize) -> Arc<str> {
        Arc::from(format!("t{i}").as_str())
    }

    /// Runs `turns` turns on one slot of tenants that always want more (each keeps one turn
    /// queued), each turn costing `cost(tenant)`; returns the CPU time each tenant got.
    fn saturate(weights: &[u32], cost: impl Fn(usize) -> u64, turns: usize) -> Vec<u64> {
        let mut q = Queue::new(1);
        for (i, w) in weights.iter().enumerate() {
            q.arrive(&name(i), *w);
            q.push(&name(i), i);
        }
        let mut cpu = vec![0u64; weights.len()];
        for _ in 0..turns {
            let (tenant, i) = q.next().expect("someone waits");
            let used = cost(i);
            cpu[i] += used;
            q.end(&tenant, Duration::from_nanos(used));
            q.push(&tenant, i);
        }
        cpu
    }

    #[test]
    fn cpu_follows_the_weights_whatever_the_turns_cost() {
        // Property, over many random cases: saturating tenants with random weights (1..=10)
        // and random per-turn costs (10..=1000 µs) get CPU in proportion to their weights,
        // within one turn's cost each.
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let n = 2 + rng.below(7) as usize;
            let weights: Vec<u32> = (0..n).map(|_| 1 + rng.below(10) as u32).collect();
            let costs: Vec<u64> = (0..n).map(|_| 10_000 + rng.below(990_001)).collect();
            let cpu = saturate(&weights, |i| costs[i], 4000);
            let total: u64 = cpu.iter().sum();
            let wsum: u32 = weights.iter().sum();
            let max_cost = *costs.iter().max().unwrap();
            for i in 0..n {
                let fair = total as f64 * f64::from(weights[i]) / f64::from(wsum);
                let off = (cpu[i] as f64 - fair).abs();
                assert!(
                    off <= 2.0 * max_cost as f64,
                    "seed {seed}: tenant {i} (weight {}) got {} ns, fair share {fair:.0} ns, weights {weights:?}, costs {costs:?}",
                    weights[i],
                    cpu[i]
                );
            }
        }
    }

    #[test]
    fn turn_counts_follow_the_weights_for_equal_turns() {
        let cpu = saturate(&[1, 3], |_| 1_000, 4000);
        assert_eq!(cpu, vec![1_000_000, 3_000_000]);
    }

    #[test]
    fn a_tenant_with_work_is_served_within_a_bounded_number_of_turns() {
        // Property: however long the others have run and however many turns they queued, a
        // tenant arriving with work waits for at most the turns running when it arrived (one
        // per slot) before its first turn.
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let slots = 1 + rng.below(4) as usize;
            let mut q = Queue::new(slots);
            let hogs = 1 + rng.below(6) as usize;
            for h in 0..hogs {
                q.arrive(&name(h), 1 + rng.below(10) as u32);
                for _ in 0..1 + rng.below(16) {
                    q.push(&name(h), h);
                }
            }
            // The hogs run a random while.
            let mut running: Vec<Arc<str>> = Vec::new();
            for _ in 0..rng.below(2000) {
                while let Some((t, _)) = q.next() {
                    running.push(t);
                }
                let t = running.remove(rng.below(running.len() as u64) as usize);
                q.end(&t, Duration::from_micros(1 + rng.below(500)));
                q.push(&t, 0);
            }
            while let Some((t, _)) = q.next() {
                running.push(t);
            }
            assert_eq!(q.running(), slots.min(running.len()));
            // The newcomer, of any weight.
            let newcomer = name(99);
            q.arrive(&newcomer, 1 + rng.below(10) as u32);
            q.push(&newcomer, 99);
            let mut waited = 0;
            loop {
                let t = running.remove(0);
                q.end(&t, Duration::from_micros(1 + rng.below(500)));
                q.push(&t, 0);
                waited += 1;
                let (next, turn) = q.next().expect("a slot was freed");
                if turn == 99 {
                    break;
                }
                running.push(next);
                assert!(
                    waited <= slots,
                    "seed {seed}: waited {waited} turns on {slots} slots"
                );
            }
            assert!(waited <= slots, "seed {seed}: waited {waited} turns");
        }
    }

    #[test]
    fn an_idle_tenant_gets_no_credit_for_its_time_away() {
        let mut q = Queue::new(1);
        let (a, b) = (name(0), name(1));
        q.arrive(&a, 1);
        q.push(&a, 0);
        for _ in 0..300 {
            let (t, _) = q.next().unwrap();
            q.end(&t, Duration::from_micros(100));
            q.push(&t, 0);
        }
        // b arrives after a ran 300 turns: they alternate from now on, b does not get 300.
        q.arrive(&b, 1);
        q.push(&b, 1);
        let mut b_in_a_row = 0;
        let mut most = 0;
        for _ in 0..100 {
            let (t, i) = q.next().unwrap();
            if i == 1 {
                b_in_a_row += 1;
                most = most.max(b_in_a_row);
            } else {
                b_in_a_row = 0;
            }
            q.end(&t, Duration::from_micros(100));
            q.push(&t, i);
        }
        assert!(most <= 2, "b ran {most} turns in a row");
    }

    #[test]
    fn a_tenant_that_only_pauses_keeps_its_debt() {
        // a runs alone, goes idle for a moment (no live call) while b runs, and comes back: it
        // starts from where it was, not below the floor, and not ahead either.
        let mut q = Queue::new(1);
        let (a, b) = (name(0), name(1));
        q.arrive(&a, 1);
        q.arrive(&b, 1);
        q.push(&a, 0);
        q.push(&b, 1);
        let (t, _) = q.next().unwrap();
        q.end(&t, Duration::from_millis(10));
        // Whoever ran first leaves with 10 ms used; the other runs 1 ms and stays.
        q.depart(&t);
        let (u, _) = q.next().unwrap();
        assert_ne!(t, u);
        q.end(&u, Duration::from_millis(1));
        q.push(&u, 7);
        q.arrive(&t, 1);
        q.push(&t, 8);
        // The one that paused is 9 ms ahead: the other gets the next turns.
        let (next, _) = q.next().unwrap();
        assert_eq!(next, u);
    }

    #[test]
    fn slots_bound_the_turns_running_at_once() {
        let mut q = Queue::new(2);
        let a = name(0);
        q.arrive(&a, 1);
        for i in 0..5 {
            q.push(&a, i);
        }
        assert!(q.next().is_some());
        assert!(q.next().is_some());
        assert!(q.next().is_none());
        assert!(!q.free());
        q.end(&a, Duration::from_micros(5));
        assert!(q.next().is_some());
        assert_eq!(q.drain().len(), 2);
        assert_eq!(q.running(), 2);
    }
}
