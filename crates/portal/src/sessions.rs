//! Browser sessions, their CSRF tokens, and the rate of login attempts.
//!
//! A session is a random 256-bit token in a `__Host-` cookie (`Secure`,
//! `HttpOnly`, `SameSite=Strict`, path `/`), kept in memory: a restart of
//! the node logs everyone out, which is the safe direction. Each session
//! has its own CSRF token, which every form posts back; a login replaces
//! the session token (no fixation).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use http::{HeaderMap, HeaderValue, header};

pub const SESSION_COOKIE: &str = "__Host-govchain-session";
/// Sessions held at once; past it the oldest-expiring are dropped first
/// only once expired, and new visitors are asked to retry.
pub const SESSIONS_MAX: usize = 20_000;
/// How long a session lasts without logging in (the login page's).
pub const ANONYMOUS_SESSION_TTL_MS: u64 = 30 * 60 * 1000;
/// Login attempts (challenges shown, device answers) one address may make
/// per minute, and at once.
pub const LOGIN_ATTEMPTS_PER_MINUTE: u32 = 60;
/// Addresses whose attempts are counted at once.
pub const RATE_ADDRESSES_MAX: usize = 10_000;

/// A citizen logged in through a QR login with `scope=account`.
#[derive(Clone, Debug)]
pub struct Citizen {
    pub did: String,
    pub public_key: Vec<u8>,
    /// The node's login session (`CompleteLoginResponse.session`), which
    /// reads the citizen's own record.
    pub login_session: String,
    /// Attested attributes the login asked for, with who attested them.
    pub claims: Vec<(String, Vec<String>)>,
}

/// An officer of the portal's department, logged in with the key the
/// department registered (RegisterOfficer).
#[derive(Clone, Debug)]
pub struct Officer {
    pub did: String,
    pub public_key: Vec<u8>,
    pub role: String,
}

/// Who a login proved to be.
#[derive(Clone, Debug)]
pub enum Principal {
    Citizen(Citizen),
    Officer(Officer),
}

#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub csrf: String,
    pub expires_ms: u64,
    pub citizen: Option<Citizen>,
    pub officer: Option<Officer>,
}

