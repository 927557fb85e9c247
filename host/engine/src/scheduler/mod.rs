//! Fair CPU between tenants: guest code runs in turns, and the next turn goes to the tenant
//! that has used least of its share.
//!
//! A guest gives its thread back every [`crate::compile::YIELD_FUEL`] units of fuel (and at
//! every host call that waits); each stretch of guest code between two such points is a
//! *turn*. At most one turn per guest thread runs at once. A tenant's *virtual time* advances
//! by the CPU time of its turns divided by its `cpu_weight`, and a free slot goes to the
//! waiting turn of the tenant with the least virtual time (weighted fair queuing, as CFS does
//! for processes; [`queue`]). A tenant back from idle starts at the least virtual time of the
//! busy ones, so it cannot hoard credit.
//!
//! Where turns run: a call's first turn runs at once on the thread that polls the call (its
//! CPU time booked to its tenant all the same), so a short call costs no hand-off and never
//! waits behind a slot that a preempted guest thread holds. A call that uses up a whole slice
//! and wants more is CPU-bound: its next turns run on the *guest threads* (one slot each), in
//! the queue's order. Those threads run at a lower OS priority than the host's own, so
//! accepting connections, parsing, verifying and short calls preempt guest code rather than
//! queue behind it.

mod os;
mod queue;

pub(crate) use os::thread_cpu;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use greentic_bundle::{GuestPriority, SchedulerMode, SchedulerSection};
use queue::Queue;
use tokio::sync::oneshot;

/// CPU time a call may use where it is polled before its next turns go to the guest threads:
/// less than one fuel slice of a tight loop, more than a short call spends before a host call
/// that completes at once wakes it.
pub const INLINE_CPU: Duration = Duration::from_micros(50);

/// A call's guest work, boxed to move between threads.
type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The turn scheduler of a runtime: the queue and the guest threads.
pub struct Scheduler {
    shared: Arc<Shared>,
    options: SchedulerSection,
    /// Guest threads started (on the first call that needs them).
    started: std::sync::Once,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("options", &self.options)
            .finish()
    }
}

struct Shared {
    queue: Mutex<Lot>,
    /// Signalled when a turn is queued (or the scheduler stops).
    work: Condvar,
}

struct Lot {
    queue: Queue<Arc<Task>>,
    stopping: bool,
}

/// Where a call's work is.
const INLINE: u8 = 0; // polled by its caller (until it turns out CPU-bound)
const IDLE: u8 = 1; // on the guest threads, waiting for I/O or a timer
const QUEUED: u8 = 2; // on the guest threads, waiting for a turn
const RUNNING: u8 = 3; // on a guest thread now
const WOKEN: u8 = 4; // running, and woken meanwhile: wants another turn
const DONE: u8 = 5;

struct Task {
    tenant: Arc<str>,
    status: AtomicU8,
    /// The caller went away: drop the work at its next turn.
    cancelled: AtomicBool,
    job: Mutex<Option<Job>>,
    /// CPU time its turns have used, in nanoseconds.
    cpu_ns: AtomicU64,
    shared: Weak<Shared>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        loop {
            match self.status.load(Ordering::Acquire) {
                IDLE => {
                    if self
                        .status
                        .compare_exchange(IDLE, QUEUED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        if let Some(shared) = self.shared.upgrade() {
                            shared.lock().queue.push(&self.tenant, self.clone());
                            shared.work.notify_one();
                        }
                        return;
                    }
                }
                RUNNING => {
                    if self
                        .status
                        .compare_exchange(RUNNING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return;
                    }
                }
                // Work polled by its caller is woken through the caller's waker; queued or
                // done needs nothing.
                _ => return,
            }
        }
    }
}

