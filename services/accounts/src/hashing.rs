//! bcrypt on a bounded budget, on threads of its own, that never takes a core from a request.
//!
//! Two kinds of worker share one FIFO queue:
//! - `concurrency` **background** workers (default: every core) run under `SCHED_IDLE`: the kernel
//!   gives them a core only when nothing else wants it. A login burst on a quiet machine uses every
//!   core, and a token-authenticated request (which never hashes) never waits behind a hash.
//! - one **floor** worker at normal priority guarantees progress when the machine is saturated by
//!   other work, where `SCHED_IDLE` threads barely run. It is paced: it starts at most one hash per
//!   [`FLOOR_PACE`] × (one hash's time at startup), so it takes at most about a third of one core.
//!   It serves the longest-waiting request: the head of the queue, or a hash that a background
//!   worker started but has not finished in [`STALL`] × (one hash's time); that hash is then computed
//!   again by the floor, and whichever copy finishes first answers.
//!
//! At most `queue` requests wait beyond the background workers. Beyond that a request is turned away
//! at once with [`HashingError::Busy`], so a login flood can never grow memory without limit.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};
use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// The longest wait a saturated queue asks a client for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("the password hashing queue is full")]
    Busy { retry_after: Duration },
    #[error("bcrypt failed: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the hashing workers are gone")]
    WorkersGone,
}

/// The floor starts at most one hash per this many hash-times (about a third of one core).
const FLOOR_PACE: u32 = 3;
/// A background hash running longer than this many hash-times is starved: the floor redoes it.
const STALL: u32 = 3;

#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    concurrency: usize,
    queue: usize,
    board: Arc<Board>,
    /// One permit per job in the system (running or waiting), held until its answer is delivered,
    /// so the budget is exact even while a worker is between jobs.
    admission: Arc<Semaphore>,
    /// Verified against when the account does not exist, so both paths cost one bcrypt.
    dummy_hash: String,
    /// How long one hash took at startup, for Retry-After.
    hash_time: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.board.close();
    }
}

/// One request for a hash. It may run twice (a starved background copy and the floor's); the first
/// copy to finish delivers the answer, and a copy that has not started yet is skipped.
struct Job {
    enqueued: Instant,
    /// Computes the answer and returns how to deliver it, or `None` without computing anything
    /// when nobody is waiting for it any more.
    compute: Box<dyn Fn() -> Option<Delivery> + Send + Sync>,
}

/// Sends the answer, unless another copy already has.
type Delivery = Box<dyn FnOnce() + Send>;

impl Job {
    /// Whether a hash was computed (a job nobody waits for any more is skipped).
    fn run(&self) -> bool {
        match (self.compute)() {
            Some(deliver) => {
                deliver();
                true
            }
            None => false,
        }
    }
}

/// The queue and the background jobs in progress, shared by every worker.
struct Board {
    state: Mutex<BoardState>,
    changed: Condvar,
}

#[derive(Default)]
struct BoardState {
    waiting: VecDeque<Arc<Job>>,
    /// Jobs on background workers: when each started, and whether the floor has taken it over.
    running: Vec<Running>,
    closed: bool,
}

struct Running {
    job: Arc<Job>,
    started: Instant,
    rescued: bool,
}

