//! Bearer-token authentication: each token maps to one tenant and a role; the tenant always
//! comes from the token. Tokens are compared in constant time.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;
use synckit_types::TenantId;

use crate::config::{Role, TokenGrant};
use crate::error::ApiError;

/// Header a client may send to say which tenant it means; it must match the token's.
pub const TENANT_HEADER: &str = "x-synckit-tenant";

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant of the token (or `default` on an anonymous hub).
    pub tenant: TenantId,
    /// What it may do.
    pub role: Role,
    /// Which configured token it presented (its index); `None` on an anonymous hub.
    pub grant: Option<usize>,
}

impl Principal {
    /// 403 unless the principal has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token has the {:?} role; this call needs {:?}",
                self.role, role
            )))
        }
    }

    /// 403 when a request names a tenant other than the token's (header or `tenant=` query).
    pub fn check_named_tenant(&self, headers: &HeaderMap, query: &str) -> Result<(), ApiError> {
        let from_header = headers
            .get(TENANT_HEADER)
            .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
        let from_query = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "tenant")
            .map(|(_, v)| v.into_owned());
        for named in from_header.into_iter().chain(from_query) {
            if named != self.tenant.as_str() {
                return Err(ApiError::forbidden(
                    "the request names a tenant this token does not belong to",
                ));
            }
        }
        Ok(())
    }
}

/// Checks tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    grants: Vec<TokenGrant>,
}

impl Authenticator {
    /// An authenticator for `grants`; none makes the hub anonymous.
    pub fn new(grants: Vec<TokenGrant>) -> Authenticator {
        Authenticator { grants }
    }

    /// How many tokens are configured.
    pub fn grants(&self) -> usize {
        self.grants.len()
    }

    /// Whether the hub is anonymous (no tokens).
    pub fn is_anonymous(&self) -> bool {
        self.grants.is_empty()
    }

    /// The principal for a request's headers, or 401.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if self.grants.is_empty() {
            return Ok(Principal {
                tenant: TenantId::default_tenant(),
                role: Role::Admin,
                grant: None,
            });
        }
        let value = headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be Bearer <token>"))?;
        // Compare against every grant, so timing does not tell which one matched.
        let mut found: Option<(usize, &TokenGrant)> = None;
        for (index, grant) in self.grants.iter().enumerate() {
            if bool::from(grant.secret.as_bytes().ct_eq(token.as_bytes())) {
                found = Some((index, grant));
            }
        }
        found
            .map(|(index, g)| Principal {
                tenant: g.tenant.clone(),
                role: g.role,
                grant: Some(index),
            })
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn tokens_map_to_tenant_and_role() {
        let auth = Authenticator::new(vec![
            "r=a:read".parse().unwrap(),
            "w=b:write".parse().unwrap(),
        ]);
        let p = auth.authenticate(&headers("Bearer w")).unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("b", Role::Write));
        assert!(p.require(Role::Write).is_ok());
        assert!(p.require(Role::Admin).is_err());
        for bad in ["Bearer x", "Bearer ", "Basic r", "r"] {
            assert!(auth.authenticate(&headers(bad)).is_err(), "{bad}");
        }
        assert!(auth.authenticate(&HeaderMap::new()).is_err());
        let mut named = HeaderMap::new();
        named.insert(TENANT_HEADER, HeaderValue::from_static("a"));
        assert!(p.check_named_tenant(&named, "").is_err());
        assert!(p.check_named_tenant(&HeaderMap::new(), "tenant=a").is_err());
        assert!(
            p.check_named_tenant(&HeaderMap::new(), "tenant=b&after=1")
                .is_ok()
        );
    }

    #[test]
    fn anonymous_hubs_use_the_default_tenant_with_full_rights() {
        let p = Authenticator::new(vec![])
            .authenticate(&HeaderMap::new())
            .unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("default", Role::Admin));
    }
}