impl Task {
    /// Runs one turn of the work with `waker` (or drops it, if its caller went away) and books
    /// the turn's CPU time: whether the work is over, the turn's CPU time, and the call's so
    /// far in nanoseconds.
    fn turn(&self, waker: &Waker) -> (bool, Duration, u64) {
        let started = os::thread_cpu();
        let finished = {
            let mut slot = self.job.lock().unwrap_or_else(|e| e.into_inner());
            let done = match slot.as_mut() {
                Some(job) if !self.cancelled.load(Ordering::Acquire) => {
                    turn(job, &mut Context::from_waker(waker))
                }
                // Dropped by its caller (or already over): the work and its store go now.
                _ => true,
            };
            if done {
                *slot = None;
            }
            done
        };
        let used = os::thread_cpu().saturating_sub(started);
        let nanos = used.as_nanos() as u64;
        let total = self.cpu_ns.fetch_add(nanos, Ordering::Relaxed) + nanos;
        (finished, used, total)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Lot> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Polls `job` once with `cx`; `true` when it finished (or panicked: its answer is lost, and
/// the caller sees that).
fn turn(job: &mut Job, cx: &mut Context<'_>) -> bool {
    match std::panic::catch_unwind(AssertUnwindSafe(|| job.as_mut().poll(cx))) {
        Ok(Poll::Ready(())) => true,
        Ok(Poll::Pending) => false,
        Err(_) => {
            tracing::error!(target: "greentic::scheduler", "a call's guest work panicked; the call fails");
            true
        }
    }
}

impl Scheduler {
    /// A scheduler as `[host.scheduler]` says; its guest threads start with the first call
    /// that needs them.
    pub fn new(options: SchedulerSection) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            shared: Arc::new(Shared {
                queue: Mutex::new(Lot {
                    queue: Queue::new(Scheduler::threads_for(&options)),
                    stopping: false,
                }),
                work: Condvar::new(),
            }),
            options,
            started: std::sync::Once::new(),
        })
    }

    fn threads_for(options: &SchedulerSection) -> usize {
        match options.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// The options it was made with.
    pub fn options(&self) -> &SchedulerSection {
        &self.options
    }

    /// Whether guest work is scheduled between tenants (`mode = "fair"`).
    pub fn fair(&self) -> bool {
        self.options.mode == SchedulerMode::Fair
    }

    /// Runs `work` (one call's guest work) for `tenant` with `weight`, in turns; the answer
    /// and the CPU time it took, or [`Lost`] when the work panicked or the scheduler stopped. Must be called within a
    /// Tokio runtime: the guest threads reach the runtime's I/O and timers through it.
    /// Dropping the returned future drops the work at once, or at its next turn.
    pub fn run<T, F>(&self, tenant: &str, weight: u32, work: F) -> Turns<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        self.start();
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::pin(async move {
            let _ = tx.send(work.await);
        });
        let tenant: Arc<str> = Arc::from(tenant);
        let task = Arc::new(Task {
            tenant: tenant.clone(),
            status: AtomicU8::new(INLINE),
            cancelled: AtomicBool::new(false),
            job: Mutex::new(Some(job)),
            cpu_ns: AtomicU64::new(0),
            shared: Arc::downgrade(&self.shared),
        });
        self.shared.lock().queue.arrive(&tenant, weight);
        Turns {
            shared: self.shared.clone(),
            task,
            rx,
            noting: None,
            moved: false,
            over: false,
        }
    }

    fn start(&self) {
        self.started.call_once(|| {
            let handle = tokio::runtime::Handle::current();
            for n in 0..Scheduler::threads_for(&self.options) {
                let shared = self.shared.clone();
                let handle = handle.clone();
                let priority = self.options.priority;
                let spawned = std::thread::Builder::new()
                    .name(format!("greentic-guest-{n}"))
                    .spawn(move || guest_thread(shared, handle, priority));
                if let Err(e) = spawned {
                    tracing::error!(target: "greentic::scheduler", error = %e, "could not start a guest thread");
                }
            }
        });
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let waiting = {
            let mut lot = self.shared.lock();
            lot.stopping = true;
            lot.queue.drain()
        };
        self.shared.work.notify_all();
        for task in waiting {
            task.status.store(DONE, Ordering::Release);
            let job = task.job.lock().unwrap_or_else(|e| e.into_inner()).take();
            drop(job);
        }
    }
}

/// One guest thread: takes the next turn in the queue's order, runs it, books its CPU time.
fn guest_thread(shared: Arc<Shared>, handle: tokio::runtime::Handle, priority: GuestPriority) {
    if let Err(e) = os::set_priority(priority) {
        tracing::warn!(target: "greentic::scheduler", error = %e, ?priority, "could not lower the guest thread's priority; guest code competes with the host's own work");
    }
    let _runtime = handle.enter();
    loop {
        let (tenant, task) = {
            let mut lot = shared.lock();
            loop {
                if lot.stopping {
                    return;
                }
                if let Some(next) = lot.queue.next() {
                    break next;
                }
                lot = shared.work.wait(lot).unwrap_or_else(|e| e.into_inner());
            }
        };
        task.status.store(RUNNING, Ordering::Release);
        let waker = Waker::from(task.clone());
        let (finished, used, _) = task.turn(&waker);
        let again = if finished {
            task.status.store(DONE, Ordering::Release);
            false
        } else {
            task.status
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        };
        let mut lot = shared.lock();
        lot.queue.end(&tenant, used);
        if finished {
            lot.queue.depart(&tenant);
        } else if again {
            task.status.store(QUEUED, Ordering::Release);
            lot.queue.push(&tenant, task);
        }
    }
}

