//! A deliberately small guard for per-user streams: `POST /login/{userId}` hands
//! out a token (as a cookie, and in the JSON answer), and a user's stream
//! needs that user's token, from the `token` cookie or a `?token=` query
//! parameter, since `EventSource` cannot set headers.
//!
//! A token is signed, not stored: `<user, hex>.<expiry, ms>.<HMAC-SHA256 of
//! both>`, under a key drawn at start. So logging in costs no memory, and a
//! flood of logins cannot push anyone's token out (a store with a capacity
//! could be flooded until it dropped every real user's token). Tokens expire,
//! and a stream opened with one ends when it does; they do not outlive the
//! process, whose key goes with it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use ring::hmac;

/// Issues and checks tokens: which user each is for, and until when.
#[derive(Clone)]
pub struct Tokens {
    key: Arc<hmac::Key>,
    ttl: Duration,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::new(Tokens::DEFAULT_TTL)
    }
}

impl Tokens {
    /// How long a token is valid by default: one hour.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
    /// The longest a token may be valid: a year. Longer lifetimes are
    /// shortened to it (the moment a token expires must be representable).
    pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

    /// Tokens valid for `ttl` (at most [`MAX_TTL`](Self::MAX_TTL)), signed
    /// with a key drawn from the OS now.
    pub fn new(ttl: Duration) -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source is available");
        Tokens {
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &secret)),
            ttl: ttl.min(Tokens::MAX_TTL),
        }
    }

    /// A new token for `user_id`.
    pub fn issue(&self, user_id: &str) -> String {
        let expires =
            now_ms().saturating_add(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        let claim = format!("{}.{expires}", hex(user_id.as_bytes()));
        let signature = hmac::sign(&self.key, claim.as_bytes());
        format!("{claim}.{}", hex(signature.as_ref()))
    }

    /// When `credentials` hold a valid token of `user_id`, the moment it
    /// expires: 401 without a valid token (missing, forged, expired), 403
    /// with another user's.
    pub fn authorize(
        &self,
        credentials: &Credentials,
        user_id: &str,
    ) -> Result<Instant, StatusCode> {
        let token = credentials.0.as_deref().ok_or(StatusCode::UNAUTHORIZED)?;
        let (claim, signature) = token.rsplit_once('.').ok_or(StatusCode::UNAUTHORIZED)?;
        let signature = unhex(signature).ok_or(StatusCode::UNAUTHORIZED)?;
        hmac::verify(&self.key, claim.as_bytes(), &signature)
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        // Signed by us: the claim is what `issue` wrote.
        let (user, expires) = claim.split_once('.').ok_or(StatusCode::UNAUTHORIZED)?;
        let expires: u64 = expires.parse().map_err(|_| StatusCode::UNAUTHORIZED)?;
        let left = expires.checked_sub(now_ms()).filter(|left| *left > 0);
        let left = left.ok_or(StatusCode::UNAUTHORIZED)?;
        if unhex(user).as_deref() != Some(user_id.as_bytes()) {
            return Err(StatusCode::FORBIDDEN);
        }
        Ok(Instant::now() + Duration::from_millis(left))
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
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
        let tokens = Tokens::new(Duration::from_millis(30));
        let token = tokens.issue("alice");
        let expires = tokens.authorize(&holding(&token), "alice").unwrap();
        assert!(expires > Instant::now());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            tokens.authorize(&holding(&token), "alice"),
            Err(StatusCode::UNAUTHORIZED)
        );
    }

    #[test]
    fn a_flood_of_logins_revokes_nobody() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let first = tokens.issue("user-0");
        for n in 1..20_000 {
            tokens.issue(&format!("user-{n}"));
        }
        assert!(tokens.authorize(&holding(&first), "user-0").is_ok());
    }

    #[test]
    fn a_forged_or_altered_token_is_refused_and_another_users_is_forbidden() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let alices = tokens.issue("alice");
        assert_eq!(
            tokens.authorize(&holding(&alices), "bob"),
            Err(StatusCode::FORBIDDEN)
        );
        let other_key = Tokens::new(Duration::from_secs(60)).issue("alice");
        let (claim, signature) = alices.rsplit_once('.').unwrap();
        let (user, _) = claim.split_once('.').unwrap();
        let longer = format!("{user}.{}.{signature}", u64::MAX);
        for forged in [
            other_key.as_str(),
            longer.as_str(),
            "",
            "x",
            "a.b.c",
            "616c696365.1.zz",
        ] {
            assert_eq!(
                tokens.authorize(&holding(forged), "alice"),
                Err(StatusCode::UNAUTHORIZED),
                "{forged}"
            );
        }
    }

    #[test]
    fn a_lifetime_past_the_maximum_is_shortened_not_a_panic_at_login() {
        let tokens = Tokens::new(Duration::from_secs(u64::MAX));
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
