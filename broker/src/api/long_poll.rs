//! The long poll both fetches share: read, and if there is not enough yet,
//! wait for a signal (a commit, an append) or the deadline, and read again.

use std::future::Future;

use tokio::sync::watch;
use tokio::time::Instant;

use super::ApiError;

/// Calls `read` until it says it is done, waiting for `signal` to change
/// (or `deadline`) in between; `read` must say done once `deadline` has
/// passed. A closed signal means the broker is shutting down.
pub(crate) async fn long_poll<T, F, Fut>(
    mut signal: watch::Receiver<u64>,
    deadline: Instant,
    mut read: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(T, bool), ApiError>>,
{
    loop {
        signal.borrow_and_update();
        let (value, done) = read().await?;
        if done {
            return Ok(value);
        }
        if tokio::time::timeout_at(deadline, signal.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return Err(ApiError::ShuttingDown);
        }
    }
}
