//! SASL on the Kafka listener: the mechanisms' server sides, without I/O.
//!
//! - KIP-43 (SaslHandshake) then KIP-152 (SaslAuthenticate) carry the
//!   tokens; [`crate::handler`] drives the exchange and [`Session`] holds a
//!   connection's state between its requests.
//! - PLAIN (RFC 4616): `authzid NUL user NUL password`, checked against the
//!   user's SCRAM-SHA-256 credential; offered only where a password may
//!   travel (TLS, or `--allow-plaintext-passwords`).
//! - SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677; Kafka's KIP-84)
//!   against the credentials the metadata image holds for every user. No
//!   channel binding (Kafka offers none), no delegation tokens
//!   (`tokenauth`): both are refused. An unknown user gets a challenge like
//!   a known one's (a salt derived from the name) and fails at the proof, so
//!   the exchange does not tell which users exist.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rivulet_metadata::security::{
    constant_time_eq, hash, hmac, Principal, ScramCredential, ScramMechanism, SCRAM_ITERATIONS,
};

/// A SASL mechanism the listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// SCRAM with this hash.
    Scram(ScramMechanism),
}

impl Mechanism {
    /// From its SASL name (case-sensitive, as Kafka).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            "SCRAM-SHA-256" => Some(Self::Scram(ScramMechanism::Sha256)),
            "SCRAM-SHA-512" => Some(Self::Scram(ScramMechanism::Sha512)),
            _ => None,
        }
    }

    /// Its SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(m) => m.sasl_name(),
        }
    }
}

/// Why an exchange failed; the connection is closed after the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The client's message is not what the mechanism expects.
    #[error("malformed {mechanism} message: {why}")]
    Malformed {
        /// The mechanism.
        mechanism: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// Wrong user name or password (which one is not said). Kafka's text.
    #[error(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {0}"
    )]
    Failed(&'static str),
    /// Something the listener does not offer (channel binding, tokens).
    #[error("{0}")]
    Unsupported(&'static str),
}

/// SCRAM's server side for one exchange: [`Self::client_first`], then
/// [`Self::client_final`].
#[derive(Debug)]
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: ScramState,
}

#[derive(Debug)]
// One per exchange in progress, never in a collection: not worth a box.
#[allow(clippy::large_enum_variant)]
enum ScramState {
    Start,
    Challenged {
        user: String,
        /// `None` for an unknown user: the proof cannot match.
        credential: Option<ScramCredential>,
        /// `c=` of the final message: the GS2 header, base64.
        gs2_b64: String,
        /// The client's part of `nonce`.
        client_nonce: String,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    Done,
}

impl ScramServer {
    /// A new exchange with `mechanism`.
    pub fn new(mechanism: ScramMechanism) -> Self {
        Self {
            mechanism,
            state: ScramState::Start,
        }
    }

    fn malformed(&self, why: &'static str) -> SaslError {
        SaslError::Malformed {
            mechanism: self.mechanism.sasl_name(),
            why,
        }
    }

