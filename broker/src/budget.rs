//! A node-wide budget for the bytes of client requests and responses in
//! flight (Kafka's `queued.max.request.bytes`): however many clients send
//! large produces or fetch at once, the memory they pin stays bounded.
//!
//! - A request's bytes are reserved before they are read: the wrapper around
//!   the request body reads each gRPC message's 5-byte prefix and reserves the
//!   whole message at once (all or nothing, as Kafka reserves a request's size
//!   before reading it, so partial requests never deadlock each other). While
//!   the budget is spent the body is not polled, so HTTP/2 flow control holds
//!   the sender back — for at most [`BUDGET_WAIT`]: the requests of one
//!   connection share its flow-control window, so a stream waiting longer
//!   could starve the others (the ones that would free the budget). Past it
//!   the request fails with a retriable `RESOURCE_EXHAUSTED`. A message over
//!   the service's size limit reserves nothing: it is refused unread.
//! - A Fetch reserves what a read may return before reading, and keeps what
//!   it read reserved until the response is sent.
//! - Reservations are released when the response body is done (sent or
//!   dropped).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;

/// Longest a request waits for the budget before it is refused.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// Longest the rest of a message may take to arrive once its bytes are
/// reserved: a client that sends a prefix and stops cannot pin the budget.
pub const BODY_STALL: Duration = Duration::from_secs(60);

/// The budget: a pool of bytes.
#[derive(Debug)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl ByteBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Arc<Self> {
        let total = total.clamp(1 << 20, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        })
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.total
    }

    fn clamp(&self, n: usize) -> u32 {
        // A reservation above the whole budget waits for all of it.
        n.clamp(1, self.total.min(u32::MAX as usize)) as u32
    }

    /// Waits for `n` bytes (capped at the budget's size).
    pub async fn reserve(&self, n: usize) -> Reservation {
        let permit = Arc::clone(&self.bytes)
            .acquire_many_owned(self.clamp(n))
            .await
            .expect("the budget's semaphore is never closed");
        Reservation(Some(permit))
    }

    fn try_reserve(&self, n: usize) -> Option<Reservation> {
        Arc::clone(&self.bytes)
            .try_acquire_many_owned(self.clamp(n))
            .ok()
            .map(|p| Reservation(Some(p)))
    }
}

/// Reserved bytes, returned to the budget when dropped.
#[derive(Debug)]
pub struct Reservation(Option<OwnedSemaphorePermit>);

impl Reservation {
    /// Keeps only `n` of the reserved bytes, returning the rest now.
    pub fn shrink_to(&mut self, n: usize) {
        if let Some(p) = self.0.as_mut() {
            let keep = n.max(1);
            if p.num_permits() > keep {
                if let Some(rest) = p.split(p.num_permits() - keep) {
                    drop(rest);
                }
            }
        }
    }
}

/// Everything one request has reserved; handed to the handler through the
/// request's extensions (so a Fetch can add to it) and released with the
/// response.
#[derive(Debug, Clone)]
pub struct Held {
    budget: Arc<ByteBudget>,
    reservations: Arc<Mutex<Vec<Reservation>>>,
}

impl Held {
    /// What a request of another edge (the Kafka listener) holds: `first`
    /// (its frame's bytes) and whatever its handler adds, until dropped.
    pub fn with(budget: Arc<ByteBudget>, first: Reservation) -> Self {
        Self {
            budget,
            reservations: Arc::new(Mutex::new(vec![first])),
        }
    }

    /// The node's budget.
    pub fn budget(&self) -> &Arc<ByteBudget> {
        &self.budget
    }

    /// Keeps `r` until the response is sent.
    pub fn keep(&self, r: Reservation) {
        self.reservations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
    }

    /// Returns everything reserved so far: the bytes are no longer held
    /// (a produce's batches after their append, before an acks=all wait).
    pub fn release(&self) {
        self.reservations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Wraps a service so its requests and responses spend `budget`.
#[derive(Debug, Clone)]
pub struct Budgeted<S> {
    inner: S,
    budget: Arc<ByteBudget>,
    max_message: usize,
}

impl<S> Budgeted<S> {
    /// `inner` within `budget`; `max_message` is the service's decoding
    /// limit (larger messages are refused unread and reserve nothing).
    pub fn new(inner: S, budget: Arc<ByteBudget>, max_message: usize) -> Self {
        Self {
            inner,
            budget,
            max_message,
        }
    }
}

impl<S: NamedService> NamedService for Budgeted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> tower_service::Service<http::Request<Body>> for Budgeted<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: HttpBody<Data = Bytes> + Send + 'static,
    R::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let held = Held {
            budget: Arc::clone(&self.budget),
            reservations: Arc::default(),
        };
        req.extensions_mut().insert(held.clone());
        let req = req.map(|body| {
            Body::new(BudgetedRequest {
                inner: body,
                held: held.clone(),
                max_message: self.max_message,
                prefix: [0; 5],
                have: 0,
                remaining: 0,
                frame: None,
                pos: 0,
                waiting: None,
                stall: None,
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| {
                Body::new(BudgetedResponse {
                    inner: Body::new(body),
                    _held: held,
                })
            }))
        })
    }
}

