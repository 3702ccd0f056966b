//! Who is calling, and may they: a tower layer in front of the services. It finds the caller's
//! principal (a Bearer token of the tokens file, else a verified client certificate), checks
//! the method's role in `roles.rs`, and puts the principal in the request extensions for the
//! handlers and in the response extensions for the request log. Refusals are answered here,
//! through the one error mapping; no credential is ever echoed or logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use tower::{Layer, Service};

use super::connections::Peer;
use super::metrics::Metrics;
use super::principal::{Principal, Role};
use super::roles::{self, Access};
use super::tokens::Tokens;
use crate::error::Error;

/// How callers are authenticated.
#[derive(Clone)]
pub struct AuthLayer {
    policy: Arc<AuthPolicy>,
}

struct AuthPolicy {
    /// The tokens file's principals, swapped on reload; None: no tokens file.
    tokens: Option<Arc<ArcSwap<Tokens>>>,
    /// Client certificates are required and verified (mTLS).
    mtls: bool,
    reflection_requires_auth: bool,
    /// Refusals are counted by code.
    metrics: Metrics,
}

impl AuthLayer {
    pub fn new(
        tokens: Option<Arc<ArcSwap<Tokens>>>,
        mtls: bool,
        reflection_requires_auth: bool,
        metrics: Metrics,
    ) -> Self {
        Self {
            policy: Arc::new(AuthPolicy {
                tokens,
                mtls,
                reflection_requires_auth,
                metrics,
            }),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    policy: Arc<AuthPolicy>,
}

impl AuthPolicy {
    fn enabled(&self) -> bool {
        self.tokens.is_some() || self.mtls
    }

    /// The principal of a request that needs `needed`, or why not.
    fn authorize<B>(&self, request: &http::Request<B>, needed: Role) -> Result<Principal, Error> {
        let principal = self.authenticate(request)?;
        match principal {
            Some(principal) if principal.role >= needed => Ok(principal),
            Some(principal) => Err(Error::PermissionDenied {
                principal: principal.name,
                role: Some(principal.role),
                method: method_of(request.uri().path()),
                needed,
            }),
            None => Err(Error::PermissionDenied {
                principal: certificate_of(request).unwrap_or_default(),
                role: None,
                method: method_of(request.uri().path()),
                needed,
            }),
        }
    }

    /// Ok(None): a verified certificate the tokens file gives no role.
    fn authenticate<B>(&self, request: &http::Request<B>) -> Result<Option<Principal>, Error> {
        if let Some(header) = request.headers().get(http::header::AUTHORIZATION) {
            let token = header
                .to_str()
                .ok()
                .and_then(bearer)
                .ok_or(Error::Unauthenticated {
                    why: "the authorization header is not `Bearer <token>`",
                })?;
            let tokens = self.tokens.as_ref().ok_or(Error::Unauthenticated {
                why: "this server takes no tokens",
            })?;
            return tokens.load().by_token(token).cloned().map(Some).ok_or(
                Error::Unauthenticated {
                    why: "the token is not known",
                },
            );
        }
        let Some(subject) = certificate_of(request) else {
            return Err(Error::Unauthenticated {
                why: "no credentials",
            });
        };
        match &self.tokens {
            // mTLS without a tokens file: the CA is the authorisation.
            None => Ok(Some(Principal {
                name: subject,
                role: Role::Admin,
            })),
            Some(tokens) => Ok(tokens.load().by_certificate(&subject).cloned()),
        }
    }
}

fn certificate_of<B>(request: &http::Request<B>) -> Option<String> {
    request.extensions().get::<Peer>()?.certificate.clone()
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `SetProvisionPolicy` of `/provision.v1.ProvisionPolicyService/SetProvisionPolicy`, kept
/// short and printable for a message.
fn method_of(path: &str) -> String {
    let method = path.rsplit('/').next().unwrap_or_default();
    method
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .take(128)
        .collect()
}

impl<S, B, ResBody> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let access = roles::access(request.uri().path(), self.policy.reflection_requires_auth);
        let principal = match (self.policy.enabled(), access) {
            (false, _) => Principal::anonymous(),
            (true, Access::Open) => Principal {
                name: super::principal::ANONYMOUS.to_owned(),
                role: Role::Reader,
            },
            (true, Access::Role(needed)) => match self.policy.authorize(&request, needed) {
                Ok(principal) => principal,
                Err(error) => {
                    let name = match &error {
                        Error::PermissionDenied { principal, .. } => Some(principal.clone()),
                        _ => None,
                    };
                    let status = tonic::Status::from(error);
                    self.policy.metrics.auth_failure(status.code());
                    let mut response = status.into_http::<ResBody>();
                    if let Some(name) = name {
                        response.extensions_mut().insert(Principal {
                            name,
                            role: Role::Reader,
                        });
                    }
                    return Box::pin(async move { Ok(response) });
                }
            },
        };
        request.extensions_mut().insert(principal.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            response.extensions_mut().insert(principal);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_takes_only_the_bearer_scheme() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn method_names_in_messages_stay_small_and_plain() {
        assert_eq!(
            method_of("/provision.v1.ProvisionPolicyService/SetProvisionPolicy"),
            "SetProvisionPolicy"
        );
        assert_eq!(method_of("/x/\u{1b}[31mred"), "31mred");
        assert_eq!(method_of(&format!("/x/{}", "a".repeat(1000))).len(), 128);
    }
}
