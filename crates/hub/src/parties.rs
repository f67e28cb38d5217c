//! Parties and their API credentials.

use domain::party::PARTY_NAME_LEN_MAX;
use domain::{Eui64, Party, PartyId, Role, Roles, crypto};
use store::TokenRecord;

use crate::{Caller, Hub, HubError, IssuedToken};

/// A party to create, as given by a caller: every field is checked and named on error.
#[derive(Debug, Clone, Default)]
pub struct PartyInput {
    pub id: String,
    pub name: String,
    /// Role codes (`IS`, `GS`, `HUB`, ...).
    pub roles: Vec<String>,
    /// EUI-64, plain or hyphenated.
    pub originator: String,
    /// ECDSA P-256 public key, PEM `PUBLIC KEY`.
    pub signing_key_pem: Option<String>,
}

/// Longest token label.
pub const TOKEN_LABEL_LEN_MAX: usize = 100;
/// Tokens a party may hold (active or revoked): a bound on what one party can make the hub
/// store.
pub const TOKENS_PER_PARTY_MAX: usize = 1000;
/// Originator EUI-64 of the hub operator party created on first start (reserved).
pub const OPERATOR_ORIGINATOR: &str = "FF-FF-FF-FF-FF-FF-FF-FE";
/// Id of the hub operator party created on first start.
pub const OPERATOR_PARTY_ID: &str = "hub-operator";

pub(crate) fn check_label(label: &str) -> Result<(), HubError> {
    if label.chars().count() > TOKEN_LABEL_LEN_MAX || label.chars().any(char::is_control) {
        return Err(HubError::invalid(
            "label",
            format!("at most {TOKEN_LABEL_LEN_MAX} characters, no control characters"),
        ));
    }
    Ok(())
}

impl PartyInput {
    /// Check every field; the first broken rule is returned with its field name.
    pub fn parse(&self, created_at: jiff::Timestamp) -> Result<Party, HubError> {
        let id = PartyId::parse(&self.id).map_err(|e| HubError::invalid("id", e.rule))?;
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > PARTY_NAME_LEN_MAX || name.chars().any(char::is_control) {
            return Err(HubError::invalid(
                "name",
                format!("1 to {PARTY_NAME_LEN_MAX} characters, no control characters"),
            ));
        }
        if self.roles.is_empty() {
            return Err(HubError::invalid("roles", "a party needs at least one role"));
        }
        let roles = self
            .roles
            .iter()
            .map(|r| Role::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HubError::invalid("roles", e))?;
        let originator = Eui64::parse(&self.originator).map_err(|e| HubError::invalid("originator", e.to_string()))?;
        let signing_key_spki = self
            .signing_key_pem
            .as_deref()
            .map(crypto::p256_public_key_from_pem)
            .transpose()
            .map_err(|e| HubError::invalid("signing_key_pem", e.to_string()))?;
        Ok(Party {
            id,
            name: name.to_string(),
            roles: Roles::from_iter(roles),
            originator,
            signing_key_spki,
            created_at,
        })
    }
}

impl Hub {
    /// The caller's own party record.
    pub fn whoami(&self, caller: &Caller) -> Result<Party, HubError> {
        self.authorize(caller, "party.read-own", None)?;
        Ok(caller.party.clone())
    }

    /// Create a party (hub operator).
    pub async fn create_party(&self, caller: &Caller, input: &PartyInput) -> Result<Party, HubError> {
        self.authorize(caller, "party.manage", None)?;
        self.create_party_unchecked(input).await
    }

    /// Create a party without an authorisation check: for the local operator CLI.
    pub async fn create_party_unchecked(&self, input: &PartyInput) -> Result<Party, HubError> {
        let party = input.parse(self.now())?;
        self.store().insert_party(party.clone()).await?;
        tracing::info!(message = "Party created.", party = %party.id, roles = %party.roles.codes());
        Ok(party)
    }

    pub async fn parties(&self, caller: &Caller) -> Result<Vec<Party>, HubError> {
        self.authorize(caller, "party.read", None)?;
        Ok(self.store().parties().await?)
    }

    /// Every party, without an authorisation check: for the local operator CLI.
    pub async fn parties_unchecked(&self) -> Result<Vec<Party>, HubError> {
        Ok(self.store().parties().await?)
    }

    pub async fn party(&self, caller: &Caller, id: &PartyId) -> Result<Party, HubError> {
        self.authorize(caller, if *id == caller.party.id { "party.read-own" } else { "party.read" }, None)?;
        self.store().party(id).await?.ok_or_else(|| HubError::NotFound(format!("no party {id}")))
    }

    fn authorize_tokens(&self, caller: &Caller, party: &PartyId) -> Result<(), HubError> {
        self.authorize(caller, if *party == caller.party.id { "party.token-own" } else { "party.manage" }, None)?;
        Ok(())
    }

    /// Issue a token for `party`: a party for itself, the hub operator for anyone.
    pub async fn issue_token(&self, caller: &Caller, party: &PartyId, label: &str) -> Result<IssuedToken, HubError> {
        self.authorize_tokens(caller, party)?;
        self.issue_token_unchecked(party, label).await
    }

    pub async fn tokens(&self, caller: &Caller, party: &PartyId) -> Result<Vec<TokenRecord>, HubError> {
        self.authorize_tokens(caller, party)?;
        self.tokens_unchecked(party).await
    }

    pub async fn tokens_unchecked(&self, party: &PartyId) -> Result<Vec<TokenRecord>, HubError> {
        if self.store().party(party).await?.is_none() {
            return Err(HubError::NotFound(format!("no party {party}")));
        }
        Ok(self.store().tokens(party).await?)
    }

    /// Revoke a token; it stops working at once. Revoking twice is not an error.
    pub async fn revoke_token(&self, caller: &Caller, party: &PartyId, token_id: &str) -> Result<bool, HubError> {
        self.authorize_tokens(caller, party)?;
        self.revoke_token_unchecked(party, token_id).await
    }

    pub async fn revoke_token_unchecked(&self, party: &PartyId, token_id: &str) -> Result<bool, HubError> {
        let changed = self.store().revoke_token(party, token_id, self.now()).await?;
        tracing::info!(message = "API token revoked.", party = %party, token_id, changed);
        Ok(changed)
    }

    /// On first start there is no hub operator: create one and issue its first token, which
    /// the caller shows once. Returns `None` when an operator exists.
    pub async fn bootstrap_operator(&self) -> Result<Option<IssuedToken>, HubError> {
        let parties = self.store().parties().await?;
        if parties.iter().any(|p| p.roles.contains(Role::HubOperator)) {
            return Ok(None);
        }
        let input = PartyInput {
            id: OPERATOR_PARTY_ID.into(),
            name: "Hub operator".into(),
            roles: vec!["HUB".into()],
            originator: OPERATOR_ORIGINATOR.into(),
            signing_key_pem: None,
        };
        self.create_party_unchecked(&input).await?;
        Ok(Some(self.issue_token_unchecked(&PartyId::parse(OPERATOR_PARTY_ID).expect("valid id"), "bootstrap").await?))
    }
}