    /// Answers the client-first message with the server-first one.
    /// `lookup` gives the user's credential for this hash; `server_nonce`
    /// is fresh randomness (printable, no `,`); `fake_salt` is the salt
    /// shown for a user who does not exist (stable per name).
    pub fn client_first(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        server_nonce: &str,
        fake_salt: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<Vec<u8>, SaslError> {
        if !matches!(self.state, ScramState::Start) {
            return Err(self.malformed("a second client-first message"));
        }
        self.state = ScramState::Done;
        let text = std::str::from_utf8(message).map_err(|_| self.malformed("not UTF-8"))?;
        // gs2-header = cbind-flag "," [authzid] ","
        let mut parts = text.splitn(3, ',');
        let (flag, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
            (Some(f), Some(a), Some(b)) => (f, a, b),
            _ => return Err(self.malformed("no GS2 header")),
        };
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(SaslError::Unsupported(
                    "SCRAM channel binding is not offered: use SCRAM without -PLUS",
                ))
            }
            _ => return Err(self.malformed("bad channel-binding flag")),
        }
        let mut fields = bare.split(',');
        let user = match fields.next().and_then(|f| f.strip_prefix("n=")) {
            Some(n) => decode_sasl_name(n).ok_or_else(|| self.malformed("bad user name"))?,
            None => return Err(self.malformed("no user name")),
        };
        let client_nonce = match fields.next().and_then(|f| f.strip_prefix("r=")) {
            Some(r) if !r.is_empty() && r.bytes().all(|b| (0x21..=0x7e).contains(&b)) => r,
            _ => return Err(self.malformed("no client nonce")),
        };
        for ext in fields {
            if ext.starts_with("tokenauth=") {
                return Err(SaslError::Unsupported(
                    "delegation tokens are not supported",
                ));
            }
            if ext.starts_with("m=") {
                return Err(self.malformed("a mandatory extension"));
            }
        }
        match authzid {
            "" => {}
            a => match a.strip_prefix("a=").and_then(decode_sasl_name) {
                // Kafka: the authorization id, if any, is the user.
                Some(z) if z == user => {}
                _ => {
                    return Err(SaslError::Unsupported(
                        "an authorization id other than the user is not supported",
                    ))
                }
            },
        }
        let credential = lookup(&user).filter(|c| c.mechanism == self.mechanism);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (fake_salt(&user), SCRAM_ITERATIONS),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let gs2 = &text[..text.len() - bare.len()];
        self.state = ScramState::Challenged {
            user,
            credential,
            gs2_b64: B64.encode(gs2),
            client_nonce: client_nonce.to_owned(),
            nonce,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
        };
        Ok(server_first.into_bytes())
    }

