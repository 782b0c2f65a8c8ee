//! What the carriers' REST clients share: one form-encoded POST (or a GET) with Basic auth, read into a
//! bounded [`Answer`], and the retry loop that repeats a failed attempt as a [`RetryPolicy`]
//! allows.

use std::future::Future;
use std::time::Duration;

use super::twilio_api::{RetryPolicy, parse_retry_after};

/// Most of a response body kept (bytes).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// How one attempt failed, and whether it may be repeated.
pub(crate) struct Failure<E> {
    /// What went wrong.
    pub error: E,
    /// Whether the carrier certainly did not act, so repeating is harmless.
    pub retryable: bool,
    /// The carrier's `Retry-After`, where given.
    pub retry_after: Option<Duration>,
}

/// A form-encoded POST: where, as whom, what.
pub(crate) struct FormPost<'a> {
    /// Full URL.
    pub url: &'a str,
    /// Basic auth user.
    pub user: &'a str,
    /// Basic auth password.
    pub password: &'a str,
    /// The encoded form.
    pub form: String,
    /// Longest the exchange may take.
    pub timeout: Duration,
}

/// An HTTP answer: status, `Retry-After` (seconds) and the body's first
/// [`MAX_BODY_BYTES`] bytes (lossy UTF-8).
pub(crate) struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, where given in seconds.
    pub retry_after: Option<Duration>,
    /// The body, cut at [`MAX_BODY_BYTES`].
    pub body: String,
}

/// Sends `post` (asking for JSON) and reads the answer; a failure to send or to read the body
/// is the `reqwest` error, for the caller to classify.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    post: FormPost<'_>,
) -> Result<Answer, reqwest::Error> {
    let response = http
        .post(post.url)
        .basic_auth(post.user, Some(post.password))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(post.timeout)
        .body(post.form)
        .send()
        .await?;
    read_answer(response).await
}

/// Sends a GET of `url` (asking for JSON) with Basic auth and reads the answer, like
/// [`post_form`].
pub(crate) async fn get_json(
    http: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<Answer, reqwest::Error> {
    let response = http
        .get(url)
        .basic_auth(user, Some(password))
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await?;
    read_answer(response).await
}

/// The status, `Retry-After` and bounded body of `response`.
async fn read_answer(mut response: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(Answer {
        status,
        retry_after,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Runs `attempt` until it succeeds, fails for good, or `policy` allows no more retries.
/// `retrying(attempts, delay, error)` is told of each retry before its wait; `gave_up(attempts,
/// error)` of the last failure before it is returned.
pub(crate) async fn with_retries<T, E, Fut>(
    policy: &RetryPolicy,
    mut attempt: impl FnMut() -> Fut,
    mut retrying: impl FnMut(u32, Duration, &E),
    gave_up: impl FnOnce(u32, &E),
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let mut attempts = 0;
    let mut waited = Duration::ZERO;
    loop {
        attempts += 1;
        let failure = match attempt().await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let delay = if failure.retryable {
            policy.delay(attempts, waited, failure.retry_after)
        } else {
            None
        };
        let Some(delay) = delay else {
            gave_up(attempts, &failure.error);
            return Err(failure.error);
        };
        retrying(attempts, delay, &failure.error);
        tokio::time::sleep(delay).await;
        waited += delay;
    }
}