type Waiting = Pin<Box<dyn Future<Output = Option<Reservation>> + Send>>;

/// A request body that reserves each gRPC message before yielding it.
struct BudgetedRequest {
    inner: Body,
    held: Held,
    max_message: usize,
    /// The gRPC message prefix (compressed flag, 4-byte length) being read.
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    /// A data frame being walked, not yet yielded.
    frame: Option<Bytes>,
    pos: usize,
    waiting: Option<Waiting>,
    /// Fires when a reserved message stalls ([`BODY_STALL`]).
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpBody for BudgetedRequest {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(w) = this.waiting.as_mut() {
                let r = ready!(w.as_mut().poll(cx));
                this.waiting = None;
                match r {
                    Some(r) => {
                        this.held.keep(r);
                        this.stall = Some(Box::pin(tokio::time::sleep(BODY_STALL)));
                    }
                    None => {
                        return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(format!(
                            "the node's budget of {} bytes of client requests in flight is spent \
                             (--max-inflight-bytes); retry shortly",
                            this.held.budget.total()
                        )))))
                    }
                }
            }
            if let Some(data) = this.frame.as_ref() {
                while this.pos < data.len() && this.waiting.is_none() {
                    if this.remaining > 0 {
                        let take = this.remaining.min(data.len() - this.pos);
                        this.pos += take;
                        this.remaining -= take;
                        if this.remaining == 0 {
                            this.stall = None;
                        }
                        continue;
                    }
                    this.prefix[this.have] = data[this.pos];
                    this.have += 1;
                    this.pos += 1;
                    if this.have == this.prefix.len() {
                        this.have = 0;
                        let len = u32::from_be_bytes([
                            this.prefix[1],
                            this.prefix[2],
                            this.prefix[3],
                            this.prefix[4],
                        ]) as usize;
                        this.remaining = len;
                        let n = len + this.prefix.len();
                        if len > this.max_message {
                            // Refused unread by the service's decoder.
                            continue;
                        }
                        match this.held.budget.try_reserve(n) {
                            Some(r) => {
                                this.held.keep(r);
                                this.stall = Some(Box::pin(tokio::time::sleep(BODY_STALL)));
                            }
                            None => {
                                let budget = Arc::clone(&this.held.budget);
                                this.waiting = Some(Box::pin(async move {
                                    tokio::time::timeout(BUDGET_WAIT, budget.reserve(n))
                                        .await
                                        .ok()
                                }));
                            }
                        }
                    }
                }
                if this.waiting.is_some() {
                    continue;
                }
                let data = this.frame.take().expect("checked above");
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(p) => p,
                Poll::Pending => {
                    if let Some(t) = this.stall.as_mut() {
                        if t.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(
                                format!(
                                    "the request's body stalled for {} s while holding its \
                                     share of the node's in-flight budget",
                                    BODY_STALL.as_secs()
                                ),
                            ))));
                        }
                    }
                    return Poll::Pending;
                }
            };
            match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.frame = Some(data);
                        this.pos = 0;
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frame.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that releases the request's reservations when done.
struct BudgetedResponse {
    inner: Body,
    _held: Held,
}

impl HttpBody for BudgetedResponse {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_the_budget_and_return_to_it() {
        let b = ByteBudget::new(2 << 20);
        let mut first = b.reserve(1 << 20).await;
        let second = b.reserve(1 << 20).await;
        assert_eq!(b.available(), 0);
        assert!(b.try_reserve(1).is_none());
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.reserve(1 << 19).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the budget is spent");
        first.shrink_to(1 << 19);
        let third = waiter.await.unwrap();
        assert_eq!(b.available(), 0);
        drop((first, second, third));
        assert_eq!(b.available(), 2 << 20);
        // More than the whole budget waits for all of it, not forever.
        let all = b.reserve(100 << 20).await;
        assert_eq!(b.available(), 0);
        drop(all);
    }
}
