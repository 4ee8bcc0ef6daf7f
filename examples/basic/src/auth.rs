//! A deliberately small guard for per-user streams: `POST /login/{userId}` hands
//! out a random token (as a cookie, and in the JSON answer), and a user's stream
//! needs that user's token, from the `token` cookie or a `?token=` query
//! parameter, since `EventSource` cannot set headers.
//!
//! Tokens expire, and a stream opened with one ends when it does. The store
//! holds at most a fixed number of tokens, oldest dropped first, so logging in
//! in a loop cannot grow it without bound.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

/// Issued tokens: which user each is for, and until when.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<Mutex<Store>>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Default)]
struct Store {
    by_token: HashMap<String, Grant>,
    /// Tokens in the order issued, which with one lifetime for all is also
    /// the order they expire in.
    issued: VecDeque<String>,
}

struct Grant {
    user_id: String,
    expires: Instant,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::new(Tokens::DEFAULT_TTL, Tokens::DEFAULT_CAPACITY)
    }
}

impl Tokens {
    /// How long a token is valid by default: one hour.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
    /// How many tokens are kept by default.
    pub const DEFAULT_CAPACITY: usize = 10_000;
    /// The longest a token may be valid: a year. Longer lifetimes are
    /// shortened to it (the moment a token expires must be representable).
    pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

    /// A store whose tokens are valid for `ttl`, holding at most `capacity`
    /// (at least 1); past it, the oldest token is revoked.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Tokens {
            store: Arc::default(),
            ttl: ttl.min(Tokens::MAX_TTL),
            capacity: capacity.max(1),
        }
    }

    /// A new random token for `user_id`.
    pub fn issue(&self, user_id: &str) -> String {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut store = self.lock();
        store.forget_expired(now);
        while store.by_token.len() >= self.capacity {
            store.forget_oldest();
        }
        store.by_token.insert(
            token.clone(),
            Grant {
                user_id: user_id.to_owned(),
                expires: now + self.ttl,
            },
        );
        store.issued.push_back(token.clone());
        token
    }

    /// When `credentials` hold a valid token of `user_id`, the moment it
    /// expires: 401 without a valid token, 403 with another user's.
    pub fn authorize(
        &self,
        credentials: &Credentials,
        user_id: &str,
    ) -> Result<Instant, StatusCode> {
        let token = credentials.0.as_deref().ok_or(StatusCode::UNAUTHORIZED)?;
        let mut store = self.lock();
        store.forget_expired(Instant::now());
        match store.by_token.get(token) {
            None => Err(StatusCode::UNAUTHORIZED),
            Some(grant) if grant.user_id == user_id => Ok(grant.expires),
            Some(_) => Err(StatusCode::FORBIDDEN),
        }
    }

    /// How many tokens are held.
    pub fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store {
    fn forget_expired(&mut self, now: Instant) {
        while let Some(oldest) = self.issued.front() {
            match self.by_token.get(oldest) {
                Some(grant) if grant.expires > now => return,
                _ => self.forget_oldest(),
            }
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self.issued.pop_front() {
            self.by_token.remove(&oldest);
        }
    }
}

/// Whether `given` is `secret`, in time that does not depend on where they
/// differ, so the secret cannot be guessed a byte at a time.
pub fn is_secret(given: &str, secret: &str) -> bool {
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// The token a request carries, if any: the `token` cookie, else `?token=`.
pub struct Credentials(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Credentials {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let from_cookie = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .find_map(|cookie| cookie.trim().strip_prefix("token=").map(str::to_owned));
        let from_query = || {
            parts.uri.query().and_then(|query| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("token=").map(str::to_owned))
            })
        };
        Ok(Credentials(from_cookie.or_else(from_query)))
    }
}

/// The bearer token of an `Authorization` header, if any: an operator's
/// credential.
pub struct Bearer(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Bearer(
            parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::to_owned),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(token: &str) -> Credentials {
        Credentials(Some(token.to_owned()))
    }

    #[test]
    fn a_token_is_refused_once_expired() {
        let tokens = Tokens::new(Duration::from_millis(30), 10);
        let token = tokens.issue("alice");
        let expires = tokens.authorize(&holding(&token), "alice").unwrap();
        assert!(expires > Instant::now());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            tokens.authorize(&holding(&token), "alice"),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert!(tokens.is_empty(), "an expired token is forgotten");
    }

    #[test]
    fn the_store_never_holds_more_than_its_capacity_and_drops_the_oldest() {
        let tokens = Tokens::new(Duration::from_secs(60), 100);
        let first = tokens.issue("user-0");
        for n in 1..10_000 {
            tokens.issue(&format!("user-{n}"));
        }
        assert_eq!(tokens.len(), 100);
        assert_eq!(
            tokens.authorize(&holding(&first), "user-0"),
            Err(StatusCode::UNAUTHORIZED)
        );
        let last = tokens.issue("user-last");
        assert!(tokens.authorize(&holding(&last), "user-last").is_ok());
    }

    #[test]
    fn a_lifetime_past_the_maximum_is_shortened_not_a_panic_at_login() {
        let tokens = Tokens::new(Duration::from_secs(u64::MAX), 10);
        let token = tokens.issue("alice");
        assert!(tokens.authorize(&holding(&token), "alice").is_ok());
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(is_secret("s3cret", "s3cret"));
        assert!(!is_secret("s3creT", "s3cret"));
        assert!(!is_secret("s3cre", "s3cret"));
        assert!(!is_secret("", "s3cret"));
    }
}
