//! Authentication: bearer tokens. A token is `mh_<id>_<secret>`: the id is public (listings,
//! logs), the secret is 32 random bytes. The hub keeps only the SHA-256 of the whole token.

use aws_lc_rs::rand::SecureRandom;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::Party;
use domain::crypto::sha256;
use store::TokenRecord;

use crate::{Hub, HubError};

/// Longest bearer token accepted before any lookup.
pub const TOKEN_LEN_MAX: usize = 128;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub party: Party,
    pub token_id: String,
}

/// A freshly issued token: the secret is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub id: String,
    pub party: domain::PartyId,
    pub label: String,
    pub token: String,
}

impl Hub {
    pub(crate) fn new_token(&self) -> Result<(String, String), HubError> {
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        let rng = &self.inner.rng;
        rng.fill(&mut id)
            .and_then(|_| rng.fill(&mut secret))
            .map_err(|_| HubError::Unavailable("no randomness".into()))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let token = format!("mh_{id}_{}", URL_SAFE_NO_PAD.encode(secret));
        Ok((id, token))
    }

    /// Issue a token for `party` without an authorisation check: for bootstrap and the local
    /// operator CLI. API callers go through [`Hub::issue_token`].
    pub async fn issue_token_unchecked(&self, party: &domain::PartyId, label: &str) -> Result<IssuedToken, HubError> {
        crate::parties::check_label(label)?;
        if self.inner.store.party(party).await?.is_none() {
            return Err(HubError::NotFound(format!("no party {party}")));
        }
        let (id, token) = self.new_token()?;
        self.inner
            .store
            .insert_token(
                TokenRecord {
                    id: id.clone(),
                    party: party.clone(),
                    label: label.to_string(),
                    hash: sha256(token.as_bytes()),
                    created_at: self.now(),
                    revoked_at: None,
                },
                crate::parties::TOKENS_PER_PARTY_MAX,
            )
            .await?;
        tracing::info!(message = "API token issued.", party = %party, token_id = %id);
        Ok(IssuedToken { id, party: party.clone(), label: label.to_string(), token })
    }

    /// Whether the token a caller authenticated with still holds (a long-lived stream asks
    /// again, so revoking a token ends its streams).
    pub async fn check_token(&self, caller: &Caller) -> Result<(), HubError> {
        let tokens = self.inner.store.tokens(&caller.party.id).await?;
        match tokens.iter().find(|t| t.id == caller.token_id) {
            Some(t) if t.revoked_at.is_none() => Ok(()),
            Some(t) => Err(HubError::Unauthenticated(format!("token {} was revoked", t.id))),
            None => Err(HubError::Unauthenticated("the token is gone".into())),
        }
    }

    /// Authenticate a bearer token.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, HubError> {
        if token.is_empty() || token.len() > TOKEN_LEN_MAX || !token.starts_with("mh_") {
            return Err(HubError::Unauthenticated("the bearer token is not a meterhub token".into()));
        }
        match self.inner.store.token_by_hash(sha256(token.as_bytes())).await? {
            None => Err(HubError::Unauthenticated("unknown bearer token".into())),
            Some((record, _)) if record.revoked_at.is_some() => Err(HubError::Unauthenticated(format!(
                "token {} was revoked at {}",
                record.id,
                record.revoked_at.expect("checked")
            ))),
            Some((record, party)) => Ok(Caller { party, token_id: record.id }),
        }
    }
}
