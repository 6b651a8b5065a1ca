//! bcrypt on a bounded budget. At most `concurrency` hashes run at once on the blocking pool, at most
//! `queue` more wait for a slot, and anything beyond that is turned away at once with
//! [`HashingError::Busy`], so a login flood cannot starve the executor or grow memory without limit.

use std::{sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("the password hashing queue is full")]
    Busy { retry_after: Duration },
    #[error("bcrypt failed: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    concurrency: usize,
    queue: usize,
    /// Permits for "running or waiting"; try-acquired so that a full queue answers at once.
    admission: Arc<Semaphore>,
    /// Permits for "running".
    workers: Arc<Semaphore>,
    /// Verified against when the account does not exist, so both paths cost one bcrypt.
    dummy_hash: String,
    /// How long one hash took at startup, for Retry-After.
    hash_time: Duration,
}

impl PasswordHasher {
    /// Measures one hash at `cost` (which also produces the dummy hash) on the blocking pool.
    pub async fn new(cost: u32, concurrency: usize, queue: usize) -> Result<Self, HashingError> {
        let (dummy_hash, hash_time) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let hash = bcrypt::non_truncating_hash("timing-equalizer-not-a-password", cost);
            hash.map(|h| (h, started.elapsed()))
        })
        .await??;
        Ok(Self {
            inner: Arc::new(Inner {
                cost,
                concurrency,
                queue,
                admission: Arc::new(Semaphore::new(concurrency + queue)),
                workers: Arc::new(Semaphore::new(concurrency)),
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

    /// Hashes waiting for a worker right now.
    pub fn queue_depth(&self) -> usize {
        let inner = &self.inner;
        let admitted = inner.admission_capacity() - inner.admission.available_permits();
        admitted.saturating_sub(inner.concurrency - inner.workers.available_permits())
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, HashingError> {
        let inner = &self.inner;
        let Ok(admitted) = inner.admission.clone().try_acquire_owned() else {
            return Err(HashingError::Busy {
                retry_after: inner.retry_after(),
            });
        };
        metrics::gauge!("accounts_hashing_queue_depth").set(self.queue_depth() as f64);
        let worker = inner
            .workers
            .clone()
            .acquire_owned()
            .await
            .expect("the worker semaphore is never closed");
        // The permits move into the task: if the request is cancelled, the hash still finishes
        // and only then frees its slot, so the budget stays true.
        let result = tokio::task::spawn_blocking(move || {
            let result = work();
            drop((worker, admitted));
            result
        })
        .await?;
        Ok(result?)
    }
}

impl Inner {
    fn admission_capacity(&self) -> usize {
        self.concurrency + self.queue
    }

    /// Roughly how long the queue in front of a new request takes to drain.
    fn retry_after(&self) -> Duration {
        let waves = (self.queue / self.concurrency).max(1) as u32;
        (self.hash_time * waves).max(Duration::from_secs(1))
    }
}