impl Session {
    /// The key that signs for the session's holder, if logged in.
    pub fn signer(&self) -> Option<&[u8]> {
        match (&self.citizen, &self.officer) {
            (Some(citizen), _) => Some(&citizen.public_key),
            (None, Some(officer)) => Some(&officer.public_key),
            (None, None) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{SESSIONS_MAX} browser sessions are open; retry in a few minutes")]
pub struct SessionsFull;

struct Bucket {
    tokens: f64,
    refreshed_ms: u64,
}

#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    attempts: Mutex<HashMap<IpAddr, Bucket>>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// 256 random bits in hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator failing is not recoverable for a web server that
    // hands out session tokens; the panic ends only the connection's task.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    hex::encode(bytes)
}

/// The session token in the request's cookies, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that keeps `session` in the browser.
pub fn set_cookie(session: &Session) -> HeaderValue {
    let max_age = session.expires_ms.saturating_sub(now_ms()) / 1000;
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        session.token
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-govchain-session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

impl Sessions {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The unexpired session of the request's cookie.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let token = cookie_token(headers)?;
        let now = now_ms();
        self.sessions()
            .get(token)
            .filter(|session| session.expires_ms > now)
            .cloned()
    }

    /// The request's session, or a new anonymous one (which the response
    /// must set as cookie: the bool says whether it is new).
    pub fn get_or_start(&self, headers: &HeaderMap) -> Result<(Session, bool), SessionsFull> {
        if let Some(session) = self.get(headers) {
            return Ok((session, false));
        }
        let session = Session {
            token: random_token(),
            csrf: random_token(),
            expires_ms: now_ms() + ANONYMOUS_SESSION_TTL_MS,
            citizen: None,
            officer: None,
        };
        self.insert(session.clone())?;
        Ok((session, true))
    }

    fn insert(&self, session: Session) -> Result<(), SessionsFull> {
        let now = now_ms();
        let mut sessions = self.sessions();
        if sessions.len() >= SESSIONS_MAX {
            sessions.retain(|_, kept| kept.expires_ms > now);
        }
        if sessions.len() >= SESSIONS_MAX {
            return Err(SessionsFull);
        }
        sessions.insert(session.token.clone(), session);
        Ok(())
    }

    /// Replaces the session `old` by a new one for `principal`, with new
    /// session and CSRF tokens, lasting until `expires_ms`.
    pub fn log_in(
        &self,
        old: &str,
        principal: Principal,
        expires_ms: u64,
    ) -> Result<Session, SessionsFull> {
        self.sessions().remove(old);
        let (citizen, officer) = match principal {
            Principal::Citizen(citizen) => (Some(citizen), None),
            Principal::Officer(officer) => (None, Some(officer)),
        };
        let session = Session {
            token: random_token(),
            csrf: random_token(),
            expires_ms,
            citizen,
            officer,
        };
        self.insert(session.clone())?;
        Ok(session)
    }

    pub fn end(&self, token: &str) {
        self.sessions().remove(token);
    }

    /// Counts a login attempt from `address`: false when it is over
    /// [`LOGIN_ATTEMPTS_PER_MINUTE`] (a token bucket refilled evenly).
    pub fn allow_login_attempt(&self, address: IpAddr) -> bool {
        self.allow_login_attempt_at(address, now_ms())
    }

    fn allow_login_attempt_at(&self, address: IpAddr, now: u64) -> bool {
        let capacity = f64::from(LOGIN_ATTEMPTS_PER_MINUTE);
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if attempts.len() >= RATE_ADDRESSES_MAX && !attempts.contains_key(&address) {
            // Forget the addresses that have been quiet for a minute: their
            // buckets are full again anyway.
            attempts.retain(|_, bucket| now.saturating_sub(bucket.refreshed_ms) < 60_000);
            if attempts.len() >= RATE_ADDRESSES_MAX {
                return false;
            }
        }
        let bucket = attempts.entry(address).or_insert(Bucket {
            tokens: capacity,
            refreshed_ms: now,
        });
        let elapsed_ms = now.saturating_sub(bucket.refreshed_ms);
        #[allow(clippy::cast_precision_loss)]
        let refill = elapsed_ms as f64 * capacity / 60_000.0;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.refreshed_ms = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_host_only_secure_http_only_and_strict() {
        let session = Session {
            token: "ab".into(),
            csrf: "cd".into(),
            expires_ms: now_ms() + 60_000,
            citizen: None,
            officer: None,
        };
        let cookie = set_cookie(&session);
        let cookie = cookie.to_str().expect("ascii");
        assert!(cookie.starts_with(
            "__Host-govchain-session=ab; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age="
        ));
        let max_age: u64 = cookie
            .rsplit('=')
            .next()
            .expect("max-age")
            .parse()
            .expect("number");
        assert!((58..=60).contains(&max_age), "max-age {max_age}");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-govchain-session=feed; b=2"),
        );
        assert_eq!(cookie_token(&headers), Some("feed"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("govchain-session=feed"),
        );
        assert_eq!(cookie_token(&headers), None);
    }

    #[test]
    fn a_login_replaces_the_session_token_and_its_csrf_token() {
        let sessions = Sessions::default();
        let (anonymous, new) = sessions.get_or_start(&HeaderMap::new()).expect("room");
        assert!(new);
        let citizen = Citizen {
            did: "did:key:z".into(),
            public_key: vec![1; 32],
            login_session: "s".into(),
            claims: Vec::new(),
        };
        let logged_in = sessions
            .log_in(
                &anonymous.token,
                Principal::Citizen(citizen),
                now_ms() + 60_000,
            )
            .expect("room");
        assert_ne!(logged_in.token, anonymous.token);
        assert_ne!(logged_in.csrf, anonymous.csrf);
        let mut headers = HeaderMap::new();
        let old = format!("{SESSION_COOKIE}={}", anonymous.token);
        headers.insert(header::COOKIE, HeaderValue::from_str(&old).expect("ascii"));
        assert!(
            sessions.get(&headers).is_none(),
            "the old token still works"
        );
    }

    #[test]
    fn login_attempts_are_limited_per_address_and_refill() {
        let sessions = Sessions::default();
        let address: IpAddr = [127, 0, 0, 9].into();
        let other: IpAddr = [127, 0, 0, 10].into();
        let now = 1_000_000;
        for attempt in 0..LOGIN_ATTEMPTS_PER_MINUTE {
            assert!(
                sessions.allow_login_attempt_at(address, now),
                "attempt {attempt}"
            );
        }
        assert!(!sessions.allow_login_attempt_at(address, now));
        assert!(sessions.allow_login_attempt_at(other, now));
        // One attempt comes back every second (60 a minute).
        assert!(sessions.allow_login_attempt_at(address, now + 1_000));
        assert!(!sessions.allow_login_attempt_at(address, now + 1_000));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abcd", "abce"));
        assert!(!same_token("abcd", "abc"));
    }
}
