//! A user's credentials on client calls: `authorization: Basic
//! base64(user:password)` on every request (RFC 7617), sent only over TLS
//! unless the caller opted into plaintext. The node checks the password
//! against the user's SCRAM credential (`rivulet_metadata::authn`).

use std::fmt;

use base64::Engine as _;
use tonic::codegen::http;

/// The header.
pub const AUTHORIZATION: &str = "authorization";

/// Longest user name plus password accepted in a header.
pub const MAX_CREDENTIALS: usize = 4_096;

/// A user name and password. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserCredentials {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl UserCredentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The header value.
    pub fn header(&self) -> http::HeaderValue {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let mut v = http::HeaderValue::from_str(&format!("Basic {token}"))
            .expect("base64 is a valid header value");
        v.set_sensitive(true);
        v
    }

    /// Reads a header value; `None` if it is not Basic credentials.
    pub fn parse(header: &[u8]) -> Option<Self> {
        if header.len() > MAX_CREDENTIALS * 2 {
            return None;
        }
        let token = header.strip_prefix(b"Basic ")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':')?;
        Some(Self::new(user, password))
    }
}

/// The `authorization` header a [`UserChannel`] adds (none: anonymous).
#[derive(Debug, Clone)]
pub struct UserHeader(Option<http::HeaderValue>);

impl crate::Stamp for UserHeader {
    fn stamp(&self, req: &mut http::Request<tonic::body::Body>) {
        if let Some(h) = &self.0 {
            req.headers_mut().insert(AUTHORIZATION, h.clone());
        }
    }
}

/// A channel that adds a user's credentials (if any) to every call.
pub type UserChannel = crate::StampedChannel<UserHeader>;

impl UserChannel {
    /// Calls over `inner`, as `user` if given.
    pub fn new(inner: tonic::transport::Channel, user: Option<&UserCredentials>) -> Self {
        Self {
            inner,
            stamp: UserHeader(user.map(UserCredentials::header)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_junk_is_none() {
        let c = UserCredentials::new("alice", "pa:ss wörd");
        let h = c.header();
        assert!(h.is_sensitive());
        assert_eq!(UserCredentials::parse(h.as_bytes()), Some(c.clone()));
        assert!(!format!("{c:?}").contains("wörd"));
        for junk in [
            &b""[..],
            b"Basic",
            b"Basic !!!",
            b"Bearer abc",
            b"Basic YWxpY2U=",
        ] {
            assert_eq!(UserCredentials::parse(junk), None, "{junk:?}");
        }
    }
}