    /// The user the client-first message named, once it has come.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            ScramState::Challenged { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Checks the client-final message's proof: the user and the
    /// server-final message (`v=` the server's signature).
    pub fn client_final(&mut self, message: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
        let ScramState::Challenged {
            user,
            credential,
            gs2_b64,
            client_nonce,
            nonce,
            client_first_bare,
            server_first,
        } = std::mem::replace(&mut self.state, ScramState::Done)
        else {
            return Err(self.malformed("a client-final message out of turn"));
        };
        let text = std::str::from_utf8(message).map_err(|_| self.malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| self.malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        if fields.next().and_then(|f| f.strip_prefix("c=")) != Some(gs2_b64.as_str()) {
            return Err(self.malformed("channel binding does not repeat the GS2 header"));
        }
        // RFC 5802: the nonce the server sent (client's + server's part).
        // librdkafka before 2.6.1 (Debian's kcat links 2.0.2) prefixes the
        // client's part once more (librdkafka#4895); Kafka 3.8.1 accepted
        // that, Kafka 4 refuses it. That exact form is accepted here: it
        // still carries the server's fresh part, and the proof covers it,
        // so it is no replay (CVE-2024-56128 is about a nonce not checked).
        let echoed = fields.next().and_then(|f| f.strip_prefix("r="));
        let buggy = echoed
            .and_then(|r| r.strip_prefix(client_nonce.as_str()))
            .is_some_and(|rest| rest == nonce);
        if echoed != Some(nonce.as_str()) && !buggy {
            return Err(self.malformed("the nonce is not the one sent"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| self.malformed("the proof is not base64"))?;
        let failed = SaslError::Failed(self.mechanism.sasl_name());
        let Some(credential) = credential else {
            return Err(failed);
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(
            self.mechanism,
            &credential.stored_key,
            auth_message.as_bytes(),
        );
        if proof.len() != signature.len() {
            return Err(failed);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(&hash(self.mechanism, &client_key), &credential.stored_key) {
            return Err(failed);
        }
        let server_signature = hmac(
            self.mechanism,
            &credential.server_key,
            auth_message.as_bytes(),
        );
        Ok((
            user,
            format!("v={}", B64.encode(server_signature)).into_bytes(),
        ))
    }
}

/// RFC 5802's saslname: `=2C` is `,`, `=3D` is `=`, no other `=`.
fn decode_sasl_name(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// A PLAIN message's user and password (RFC 4616); the authorization id,
/// if given, must be the user.
pub fn parse_plain(message: &[u8]) -> Result<(String, String), SaslError> {
    let malformed = |why| SaslError::Malformed {
        mechanism: "PLAIN",
        why,
    };
    let text = std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))?;
    let mut parts = text.split('\0');
    let (authzid, user, password) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(u), Some(p), None) => (a, u, p),
        _ => return Err(malformed("not authzid NUL user NUL password")),
    };
    if user.is_empty() || password.is_empty() {
        return Err(malformed("an empty user name or password"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::Unsupported(
            "an authorization id other than the user is not supported",
        ));
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// Where a connection is in authentication (Kafka's
/// `SaslServerAuthenticator` states).
#[derive(Debug)]
pub enum Session {
    /// Nothing yet but ApiVersions: a SaslHandshake may come.
    Fresh,
    /// The handshake chose this mechanism; SaslAuthenticate comes next.
    Handshaken(Mechanism),
    /// Half-way through SCRAM.
    Scram(Box<ScramServer>),
    /// Authenticated as this user.
    Authenticated(Principal),
    /// Served without authentication (a node without `--require-auth`):
    /// SASL can no longer start.
    Anonymous,
}

impl Session {
    /// Whose requests these are.
    pub fn principal(&self) -> Principal {
        match self {
            Self::Authenticated(p) => p.clone(),
            _ => Principal::Anonymous,
        }
    }

    /// Whether the connection has authenticated.
    pub fn authenticated(&self) -> bool {
        matches!(self, Self::Authenticated(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's exchange, byte for byte.
    #[test]
    fn scram_sha_256_follows_the_rfc_7677_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::derive(ScramMechanism::Sha256, "pencil", &salt, 4096);
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        let first = s
            .client_first(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                |u| (u == "user").then(|| cred.clone()),
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                |_| panic!("the user exists"),
            )
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (user, last) = s
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            std::str::from_utf8(&last).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// A client's side of SCRAM, to drive the server with other passwords.
    fn client_final(mech: ScramMechanism, password: &str, first: &[u8], bare: &str) -> Vec<u8> {
        let first = std::str::from_utf8(first).unwrap();
        let mut nonce = "";
        let mut salt = vec![];
        let mut iterations = 0;
        for f in first.split(',') {
            if let Some(r) = f.strip_prefix("r=") {
                nonce = r;
            } else if let Some(x) = f.strip_prefix("s=") {
                salt = B64.decode(x).unwrap();
            } else if let Some(i) = f.strip_prefix("i=") {
                iterations = i.parse().unwrap();
            }
        }
        let salted =
            rivulet_metadata::security::pbkdf2(mech, password.as_bytes(), &salt, iterations);
        let client_key = hmac(mech, &salted, b"Client Key");
        let stored = hash(mech, &client_key);
        let without = format!("c=biws,r={nonce}");
        let auth = format!("{bare},{first},{without}");
        let sig = hmac(mech, &stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without},p={}", B64.encode(proof)).into_bytes()
    }

    #[test]
    fn scram_accepts_old_librdkafkas_doubled_client_nonce() {
        let cred = ScramCredential::derive(ScramMechanism::Sha256, "pw", b"salt", 4096);
        let run = |echo: &str| {
            let mut s = ScramServer::new(ScramMechanism::Sha256);
            let first = s
                .client_first(b"n,,n=u,r=abc", |_| Some(cred.clone()), "xyz", |_| vec![])
                .unwrap();
            assert_eq!(&first[..9], b"r=abcxyz,");
            // The proof is computed over the message as sent.
            let salted =
                rivulet_metadata::security::pbkdf2(ScramMechanism::Sha256, b"pw", b"salt", 4096);
            let client_key = hmac(ScramMechanism::Sha256, &salted, b"Client Key");
            let stored = hash(ScramMechanism::Sha256, &client_key);
            let without = format!("c=biws,r={echo}");
            let auth = format!(
                "n=u,r=abc,{},{without}",
                std::str::from_utf8(&first).unwrap()
            );
            let sig = hmac(ScramMechanism::Sha256, &stored, auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
            s.client_final(format!("{without},p={}", B64.encode(proof)).as_bytes())
        };
        assert!(run("abcxyz").is_ok());
        assert!(run("abcabcxyz").is_ok(), "librdkafka < 2.6.1");
        for bad in [
            "xyz",
            "abcxy",
            "zzzabcxyz",
            "aabcxyz",
            "abcxyzabcxyz",
            "abcxyzz",
        ] {
            assert!(run(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scram_sha_512_accepts_the_password_and_refuses_others() {
        let cred = ScramCredential::derive(ScramMechanism::Sha512, "s3cret", b"salty", 4096);
        for (password, ok) in [("s3cret", true), ("s3cret!", false), ("", false)] {
            let mut s = ScramServer::new(ScramMechanism::Sha512);
            let first = s
                .client_first(
                    b"n,,n=alice,r=abc",
                    |_| Some(cred.clone()),
                    "xyz",
                    |_| vec![],
                )
                .unwrap();
            let fin = client_final(ScramMechanism::Sha512, password, &first, "n=alice,r=abc");
            match s.client_final(&fin) {
                Ok((user, _)) => assert!(ok && user == "alice", "{password:?}"),
                Err(e) => assert!(!ok && e == SaslError::Failed("SCRAM-SHA-512"), "{e}"),
            }
        }
    }

    #[test]
    fn scram_does_not_tell_an_unknown_user_from_a_wrong_password() {
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        let first = s
            .client_first(
                b"n,,n=nobody,r=abc",
                |_| None,
                "xyz",
                |u| u.as_bytes().to_vec(),
            )
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&first).unwrap(),
            format!("r=abcxyz,s={},i={SCRAM_ITERATIONS}", B64.encode("nobody"))
        );
        let fin = client_final(ScramMechanism::Sha256, "guess", &first, "n=nobody,r=abc");
        assert_eq!(
            s.client_final(&fin),
            Err(SaslError::Failed("SCRAM-SHA-256"))
        );
        // A credential of the other hash is not used.
        let cred = ScramCredential::derive(ScramMechanism::Sha512, "p", b"s", 4096);
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        s.client_first(b"n,,n=a,r=abc", |_| Some(cred), "xyz", |_| b"fake".to_vec())
            .unwrap();
    }

    #[test]
    fn scram_refuses_what_it_does_not_offer_and_garbage() {
        let ok = |m: &[u8]| {
            ScramServer::new(ScramMechanism::Sha256).client_first(m, |_| None, "x", |_| vec![])
        };
        assert!(ok(b"n,,n=a,r=b").is_ok());
        assert!(ok(b"y,a=a,n=a,r=b").is_ok());
        assert!(ok(b"n,,n=a=2Cb=3Dc,r=b").is_ok());
        for bad in [
            &b"p=tls-unique,,n=a,r=b"[..],
            b"n,,n=a,r=b,tokenauth=true",
            b"n,a=other,n=a,r=b",
            b"n,,n=a=xx,r=b",
            b"n,,n=,r=b",
            b"n,,r=b",
            b"n,,n=a",
            b"n,,n=a,r=",
            b"n,n=a,r=b",
            b"x,,n=a,r=b",
            b"n,,n=a,r=b,m=ext",
            b"",
            b"\xff\xfe",
        ] {
            assert!(ok(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // The final message must repeat the nonce and the header.
        let cred = ScramCredential::derive(ScramMechanism::Sha256, "p", b"s", 4096);
        for fin in [
            &b"c=biws,r=abcX,p=AAAA"[..],
            b"c=eSws,r=abcxyz,p=AAAA",
            b"c=biws,r=abcxyz",
            b"c=biws,r=abcxyz,p=***",
        ] {
            let mut s = ScramServer::new(ScramMechanism::Sha256);
            s.client_first(b"n,,n=a,r=abc", |_| Some(cred.clone()), "xyz", |_| vec![])
                .unwrap();
            assert!(matches!(
                s.client_final(fin),
                Err(SaslError::Malformed { .. })
            ));
        }
        // Out of turn.
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        assert!(s.client_final(b"c=biws,r=a,p=AAAA").is_err());
    }

    #[test]
    fn plain_parses_rfc_4616_messages() {
        assert_eq!(
            parse_plain(b"\0alice\0pw"),
            Ok(("alice".into(), "pw".into()))
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0p\xc3\xa9"),
            Ok(("alice".into(), "p\u{e9}".into()))
        );
        for bad in [
            &b"bob\0alice\0pw"[..],
            b"\0alice",
            b"\0\0pw",
            b"\0alice\0",
            b"\0a\0b\0c",
            b"\xff\0a\0b",
        ] {
            assert!(parse_plain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mechanisms_by_name() {
        for m in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            assert_eq!(Mechanism::parse(m).unwrap().name(), m);
        }
        assert_eq!(Mechanism::parse("GSSAPI"), None);
        assert_eq!(Mechanism::parse("plain"), None);
    }
}