/// A call's answer and the CPU time its turns used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ran<T> {
    /// What the work returned.
    pub answer: T,
    /// CPU time of its turns (where they ran).
    pub cpu: Duration,
    /// Whether it went on to the guest threads (it was CPU-bound).
    pub moved: bool,
}

/// The work was lost: it panicked, or the host is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

/// A call's guest work in turns (see [`Scheduler::run`]).
///
/// Its first turn runs where it is polled; once it has used a whole slice and wants more, its
/// remaining turns run on the guest threads, in the queue's order.
pub struct Turns<T> {
    shared: Arc<Shared>,
    task: Arc<Task>,
    rx: oneshot::Receiver<T>,
    /// The waker turns run here are polled with: it notes a wake during the turn (a yield).
    noting: Option<Arc<Noting>>,
    /// Handed to the guest threads.
    moved: bool,
    /// Answered (or lost).
    over: bool,
}

/// A waker that notes being woken, and passes the wake on.
struct Noting {
    woken: AtomicBool,
    inner: Waker,
}

impl Wake for Noting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.inner.wake_by_ref();
    }
}

impl<T> Turns<T> {
    fn answer(&mut self, cx: &mut Context<'_>) -> Poll<Result<Ran<T>, Lost>> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(answer) => {
                self.over = true;
                let cpu = Duration::from_nanos(self.task.cpu_ns.load(Ordering::Relaxed));
                let moved = self.moved;
                Poll::Ready(
                    answer
                        .map(|answer| Ran { answer, cpu, moved })
                        .map_err(|_| Lost),
                )
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Runs one granted turn here; the answer when the work finished.
    fn run_here(&mut self, cx: &mut Context<'_>) -> Poll<Result<Ran<T>, Lost>> {
        let noting = match &self.noting {
            Some(n) if n.inner.will_wake(cx.waker()) => n.clone(),
            _ => {
                let n = Arc::new(Noting {
                    woken: AtomicBool::new(false),
                    inner: cx.waker().clone(),
                });
                self.noting = Some(n.clone());
                n
            }
        };
        noting.woken.store(false, Ordering::SeqCst);
        let waker = Waker::from(noting.clone());
        let (finished, used, total) = self.task.turn(&waker);
        // Woken during its own turn and past a short call's CPU: a fuel yield of CPU-bound work
        // (a host call completing at once also wakes it, but such calls stay short).
        let cpu_bound = !finished
            && noting.woken.load(Ordering::SeqCst)
            && total >= INLINE_CPU.as_nanos() as u64;
        let mut lot = self.shared.lock();
        lot.queue.charge(&self.task.tenant, used);
        if finished {
            lot.queue.depart(&self.task.tenant);
            self.task.status.store(DONE, Ordering::Release);
            drop(lot);
            // Finished means it sent (or dropped) its answer: take it without polling, which
            // the runtime's cooperative budget could answer `Pending` with the answer there
            // (every call that ran out of its task's budget was answered "lost").
            self.over = true;
            let cpu = Duration::from_nanos(self.task.cpu_ns.load(Ordering::Relaxed));
            let moved = self.moved;
            return Poll::Ready(
                self.rx
                    .try_recv()
                    .map(|answer| Ran { answer, cpu, moved })
                    .map_err(|_| Lost),
            );
        }
        if cpu_bound {
            // CPU-bound work takes its next turns in the queue's order, on the guest threads,
            // off the host's own.
            move_to_threads(&self.task, &self.shared, &mut lot);
            self.moved = true;
            drop(lot);
            return self.answer(cx);
        }
        // Waiting on I/O, or a short call woken at once (its waker is the caller's).
        Poll::Pending
    }
}

/// Hands `task` to the guest threads (its next turn comes in the queue's order).
fn move_to_threads(task: &Arc<Task>, shared: &Shared, lot: &mut Lot) {
    task.status.store(QUEUED, Ordering::Release);
    lot.queue.push(&task.tenant, task.clone());
    shared.work.notify_one();
}

impl<T> Future for Turns<T> {
    type Output = Result<Ran<T>, Lost>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Ran<T>, Lost>> {
        let this = &mut *self;
        if this.over {
            return Poll::Ready(Err(Lost));
        }
        if this.task.status.load(Ordering::Acquire) == INLINE {
            if this.shared.lock().stopping {
                this.over = true;
                return Poll::Ready(Err(Lost));
            }
            return this.run_here(cx);
        }
        // On the guest threads, or done there (or stopped: the answer's sender is gone).
        this.answer(cx)
    }
}

impl<T> Drop for Turns<T> {
    fn drop(&mut self) {
        if self.over {
            return;
        }
        self.task.cancelled.store(true, Ordering::Release);
        if self.task.status.load(Ordering::Acquire) == INLINE {
            self.task.status.store(DONE, Ordering::Release);
            self.shared.lock().queue.depart(&self.task.tenant);
            let job = self
                .task
                .job
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            drop(job);
        } else {
            // On the guest threads: they drop it at its next turn.
            self.task.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_call_done_in_its_first_turn_is_answered_when_its_task_has_no_budget_left() {
        let scheduler = Scheduler::new(SchedulerSection::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        for i in 0..1_000 {
            tx.send(i).unwrap();
        }
        let mut turns = std::pin::pin!(scheduler.run("t", 1, async { 7u32 }));
        let answer = std::future::poll_fn(|cx| {
            // Spend the task's cooperative budget: the channel still holds items, yet answers
            // `Pending` once the budget is spent — as a busy connection's task can.
            while rx.poll_recv(cx).is_ready() {}
            Poll::Ready(turns.as_mut().poll(cx))
        })
        .await;
        match answer {
            Poll::Ready(Ok(ran)) => assert_eq!(ran.answer, 7),
            other => panic!("the finished call was answered {other:?}"),
        }
    }

    /// A future that spins for `slice` of CPU time per poll, `turns` times (yielding between),
    /// counting its turns and the CPU microseconds it spent in its polls (CPU time, as the
    /// scheduler books it, so a thread preempted mid-spin does not skew the counts).
    struct Spin {
        slice: Duration,
        left: usize,
        turns: Arc<AtomicUsize>,
        busy_us: Arc<AtomicUsize>,
    }

    impl Future for Spin {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let started = os::thread_cpu();
            let until = started + self.slice;
            while os::thread_cpu() < until {
                std::hint::spin_loop();
            }
            self.turns.fetch_add(1, Ordering::SeqCst);
            self.busy_us.fetch_add(
                (os::thread_cpu() - started).as_micros() as usize,
                Ordering::SeqCst,
            );
            self.left -= 1;
            if self.left == 0 {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn spin(turns: &Arc<AtomicUsize>, busy_us: &Arc<AtomicUsize>, left: usize) -> Spin {
        Spin {
            slice: Duration::from_micros(200),
            left,
            turns: turns.clone(),
            busy_us: busy_us.clone(),
        }
    }

    fn counters() -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)))
    }

    fn one_thread() -> SchedulerSection {
        SchedulerSection {
            mode: SchedulerMode::Fair,
            threads: 1,
            priority: GuestPriority::Normal,
        }
    }

    async fn until(what: impl Fn() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(30);
        while !what() {
            assert!(Instant::now() < give_up, "gave up waiting");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn weights_are_respected_in_cpu_time() {
        // One guest slot, two tenants with two calls each always wanting turns, weights 1:3:
        // CPU time 1:3 once both run.
        let s = Scheduler::new(one_thread());
        let (light, light_us) = counters();
        let (heavy, heavy_us) = counters();
        let calls: Vec<_> = (0..2)
            .flat_map(|_| {
                [
                    tokio::spawn(s.run("light", 1, spin(&light, &light_us, 100_000))),
                    tokio::spawn(s.run("heavy", 3, spin(&heavy, &heavy_us, 100_000))),
                ]
            })
            .collect();
        until(|| light.load(Ordering::SeqCst) > 10 && heavy.load(Ordering::SeqCst) > 10).await;
        let (l0, h0) = (
            light_us.load(Ordering::SeqCst),
            heavy_us.load(Ordering::SeqCst),
        );
        let h_start = heavy.load(Ordering::SeqCst);
        until(|| heavy.load(Ordering::SeqCst) > h_start + 600).await;
        let l = light_us.load(Ordering::SeqCst) - l0;
        let h = heavy_us.load(Ordering::SeqCst) - h0;
        let ratio = h as f64 / l as f64;
        assert!((2.6..=3.4).contains(&ratio), "CPU {l} us : {h} us");
        for c in calls {
            c.abort();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newcomer_is_served_within_a_bounded_number_of_turns() {
        // Four calls of one tenant keep the one guest slot busy; another tenant's call gets
        // its turns next, after at most the turn running when it came (and one granted
        // meanwhile).
        let s = Scheduler::new(one_thread());
        let (busy, busy_us) = counters();
        let hogs: Vec<_> = (0..4)
            .map(|_| tokio::spawn(s.run("a", 1, spin(&busy, &busy_us, 100_000))))
            .collect();
        until(|| busy.load(Ordering::SeqCst) > 200).await;
        let before = busy.load(Ordering::SeqCst);
        let (mine, mine_us) = counters();
        s.run("b", 1, spin(&mine, &mine_us, 1))
            .await
            .expect("answered");
        let waited = busy.load(Ordering::SeqCst) - before;
        assert!(waited <= 2, "b waited {waited} of a's turns");
        for h in hogs {
            h.abort();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_call_gives_its_slot_back_inline_or_moved() {
        let s = Scheduler::new(one_thread());
        let (turns, us) = counters();
        // A hog, then a call queued behind it (moved to the guest threads), both dropped.
        let hog = tokio::spawn(s.run("a", 1, spin(&turns, &us, 1_000_000)));
        until(|| turns.load(Ordering::SeqCst) > 3).await;
        let waiting = tokio::spawn(s.run("b", 1, spin(&turns, &us, 1_000_000)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        let _ = waiting.await;
        hog.abort();
        let _ = hog.await;
        // The slot is free again and nothing waits: a new call runs (and answers).
        let (mine, mine_us) = counters();
        tokio::time::timeout(
            Duration::from_secs(10),
            s.run("c", 1, spin(&mine, &mine_us, 3)),
        )
        .await
        .expect("a free slot")
        .expect("answered");
        assert_eq!(mine.load(Ordering::SeqCst), 3);
        // Once the guest thread has dropped the two cancelled calls, no slot stays taken.
        until(|| s.shared.lock().queue.running() == 0).await;
        assert!(s.shared.lock().queue.free());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_that_waits_on_io_and_timers_finishes_on_the_guest_threads() {
        // Calls that sleep (a timer of the runtime) between spins, beside a hog: they move to
        // the guest threads and are woken there by the runtime's timer.
        let s = Scheduler::new(one_thread());
        let (hog_turns, hog_us) = counters();
        let hog = tokio::spawn(s.run("a", 1, spin(&hog_turns, &hog_us, 1_000_000)));
        until(|| hog_turns.load(Ordering::SeqCst) > 3).await;
        let (t, u) = counters();
        let work = {
            let (t, u) = (t.clone(), u.clone());
            async move {
                for _ in 0..3 {
                    spin(&t, &u, 2).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                std::thread::current().name().map(str::to_string)
            }
        };
        let ran_on = tokio::time::timeout(Duration::from_secs(10), s.run("b", 1, work))
            .await
            .expect("woken by its timers")
            .expect("answered");
        assert_eq!(ran_on.answer.as_deref(), Some("greentic-guest-0"));
        assert_eq!(t.load(Ordering::SeqCst), 6);
        // Six turns of 200 µs of spinning, wherever they ran, and no charge for the sleeps.
        assert!(
            ran_on.cpu >= Duration::from_micros(900) && ran_on.cpu < Duration::from_millis(12),
            "booked {:?}",
            ran_on.cpu
        );
        hog.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_call_runs_where_it_is_polled() {
        let s = Scheduler::new(one_thread());
        let (turns, us) = counters();
        let hog = tokio::spawn(s.run("a", 1, spin(&turns, &us, 1_000_000)));
        until(|| turns.load(Ordering::SeqCst) > 3).await;
        // Even beside a hog on the only guest slot, a call that never yields runs at once on
        // this test's own task, not handed to a guest thread.
        let here = s
            .run("b", 1, async { std::thread::current().id() })
            .await
            .expect("answered");
        assert_eq!(here.answer, std::thread::current().id());
        hog.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_call_is_lost_not_the_thread() {
        let s = Scheduler::new(one_thread());
        let (turns, us) = counters();
        let hog = tokio::spawn(s.run("a", 1, spin(&turns, &us, 1_000_000)));
        until(|| turns.load(Ordering::SeqCst) > 3).await;
        let lost = s
            .run("b", 1, async {
                tokio::task::yield_now().await;
                panic!("guest work panics");
            })
            .await;
        assert_eq!(lost, Err(Lost));
        hog.abort();
        let _ = hog.await;
        // The guest thread still serves.
        let (mine, mine_us) = counters();
        let hog2 = tokio::spawn(s.run("a", 1, spin(&turns, &us, 1_000_000)));
        tokio::time::sleep(Duration::from_millis(5)).await;
        tokio::time::timeout(
            Duration::from_secs(10),
            s.run("c", 1, spin(&mine, &mine_us, 5)),
        )
        .await
        .expect("served")
        .expect("answered");
        hog2.abort();
    }
}
