//! bcrypt on a bounded budget, on threads of its own.
//!
//! `concurrency` worker threads hash at a lowered CPU priority (nice ≈ 9), and at most `queue`
//! requests wait for one of them. Beyond that a request is turned away at once with
//! [`HashingError::Busy`], so a login flood can neither grow memory without limit nor take the
//! CPU from token-authenticated requests, which never hash: when the machine is saturated, the
//! scheduler serves them first, and logins slow down instead.

use std::{sync::Arc, time::Duration};

use crossbeam_channel::{Sender, TrySendError};
use secrecy::{ExposeSecret, SecretString};
use thread_priority::{ThreadPriority, ThreadPriorityValue};

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("the password hashing queue is full")]
    Busy { retry_after: Duration },
    #[error("bcrypt failed: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the hashing workers are gone")]
    WorkersGone,
}

type Job = Box<dyn FnOnce() + Send>;

/// 0..=99 maps onto nice 19..-20; 25 is about nice 9.
const WORKER_PRIORITY: u8 = 25;

#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    concurrency: usize,
    queue: usize,
    jobs: Sender<Job>,
    /// Verified against when the account does not exist, so both paths cost one bcrypt.
    dummy_hash: String,
    /// How long one hash took at startup, for Retry-After.
    hash_time: Duration,
}

impl PasswordHasher {
    /// Starts the workers and measures one hash at `cost` (which also produces the dummy hash).
    pub async fn new(cost: u32, concurrency: usize, queue: usize) -> Result<Self, HashingError> {
        let (jobs, receiver) = crossbeam_channel::bounded::<Job>(queue);
        for n in 0..concurrency {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("bcrypt-{n}"))
                .spawn(move || {
                    let priority = ThreadPriorityValue::try_from(WORKER_PRIORITY)
                        .expect("a valid priority value");
                    if let Err(e) = ThreadPriority::Crossplatform(priority).set_for_current() {
                        tracing::warn!(error = ?e, "could not lower the priority of a bcrypt worker");
                    }
                    // Ends when every sender (every PasswordHasher clone) is dropped.
                    while let Ok(job) = receiver.recv() {
                        job();
                    }
                })
                .expect("spawning a bcrypt worker thread");
        }
        let mut hasher = Self {
            inner: Arc::new(Inner {
                cost,
                concurrency,
                queue,
                jobs,
                dummy_hash: String::new(),
                hash_time: Duration::ZERO,
            }),
        };
        let started = std::time::Instant::now();
        let dummy_hash = hasher
            .run(move || bcrypt::non_truncating_hash("timing-equalizer-not-a-password", cost))
            .await?;
        let inner = Arc::get_mut(&mut hasher.inner).expect("not shared yet");
        inner.hash_time = started.elapsed();
        inner.dummy_hash = dummy_hash;
        Ok(hasher)
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
        self.inner.jobs.len()
    }

    /// Fails fast, before any other work, when a hash request would be turned away now.
    pub fn check_capacity(&self) -> Result<(), HashingError> {
        // A zero-capacity queue reports itself full; only a real queue can be.
        if self.inner.queue > 0 && self.inner.jobs.is_full() {
            return Err(self.busy());
        }
        Ok(())
    }

    fn busy(&self) -> HashingError {
        let waves = (self.inner.queue / self.inner.concurrency).max(1) as u32;
        HashingError::Busy {
            retry_after: (self.inner.hash_time * waves).max(Duration::from_secs(1)),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, HashingError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The requester may have gone (client disconnected); the hash still ran its course.
            let _ = done.send(work());
        });
        match self.inner.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(self.busy()),
            Err(TrySendError::Disconnected(_)) => return Err(HashingError::WorkersGone),
        }
        metrics::gauge!("accounts_hashing_queue_depth").set(self.queue_depth() as f64);
        Ok(result.await.map_err(|_| HashingError::WorkersGone)??)
    }
}
