//! A deliberately small guard for per-user streams: `POST /login/{userId}` hands
//! out a random token (as a cookie, and in the JSON answer), and a user's stream
//! needs that user's token, from the `token` cookie or a `?token=` query
//! parameter, since `EventSource` cannot set headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

/// Tokens issued so far: token → user id.
#[derive(Clone, Default)]
pub struct Tokens {
    by_token: Arc<Mutex<HashMap<String, String>>>,
}

impl Tokens {
    /// A new random token for `user_id`.
    pub fn issue(&self, user_id: &str) -> String {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.lock().insert(token.clone(), user_id.to_owned());
        token
    }

    /// `Ok` when `credentials` hold `user_id`'s token: 401 without a valid
    /// token, 403 with another user's.
    pub fn authorize(&self, credentials: &Credentials, user_id: &str) -> Result<(), StatusCode> {
        let token = credentials.0.as_deref().ok_or(StatusCode::UNAUTHORIZED)?;
        match self.lock().get(token) {
            None => Err(StatusCode::UNAUTHORIZED),
            Some(owner) if owner == user_id => Ok(()),
            Some(_) => Err(StatusCode::FORBIDDEN),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.by_token.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
