//! Where bcrypt runs: one thread of its own and a short queue. bcrypt is slow on purpose (tens of
//! milliseconds a check at the usual cost), so a flood of wrong passwords would otherwise take
//! every core and a thread per request. Here it takes one core at most; checks beyond the queue
//! are refused at once (429) instead of waiting behind it.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::mpsc,
    thread,
};

use tokio::sync::oneshot;

/// Threads that run bcrypt: at most this many cores' worth of the daemon's CPU goes to
/// checking passwords.
const THREADS: usize = 1;
/// Checks that may wait for the thread; at cost 10 (about 60 ms each here) the last waits
/// about a second.
const QUEUE: usize = 16;

type Check = Box<dyn FnOnce() -> bool + Send>;

struct Job {
    check: Check,
    reply: oneshot::Sender<bool>,
}

/// The queue is full: too many password checks are waiting.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

pub struct Verifier {
    queue: mpsc::SyncSender<Job>,
}

impl Verifier {
    /// Starts the checking thread, which lives as long as the returned handle.
    pub fn start() -> std::io::Result<Verifier> {
        let (queue, jobs) = mpsc::sync_channel::<Job>(QUEUE);
        let jobs = std::sync::Arc::new(std::sync::Mutex::new(jobs));
        for i in 0..THREADS {
            let jobs = jobs.clone();
            thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || loop {
                    let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    // The request gave up waiting (its deadline passed): spare the check.
                    if job.reply.is_closed() {
                        continue;
                    }
                    let ok = catch_unwind(AssertUnwindSafe(job.check)).unwrap_or(false);
                    let _ = job.reply.send(ok);
                })?;
        }
        Ok(Verifier { queue })
    }

    /// Runs `check` on the checking thread, or refuses at once when the queue is full.
    pub async fn run(&self, check: impl FnOnce() -> bool + Send + 'static) -> Result<bool, Busy> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            check: Box::new(check),
            reply,
        };
        self.queue.try_send(job).map_err(|_| Busy)?;
        answer.await.map_err(|_| Busy)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Barrier},
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn checks_beyond_the_queue_are_refused_at_once() {
        let v = Arc::new(Verifier::start().unwrap());
        assert_eq!(v.run(|| true).await, Ok(true));
        // Hold the thread, fill the queue: the next check is refused without waiting.
        let hold = Arc::new(Barrier::new(2));
        let held = hold.clone();
        let first = tokio::spawn({
            let v = v.clone();
            async move {
                v.run(move || {
                    held.wait();
                    true
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiting: Vec<_> = (0..QUEUE)
            .map(|_| {
                let v = v.clone();
                tokio::spawn(async move { v.run(|| false).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(v.run(|| true).await, Err(Busy));
        hold.wait();
        assert_eq!(first.await.unwrap(), Ok(true));
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(false));
        }
        assert_eq!(
            v.run(|| panic!("a bug")).await,
            Ok(false),
            "a panic is a refusal"
        );
        assert_eq!(v.run(|| true).await, Ok(true), "and the thread lives on");
    }
}
