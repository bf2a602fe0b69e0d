//! Bearer-token auth with two roles: users (campaigns, results, models) and workers (lease,
//! heartbeat, complete, fail). A token of one role is refused by the other role's service.

use crate::error::Error;
use std::sync::Arc;
use tonic::{Request, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Worker,
}

/// The configured tokens; a role without a token is open (the embedded single-machine setup).
#[derive(Clone, Default)]
pub struct Tokens {
    pub user: Option<Arc<str>>,
    pub worker: Option<Arc<str>>,
}

impl Tokens {
    pub fn new(user: Option<String>, worker: Option<String>) -> Self {
        Self {
            user: user.filter(|t| !t.is_empty()).map(Arc::from),
            worker: worker.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }

    fn token(&self, role: Role) -> Option<&str> {
        match role {
            Role::User => self.user.as_deref(),
            Role::Worker => self.worker.as_deref(),
        }
    }

    /// Checks an `authorization` header value for a call to `role`'s service.
    pub fn check(&self, role: Role, header: Option<&str>) -> Result<(), Error> {
        let Some(expected) = self.token(role) else {
            return Ok(());
        };
        let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(Error::Unauthenticated(match role {
                Role::User => "missing bearer token; pass --token or set VEPHYS_TOKEN to the coordinator's user token",
                Role::Worker => "missing bearer token; configure the worker with the coordinator's worker token",
            }));
        };
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            return Ok(());
        }
        let other = match role {
            Role::User => Role::Worker,
            Role::Worker => Role::User,
        };
        if self
            .token(other)
            .is_some_and(|t| constant_time_eq(presented.as_bytes(), t.as_bytes()))
        {
            return Err(Error::PermissionDenied(match role {
                Role::User => "a worker token cannot call the user api; use a user token",
                Role::Worker => "a user token cannot call the worker api; use the worker token",
            }));
        }
        Err(Error::Unauthenticated(
            "invalid bearer token; check the token the coordinator was started with",
        ))
    }

    pub fn interceptor(&self, role: Role) -> Auth {
        Auth {
            tokens: self.clone(),
            role,
        }
    }
}

/// Compares without an early exit, so response timing does not leak how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tonic interceptor guarding one service.
#[derive(Clone)]
pub struct Auth {
    tokens: Tokens,
    role: Role,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.tokens.check(self.role, header)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(Some("u".into()), Some("w".into()))
    }

    #[test]
    fn each_role_accepts_only_its_own_token() {
        let t = tokens();
        assert!(t.check(Role::User, Some("Bearer u")).is_ok());
        assert!(t.check(Role::Worker, Some("Bearer w")).is_ok());
        assert!(matches!(
            t.check(Role::Worker, Some("Bearer u")),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            t.check(Role::User, Some("Bearer w")),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn missing_or_wrong_token_is_unauthenticated() {
        let t = tokens();
        assert!(matches!(
            t.check(Role::User, None),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            t.check(Role::User, Some("u")),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            t.check(Role::Worker, Some("Bearer nope")),
            Err(Error::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_role_without_a_token_is_open() {
        let t = Tokens::new(None, Some("w".into()));
        assert!(t.check(Role::User, None).is_ok());
        assert!(t.check(Role::Worker, None).is_err());
    }
}
