//! RFC 6749 4.4: the client credentials grant.

use crate::oauth::client::{Client, GrantType};
use crate::oauth::error::OAuthError;
use crate::oauth::issue::{IssuedAccessToken, Issuer, TokenResponse};
use crate::oauth::request::ClientCredentialsRequest;
use crate::oauth::scope::Scope;

/// Issue an access token to an authenticated confidential client.
///
/// Scope: what was asked, each of it registered for the client (else `invalid_scope`); when
/// nothing is asked, every scope the client is registered for (RFC 6749 3.3 lets the server
/// choose a default). `aud`: the requested resources, each registered (else `invalid_target`,
/// RFC 8707 2), otherwise the issuer.
pub fn exchange(
    issuer: &Issuer<'_>,
    client: &Client,
    request: &ClientCredentialsRequest,
) -> Result<(TokenResponse, IssuedAccessToken), OAuthError> {
    if client.is_public() {
        return Err(OAuthError::unauthorized_client(
            "public clients cannot use client_credentials",
        ));
    }
    if !client.allows_grant(GrantType::ClientCredentials) {
        return Err(OAuthError::unauthorized_client(
            "the client is not registered for client_credentials",
        ));
    }
    let scope = match &request.scope {
        Some(asked) => {
            if asked.not_in(&client.scopes).next().is_some() {
                return Err(OAuthError::invalid_scope(
                    "the requested scope is not registered for this client",
                ));
            }
            asked.clone()
        }
        None => Scope::from_tokens(&client.scopes),
    };
    super::check_resources(client, &request.resources)?;
    let aud = super::audience(issuer, &request.resources);
    let issued = issuer.access_token(
        &client.client_id,
        &client.client_id,
        &scope,
        aud,
        None,
        None,
    )?;
    let response = TokenResponse {
        access_token: issued.token.clone(),
        token_type: "Bearer".into(),
        expires_in: issuer.tokens.access_token_ttl_secs,
        scope: (!scope.is_empty()).then(|| scope.to_string()),
        id_token: None,
        refresh_token: None,
    };
    Ok((response, issued))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;
    use crate::crypto::keys::{KeySet, SigningAlg};
    use crate::oauth::client::AuthMethod;
    use crate::oauth::error::ErrorCode;
    use crate::oauth::issue::Audience;

    const ISS: &str = "https://id.example.com";

    fn client() -> Client {
        Client {
            client_id: "svc".into(),
            name: "Service".into(),
            secret_hash: Some("x".into()),
            auth_method: AuthMethod::ClientSecretBasic,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec![GrantType::ClientCredentials],
            scopes: vec!["api:read".into(), "api:write".into()],
            resources: vec!["https://api.example.com".into()],
            skip_consent: false,
            required_role: None,
            allowed_origins: Vec::new(),
            created_at: 0,
        }
    }

    fn run(
        client: &Client,
        scope: Option<&str>,
        resources: &[&str],
        alg: SigningAlg,
    ) -> Result<(TokenResponse, crate::oauth::issue::AccessTokenClaims), OAuthError> {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
        let tokens = TokenConfig {
            access_token_alg: alg,
            ..TokenConfig::default()
        };
        let issuer = Issuer {
            issuer: ISS,
            keys: &keys,
            tokens: &tokens,
            now: 1_000,
        };
        let req = ClientCredentialsRequest {
            scope: scope.map(|s| Scope::parse(s).unwrap()),
            resources: resources.iter().map(|s| s.to_string()).collect(),
        };
        let (resp, issued) = exchange(&issuer, client, &req)?;
        assert_eq!(issued.alg, alg);
        let claims = issuer
            .verify_access_token(&resp.access_token)
            .expect("verifies");
        Ok((resp, claims))
    }

    #[test]
    fn issues_rfc9068_token() {
        let (resp, claims) = run(&client(), Some("api:read"), &[], SigningAlg::ES256).unwrap();
        assert_eq!(resp.token_type, "Bearer");
        assert_eq!(resp.expires_in, 600);
        assert_eq!(resp.scope.as_deref(), Some("api:read"));
        assert_eq!(claims.sub, "svc");
        assert_eq!(claims.client_id, "svc");
        assert_eq!(claims.aud, Audience::One(ISS.into()));
        assert_eq!((claims.iat, claims.exp), (1_000, 1_600));
        let header = jsonwebtoken::decode_header(&resp.access_token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    }

    #[test]
    fn default_scope_resource_and_rs256() {
        let (resp, claims) = run(
            &client(),
            None,
            &["https://api.example.com"],
            SigningAlg::RS256,
        )
        .unwrap();
        assert_eq!(resp.scope.as_deref(), Some("api:read api:write"));
        assert_eq!(claims.aud, Audience::One("https://api.example.com".into()));
    }

    #[test]
    fn refusals() {
        let e = run(&client(), Some("api:read admin"), &[], SigningAlg::ES256).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidScope);
        let e = run(
            &client(),
            None,
            &["https://other.example.com"],
            SigningAlg::ES256,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTarget);
        let mut c = client();
        c.grant_types = vec![GrantType::AuthorizationCode];
        let e = run(&c, None, &[], SigningAlg::ES256).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnauthorizedClient);
    }
}