impl Board {
    fn new() -> Self {
        Self {
            state: Mutex::new(BoardState::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BoardState> {
        // A worker never panics while holding the lock (jobs run outside it); recover anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, job: Job) {
        self.lock().waiting.push_back(Arc::new(job));
        // Wakes every worker: a background one takes it, or the floor notes a new oldest waiter.
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn depth(&self) -> usize {
        self.lock().waiting.len()
    }

    /// A background worker: takes the head of the queue whenever it gets a core.
    fn background_worker(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.waiting.pop_front() {
                        state.running.push(Running {
                            job: job.clone(),
                            started: Instant::now(),
                            rescued: false,
                        });
                        break job;
                    }
                    if state.closed {
                        return;
                    }
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            job.run();
            self.lock().running.retain(|r| !Arc::ptr_eq(&r.job, &job));
        }
    }

    /// The floor worker: at a paced rate, the longest-waiting request that background workers
    /// are not getting to, queued or started but starved.
    fn floor_worker(&self, stall: Duration, pace: Duration) {
        loop {
            let job = {
                let mut guard = self.lock();
                loop {
                    let state = &mut *guard;
                    if state.closed {
                        return;
                    }
                    let now = Instant::now();
                    let starved = state
                        .running
                        .iter_mut()
                        .filter(|r| !r.rescued && r.started + stall <= now)
                        .min_by_key(|r| r.job.enqueued);
                    let queued = state
                        .waiting
                        .front()
                        .map(|j| j.enqueued)
                        .filter(|&since| since + stall <= now);
                    match (starved, queued) {
                        (Some(r), None) => {
                            r.rescued = true;
                            break r.job.clone();
                        }
                        (Some(r), Some(since)) if r.job.enqueued <= since => {
                            r.rescued = true;
                            break r.job.clone();
                        }
                        (_, Some(_)) => {
                            if let Some(job) = state.waiting.pop_front() {
                                break job;
                            }
                        }
                        (None, None) => {}
                    }
                    // Sleep until the next job could become the floor's.
                    let next = state
                        .running
                        .iter()
                        .filter(|r| !r.rescued)
                        .map(|r| r.started)
                        .chain(state.waiting.front().map(|j| j.enqueued))
                        .min()
                        .map_or(Duration::from_secs(3600), |since| {
                            (since + stall).saturating_duration_since(now)
                        });
                    guard = self
                        .changed
                        .wait_timeout(guard, next.max(Duration::from_millis(1)))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            };
            let started = Instant::now();
            // Pacing: the floor exists for progress, not throughput; the background workers
            // take every core nobody else wants. Skipping an abandoned job costs no pause.
            if job.run() {
                std::thread::sleep(pace.saturating_sub(started.elapsed()));
            }
        }
    }
}

/// Lowers the calling thread to `SCHED_IDLE`, where it runs only on a core nobody else wants.
fn enter_idle_class() {
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, policy)
    {
        tracing::warn!(error = ?e, "could not move a bcrypt worker to SCHED_IDLE");
    }
}

impl PasswordHasher {
    /// Starts `concurrency` background workers and the floor worker, and measures one hash at
    /// `cost` (which also produces the dummy hash).
    pub async fn new(cost: u32, concurrency: usize, queue: usize) -> Result<Self, HashingError> {
        let concurrency = concurrency.max(1);
        // The startup hash runs on this (normal-priority) thread, so it measures an unloaded core
        // rather than an idle-class worker's share.
        let started = Instant::now();
        let dummy_hash = tokio::task::spawn_blocking(move || {
            bcrypt::non_truncating_hash("timing-equalizer-not-a-password", cost)
        })
        .await
        .map_err(|_| HashingError::WorkersGone)??;
        let hash_time = started.elapsed();
        Self::with_timing(cost, concurrency, queue, dummy_hash, hash_time)
    }

    fn with_timing(
        cost: u32,
        concurrency: usize,
        queue: usize,
        dummy_hash: String,
        hash_time: Duration,
    ) -> Result<Self, HashingError> {
        let board = Arc::new(Board::new());
        let spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(body)
                .map(drop)
                .map_err(|_| HashingError::WorkersGone)
        };
        for n in 0..concurrency {
            let board = board.clone();
            spawn(
                format!("bcrypt-{n}"),
                Box::new(move || {
                    enter_idle_class();
                    board.background_worker();
                }),
            )?;
        }
        let floor_board = board.clone();
        spawn(
            "bcrypt-floor".into(),
            Box::new(move || floor_board.floor_worker(hash_time * STALL, hash_time * FLOOR_PACE)),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                cost,
                concurrency,
                queue,
                board,
                admission: Arc::new(Semaphore::new(concurrency + queue)),
                dummy_hash,
                hash_time,
            }),
        })
    }

    pub async fn hash(&self, password: &SecretString) -> Result<String, HashingError> {
        let password = password.clone();
        let cost = self.inner.cost;
        self.run(move || bcrypt::non_truncating_hash(password.expose_secret(), cost))
            .await
    }

    /// Checks `password` against `hash`, or against a dummy hash when there is no account, so
    /// that an unknown email costs the same as a wrong password.
    pub async fn verify(
        &self,
        password: &SecretString,
        hash: Option<String>,
    ) -> Result<bool, HashingError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.inner.dummy_hash.clone());
        let password = password.clone();
        let matched = self
            .run(move || {
                // A password too long for bcrypt cannot match; still spend the same time.
                match bcrypt::non_truncating_verify(password.expose_secret(), &hash) {
                    Err(bcrypt::BcryptError::Truncation(_)) => {
                        bcrypt::non_truncating_verify("x", &hash).map(|_| false)
                    }
                    other => other,
                }
            })
            .await?;
        Ok(known && matched)
    }

    /// Requests waiting for a worker right now.
    pub fn queue_depth(&self) -> usize {
        self.inner.board.depth()
    }

    /// Fails fast, before any other work, when a hash request would be turned away now.
    pub fn check_capacity(&self) -> Result<(), HashingError> {
        if self.inner.admission.available_permits() == 0 {
            return Err(self.busy());
        }
        Ok(())
    }

    fn busy(&self) -> HashingError {
        let waves = (self.inner.queue / self.inner.concurrency).max(1) as u32;
        // The hash time is measured once at startup; on a machine saturated then (a deploy
        // during a load spike, a test suite on two cores) it can come out absurd, and a client
        // told to wait minutes for a queue that drains in seconds would give up.
        HashingError::Busy {
            retry_after: (self.inner.hash_time * waves)
                .clamp(Duration::from_secs(1), MAX_RETRY_AFTER),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl Fn() -> Result<T, bcrypt::BcryptError> + Send + Sync + 'static,
    ) -> Result<T, HashingError> {
        let Ok(permit) = self.inner.admission.clone().try_acquire_owned() else {
            return Err(self.busy());
        };
        let (done, answer) = oneshot::channel();
        self.inner.board.push(job(work, done, permit));
        metrics::gauge!("accounts_hashing_queue_depth").set(self.queue_depth() as f64);
        answer.await.map_err(|_| HashingError::WorkersGone)?
    }
}

