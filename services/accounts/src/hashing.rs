//! bcrypt on a bounded budget, on threads of its own.
//!
//! `concurrency` worker threads hash at a lowered CPU priority (nice ≈ 9), and at most `queue`
//! requests wait for one of them. Beyond that a request is turned away at once with
//! [`HashingError::Busy`], so a login flood can neither grow memory without limit nor take the
//! CPU from token-authenticated requests, which never hash: when the machine is saturated, the
//! scheduler serves them first, and logins slow down instead.

use std::{sync::Arc, time::Duration};

use crossbeam_channel::Sender;
use secrecy::{ExposeSecret, SecretString};
use thread_priority::{ThreadPriority, ThreadPriorityValue};
use tokio::sync::{Semaphore, oneshot};

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
    /// One permit per job in the system (running or waiting), held until the job finishes, so
    /// the budget is exact even while a worker is between jobs.
    admission: Arc<Semaphore>,
    /// Verified against when the account does not exist, so both paths cost one bcrypt.
    dummy_hash: String,
    /// How long one hash took at startup, for Retry-After.
    hash_time: Duration,
}

impl PasswordHasher {
    /// Starts the workers and measures one hash at `cost` (which also produces the dummy hash).
    pub async fn new(cost: u32, concurrency: usize, queue: usize) -> Result<Self, HashingError> {
        // Admission bounds the jobs in flight, so the channel itself never fills.
        let admission = Arc::new(Semaphore::new(concurrency + queue));
        let (jobs, receiver) = crossbeam_channel::bounded::<Job>(concurrency + queue);
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
        let started = std::time::Instant::now();
        let pending = submit(&jobs, &admission, move || {
            bcrypt::non_truncating_hash("timing-equalizer-not-a-password", cost)
        })?;
        let dummy_hash = pending.await.map_err(|_| HashingError::WorkersGone)??;
        Ok(Self {
            inner: Arc::new(Inner {
                cost,
                concurrency,
                queue,
                jobs,
                admission,
                dummy_hash,
                hash_time: started.elapsed(),
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
        self.inner.jobs.len()
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
        HashingError::Busy {
            retry_after: (self.inner.hash_time * waves).max(Duration::from_secs(1)),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, HashingError> {
        let result = match submit(&self.inner.jobs, &self.inner.admission, work) {
            Err(HashingError::Busy { .. }) => return Err(self.busy()),
            other => other?,
        };
        metrics::gauge!("accounts_hashing_queue_depth").set(self.queue_depth() as f64);
        result.await.map_err(|_| HashingError::WorkersGone)?
    }
}

/// Queues `work` for a worker without waiting; `Busy` (without a Retry-After yet) when the budget is spent.
fn submit<T: Send + 'static>(
    jobs: &Sender<Job>,
    admission: &Arc<Semaphore>,
    work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
) -> Result<oneshot::Receiver<Result<T, HashingError>>, HashingError> {
    let Ok(permit) = admission.clone().try_acquire_owned() else {
        return Err(HashingError::Busy {
            retry_after: Duration::ZERO,
        });
    };
    let (done, result) = oneshot::channel();
    let job: Job = Box::new(move || {
        // The place in the budget is freed when the hash is done, before the requester hears,
        // so its next request finds it free. The requester may have gone (client disconnected);
        // the hash still ran its course.
        let result = work().map_err(HashingError::from);
        drop(permit);
        let _ = done.send(result);
    });
    jobs.try_send(job).map_err(|_| HashingError::WorkersGone)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
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
}