type Answer<T> = oneshot::Sender<Result<T, HashingError>>;
/// Whom to answer and the place in the budget, until the first copy of a job finishes.
type Slot<T> = Arc<Mutex<Option<(Answer<T>, OwnedSemaphorePermit)>>>;

/// Wraps `work` so that it may run more than once and answers once: a copy that starts after the
/// answer went out (or after the requester left) computes nothing.
fn job<T: Send + 'static>(
    work: impl Fn() -> Result<T, bcrypt::BcryptError> + Send + Sync + 'static,
    done: Answer<T>,
    permit: OwnedSemaphorePermit,
) -> Job {
    let slot: Slot<T> = Arc::new(Mutex::new(Some((done, permit))));
    let compute = move || -> Option<Delivery> {
        let wanted = slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|(done, _)| !done.is_closed());
        if !wanted {
            // Answered by another copy, or the client went away: release the budget now.
            drop(slot.lock().unwrap_or_else(PoisonError::into_inner).take());
            return None;
        }
        let result = work().map_err(HashingError::from);
        let slot = slot.clone();
        Some(Box::new(move || {
            let taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some((done, permit)) = taken {
                // The place in the budget is freed before the requester hears, so its next
                // request finds it free.
                drop(permit);
                let _ = done.send(result);
            }
        }))
    };
    Job {
        enqueued: Instant::now(),
        compute: Box::new(compute),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn hashes_verifies_and_starts_without_a_queue() {
        let hasher = PasswordHasher::new(4, 1, 0).await.unwrap();
        let password = SecretString::from("tutad1234".to_string());
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hasher.verify(&password, Some(hash.clone())).await.unwrap());
        let wrong = SecretString::from("tutad12345".to_string());
        assert!(!hasher.verify(&wrong, Some(hash)).await.unwrap());
        // No account: the dummy hash is checked, and the answer is always no.
        assert!(!hasher.verify(&password, None).await.unwrap());
    }

    /// Stands in for a machine so busy that a `SCHED_IDLE` worker never gets a core: a copy on a
    /// background worker blocks until released; the floor's copy finishes at once.
    fn starved_in_background(
        release: Arc<(Mutex<bool>, Condvar)>,
        floor_runs: Arc<AtomicUsize>,
    ) -> impl Fn() -> Result<u32, bcrypt::BcryptError> + Send + Sync + 'static {
        move || {
            if std::thread::current().name() == Some("bcrypt-floor") {
                floor_runs.fetch_add(1, Ordering::SeqCst);
                return Ok(7);
            }
            let (released, cv) = &*release;
            let mut released = released.lock().unwrap();
            while !*released {
                released = cv.wait(released).unwrap();
            }
            Ok(7)
        }
    }

    fn release(gate: &(Mutex<bool>, Condvar)) {
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    }

    #[tokio::test]
    async fn a_hash_time_measured_on_a_saturated_machine_asks_for_half_a_minute_at_most() {
        for (measured, expected) in [(120_000, 30_000), (200, 1_000), (3_000, 3_000)] {
            let hasher = PasswordHasher::with_timing(
                4,
                1,
                1,
                String::new(),
                Duration::from_millis(measured),
            )
            .unwrap();
            let HashingError::Busy { retry_after } = hasher.busy() else {
                panic!("busy is busy");
            };
            assert_eq!(
                retry_after,
                Duration::from_millis(expected),
                "{measured} ms"
            );
        }
    }

    #[tokio::test]
    async fn a_starved_background_hash_is_finished_by_the_floor() {
        let hash_time = Duration::from_millis(50);
        let hasher = PasswordHasher::with_timing(4, 1, 4, String::new(), hash_time).unwrap();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let floor_runs = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            hasher.run(starved_in_background(gate.clone(), floor_runs.clone())),
        )
        .await
        .expect("the floor answers while the background worker is stuck")
        .unwrap();
        assert_eq!(answer, 7);
        assert_eq!(floor_runs.load(Ordering::SeqCst), 1);
        assert!(started.elapsed() >= hash_time * STALL, "only once starved");
        // The starved copy finishes later and answers nobody; the budget is whole again.
        release(&gate);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(hasher.inner.admission.available_permits(), 5);
        assert_eq!(hasher.queue_depth(), 0);
    }

    #[tokio::test]
    async fn requests_queued_behind_starved_workers_still_progress() {
        // Both background workers stuck for good: the floor alone works through the queue.
        let hasher =
            PasswordHasher::with_timing(4, 2, 8, String::new(), Duration::from_millis(10)).unwrap();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let floor_runs = Arc::new(AtomicUsize::new(0));
        let jobs =
            (0..6).map(|_| hasher.run(starved_in_background(gate.clone(), floor_runs.clone())));
        let answers = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::future::join_all(jobs),
        )
        .await
        .expect("every request is answered");
        assert!(answers.iter().all(|a| matches!(a, Ok(7))));
        assert_eq!(floor_runs.load(Ordering::SeqCst), 6);
        release(&gate);
    }

    #[tokio::test]
    async fn a_full_budget_answers_busy_at_once() {
        // A long hash time: the floor stays out of the way for the whole test.
        let hasher =
            PasswordHasher::with_timing(4, 1, 0, String::new(), Duration::from_secs(60)).unwrap();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let first = hasher.run(starved_in_background(
            gate.clone(),
            Arc::new(AtomicUsize::new(0)),
        ));
        tokio::pin!(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut first)
                .await
                .is_err()
        );
        assert!(matches!(
            hasher.check_capacity(),
            Err(HashingError::Busy { .. })
        ));
        assert!(matches!(
            hasher.run(|| Ok(1)).await,
            Err(HashingError::Busy { .. })
        ));
        release(&gate);
        assert!(matches!(first.await, Ok(7)));
    }

    #[tokio::test]
    async fn an_abandoned_request_is_never_hashed() {
        let hasher =
            PasswordHasher::with_timing(4, 1, 4, String::new(), Duration::from_secs(60)).unwrap();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let first = hasher.run(starved_in_background(
            gate.clone(),
            Arc::new(AtomicUsize::new(0)),
        ));
        tokio::pin!(first);
        // The only background worker is now busy with the first request.
        let _ = tokio::time::timeout(Duration::from_millis(50), &mut first).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let abandoned = hasher.run(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        });
        // Queued, then the requester goes away (a client that disconnected).
        assert!(
            tokio::time::timeout(Duration::from_millis(20), abandoned)
                .await
                .is_err()
        );
        release(&gate);
        assert!(matches!(first.await, Ok(7)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "nobody waits for that hash");
        assert_eq!(hasher.inner.admission.available_permits(), 5);
    }
}
