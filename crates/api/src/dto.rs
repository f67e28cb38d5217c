//! The API's JSON shapes. Requests take text and are checked by the hub, so a bad value is
//! refused naming its field; responses carry canonical forms.

use domain::catalogue::{Critical, Service, ServiceKind};
use domain::registry::{EnrolmentVersion, RegistrationVersion};
use domain::{Party, crypto};
use hub::TokenRecord;
use hub::registry::{RegistrationInput, RegistryView};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct PartyDto {
    /// Party id, e.g. `acme-energy`.
    pub id: String,
    pub name: String,
    /// Role codes: IS, ES, GS, ED, GT, OU, RSA (DUIS), PSP, MAP, MFR, REG, HUB.
    pub roles: Vec<String>,
    /// Originator EUI-64, hyphenated.
    pub originator: String,
    /// ECDSA P-256 public key (PEM) that devices verify the party's critical commands with.
    pub signing_key_pem: Option<String>,
    pub created_at: Timestamp,
}

impl From<&Party> for PartyDto {
    fn from(p: &Party) -> PartyDto {
        PartyDto {
            id: p.id.to_string(),
            name: p.name.clone(),
            roles: p.roles.iter().map(|r| r.code().to_string()).collect(),
            originator: p.originator.to_string(),
            signing_key_pem: p.signing_key_spki.as_deref().map(crypto::public_key_pem),
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePartyRequest {
    /// 2-40 characters: a-z, 0-9 and '-'.
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    /// EUI-64: 16 hex digits, plain or hyphenated.
    pub originator: String,
    /// ECDSA P-256 public key, PEM `PUBLIC KEY`.
    #[serde(default)]
    pub signing_key_pem: Option<String>,
}

impl From<CreatePartyRequest> for hub::parties::PartyInput {
    fn from(r: CreatePartyRequest) -> Self {
        hub::parties::PartyInput {
            id: r.id,
            name: r.name,
            roles: r.roles,
            originator: r.originator,
            signing_key_pem: r.signing_key_pem,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenDto {
    pub id: String,
    pub label: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub active: bool,
}

impl From<&TokenRecord> for TokenDto {
    fn from(t: &TokenRecord) -> TokenDto {
        TokenDto {
            id: t.id.clone(),
            label: t.label.clone(),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
            active: t.revoked_at.is_none(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    #[serde(default)]
    pub label: Option<String>,
}

/// A new token. The secret `token` is shown only in this response.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedTokenDto {
    pub id: String,
    pub party: String,
    pub label: String,
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedDto {
    pub id: String,
    /// False when the token was already revoked.
    pub revoked_now: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    /// RFC 3339 instant with offset, or a date (start of that day in London).
    pub effective_from: String,
    /// Import supplier (electricity) or gas supplier (gas).
    pub supplier: String,
    #[serde(default)]
    pub export_supplier: Option<String>,
    /// Gas only; required for gas.
    #[serde(default)]
    pub shipper: Option<String>,
    /// Distributor (electricity) or transporter (gas).
    pub network_operator: String,
    /// `traditional` or `smart-compliant`.
    pub meter_type: String,
    /// `credit` or `prepayment`; often unknown.
    #[serde(default)]
    pub payment_mode: Option<String>,
    /// Gas annual quantity, kWh a year.
    #[serde(default)]
    pub annual_quantity_kwh: Option<u64>,
}

impl From<RegistrationRequest> for RegistrationInput {
    fn from(r: RegistrationRequest) -> Self {
        RegistrationInput {
            effective_from: r.effective_from,
            supplier: r.supplier,
            export_supplier: r.export_supplier,
            shipper: r.shipper,
            network_operator: r.network_operator,
            meter_type: r.meter_type,
            payment_mode: r.payment_mode,
            annual_quantity_kwh: r.annual_quantity_kwh,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistrationDto {
    /// Recording sequence number: strictly increasing.
    pub seq: i64,
    pub effective_from: Timestamp,
    pub supplier: String,
    pub export_supplier: Option<String>,
    pub shipper: Option<String>,
    pub network_operator: String,
    pub meter_type: String,
    pub payment_mode: Option<String>,
    pub annual_quantity_kwh: Option<u64>,
    pub recorded_at: Timestamp,
    pub recorded_by: String,
}

impl From<&RegistrationVersion> for RegistrationDto {
    fn from(v: &RegistrationVersion) -> Self {
        RegistrationDto {
            seq: v.seq,
            effective_from: v.effective_from,
            supplier: v.data.supplier.to_string(),
            export_supplier: v.data.export_supplier.as_ref().map(ToString::to_string),
            shipper: v.data.shipper.as_ref().map(ToString::to_string),
            network_operator: v.data.network_operator.to_string(),
            meter_type: v.data.meter_type.to_string(),
            payment_mode: v.data.payment_mode.map(|p| p.to_string()),
            annual_quantity_kwh: v.data.annual_quantity_kwh,
            recorded_at: v.recorded_at,
            recorded_by: v.recorded_by.to_string(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrolmentDto {
    pub seq: i64,
    pub effective_from: Timestamp,
    pub enrolled: bool,
    pub recorded_at: Timestamp,
    pub recorded_by: String,
}

impl From<&EnrolmentVersion> for EnrolmentDto {
    fn from(v: &EnrolmentVersion) -> Self {
        EnrolmentDto {
            seq: v.seq,
            effective_from: v.effective_from,
            enrolled: v.enrolled,
            recorded_at: v.recorded_at,
            recorded_by: v.recorded_by.to_string(),
        }
    }
}

/// A metering point as at an instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeteringPointDto {
    pub mpxn: String,
    /// `electricity` or `gas`.
    pub fuel: String,
    /// The instant the answer holds at.
    pub at: Timestamp,
    /// If given, the answer is as the hub knew it then.
    pub known_at: Option<Timestamp>,
    /// The registration in force; absent before the first one takes effect.
    pub registration: Option<RegistrationDto>,
    /// Whether the smart metering system is enrolled in the hub at that instant.
    pub enrolled: bool,
    pub enrolment: Option<EnrolmentDto>,
    /// Gas only: annual quantity above 73,200 kWh.
    pub large_gas_supply_point: Option<bool>,
}

impl From<&RegistryView> for MeteringPointDto {
    fn from(v: &RegistryView) -> Self {
        MeteringPointDto {
            mpxn: v.mpxn.to_string(),
            fuel: v.fuel.to_string(),
            at: v.at,
            known_at: v.known_at,
            registration: v.registration.as_ref().map(RegistrationDto::from),
            enrolled: v.enrolled(),
            enrolment: v.enrolment.as_ref().map(EnrolmentDto::from),
            large_gas_supply_point: v.large_gas_supply_point,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryDto {
    pub mpxn: String,
    pub fuel: String,
    /// Every registration version in recording order; none is ever changed or removed.
    pub registrations: Vec<RegistrationDto>,
    pub enrolments: Vec<EnrolmentDto>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AsAtQuery {
    /// Instant (RFC 3339) or date; default now.
    pub at: Option<String>,
    /// Answer as the hub knew it at this instant; default: everything recorded.
    pub known_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClockDto {
    pub now: Timestamp,
    /// London wall-clock time.
    pub london: String,
    /// True when the hub runs on the simulated clock.
    pub simulated: bool,
}

/// Give exactly one of `to` and `by`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceClockRequest {
    /// Target instant (RFC 3339) or date.
    #[serde(default)]
    pub to: Option<String>,
    /// ISO 8601 duration in London calendar terms: `PT30M`, `P1D` (a calendar day, 23 or 25
    /// hours across a clock change), `P7D`.
    #[serde(default)]
    pub by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantDto {
    pub role: String,
    /// Relationship to the metering point needed at the instant: `any`, `registered supplier`, ...
    pub relation: String,
}

/// One row of the service catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceDto {
    /// DUIS SRV number or hub service name.
    pub code: String,
    pub name: String,
    /// `srv` (DUIS) or `hub`.
    pub kind: String,
    pub critical: bool,
    /// `none`, `hub`, `device` or `hub-and-device`.
    pub future_date: String,
    pub targets_mpxn: bool,
    pub grants: Vec<GrantDto>,
}

impl From<&Service> for ServiceDto {
    fn from(s: &Service) -> Self {
        ServiceDto {
            code: s.code.to_string(),
            name: s.name.to_string(),
            kind: match s.kind {
                ServiceKind::Srv => "srv",
                ServiceKind::Hub => "hub",
            }
            .to_string(),
            critical: s.critical == Critical::Yes,
            future_date: s.future_date.as_str().to_string(),
            targets_mpxn: s.targets_mpxn,
            grants: s
                .grants
                .iter()
                .map(|g| GrantDto { role: g.role.code().to_string(), relation: g.relation.describe().to_string() })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDto {
    pub status: String,
    pub now: Timestamp,
    pub simulated_clock: bool,
    pub version: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// `domestic` (profile class 1) or `economy-7` (class 2); absent = no electricity meter.
    #[serde(default)]
    pub electricity: Option<String>,
    /// Gas annual quantity, kWh a year; absent = no gas meter.
    #[serde(default)]
    pub gas_annual_quantity_kwh: Option<u64>,
    /// Fit an in-home display (default true).
    #[serde(default = "yes")]
    pub ihd: bool,
    /// Fit a prepayment interface (default false).
    #[serde(default)]
    pub ppmid: bool,
    /// Additional devices, e.g. a generation meter (0 to 3).
    #[serde(default)]
    pub additional: u8,
    /// The manufacturer party whose signed firmware the devices accept (default: none, and
    /// the devices refuse every firmware image).
    #[serde(default)]
    pub manufacturer: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceDto {
    pub eui: String,
    /// `comms-hub`, `electricity-meter`, `gas-meter`, `in-home-display`, `ppmid`, `additional`.
    pub kind: String,
    pub installed_at: Timestamp,
    pub commissioned_at: Option<Timestamp>,
    pub mpxn: Option<String>,
    /// On the comms hub's HAN device log (SRV 8.11).
    pub on_han: bool,
    /// The meters it is joined to (SRV 8.7): a display shows only these.
    pub joined_to: Vec<String>,
}

impl From<&hub::DeviceRecord> for DeviceDto {
    fn from(d: &hub::DeviceRecord) -> Self {
        DeviceDto {
            eui: d.eui.to_string(),
            kind: d.kind.clone(),
            installed_at: d.installed_at,
            commissioned_at: d.commissioned_at,
            mpxn: d.mpxn.map(|m| m.to_string()),
            on_han: d.on_han,
            joined_to: d.joined_to.iter().map(ToString::to_string).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PremisesDto {
    pub id: i64,
    pub comms_hub: String,
    pub installed_at: Timestamp,
    pub installed_by: String,
    pub devices: Vec<DeviceDto>,
}

impl PremisesDto {
    pub fn new(p: &hub::PremisesRecord, devices: &[hub::DeviceRecord]) -> PremisesDto {
        PremisesDto {
            id: p.id,
            comms_hub: p.comms_hub.to_string(),
            installed_at: p.installed_at,
            installed_by: p.installed_by.to_string(),
            devices: devices.iter().map(DeviceDto::from).collect(),
        }
    }
}

/// Give exactly one of `mpxn` and `device`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetDto {
    #[serde(default)]
    pub mpxn: Option<String>,
    /// Device EUI-64.
    #[serde(default)]
    pub device: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// SRV number, e.g. `4.1.1`.
    pub srv: String,
    pub target: TargetDto,
    /// The SRV's body (see the catalogue); `{}` when it takes none.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    /// Future-dated execution (RFC 3339 or date), where the catalogue allows it.
    #[serde(default)]
    pub execute_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseDto {
    /// Order in the party's response stream.
    pub seq: i64,
    pub at: Timestamp,
    /// `done`, `device-refused` or `failed`.
    pub outcome: String,
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub request_id: String,
}

impl From<&hub::ResponseRecord> for ResponseDto {
    fn from(r: &hub::ResponseRecord) -> Self {
        ResponseDto {
            seq: r.seq,
            at: r.at,
            outcome: r.outcome.as_str().into(),
            body: serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
            request_id: r.request_id.clone(),
        }
    }
}

/// A request and, once it has run, its response.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestDto {
    /// `originatorEUI:targetEUI:counter`.
    pub id: String,
    pub srv: String,
    pub party: String,
    pub target: String,
    pub mpxn: Option<String>,
    /// `awaiting-signature`, `queued`, `quarantined`, `completed`, `cancelled`, `deleted`.
    pub status: String,
    pub submitted_at: Timestamp,
    pub execute_at: Option<Timestamp>,
    pub status_at: Timestamp,
    pub note: Option<String>,
    /// The exact bytes the device will receive, base64: sign these for a critical SRV.
    pub precommand_base64: String,
    pub response: Option<ResponseDto>,
}

impl RequestDto {
    pub fn new(r: &hub::RequestRecord, resp: Option<&hub::ResponseRecord>) -> RequestDto {
        use base64::Engine as _;
        RequestDto {
            id: r.id.clone(),
            srv: r.srv.clone(),
            party: r.party.to_string(),
            target: r.target.to_string(),
            mpxn: r.mpxn.map(|m| m.to_string()),
            status: r.status.as_str().into(),
            submitted_at: r.submitted_at,
            execute_at: r.execute_at,
            status_at: r.status_at,
            note: r.note.clone(),
            precommand_base64: base64::engine::general_purpose::STANDARD.encode(&r.precommand),
            response: resp.map(ResponseDto::from),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureRequest {
    /// ECDSA P-256/SHA-256 signature (ASN.1 DER), base64, over the pre-command bytes.
    pub signature_base64: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait for the response (0 to 25).
    pub wait: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponsesQuery {
    /// Responses after this sequence number (default 0).
    pub after: Option<String>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<String>,
}

impl ResponsesQuery {
    /// The cursor and page size asked for: `after` defaults to 0, `limit` to `default` and
    /// must be 1 to `max`. A malformed one names its field.
    pub fn page(&self, default: usize, max: usize) -> Result<(i64, usize), crate::problem::Problem> {
        use crate::problem::Problem;
        let after = self
            .after
            .as_deref()
            .map(str::parse::<i64>)
            .transpose()
            .map_err(|_| Problem::bad_request("after", "a whole number"))?;
        let limit = parse_limit(self.limit.as_deref(), default, max)?;
        Ok((after.unwrap_or(0), limit))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditDto {
    pub seq: i64,
    pub at: Timestamp,
    pub party: String,
    pub event: String,
    pub detail: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRequest {
    /// The window, seconds (1 s to 31 days).
    pub window_seconds: i64,
    /// Requests allowed in any such window; beyond it they are quarantined.
    pub max_requests: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThresholdDto {
    /// `hub` (all parties together) or the party's id.
    pub scope: String,
    pub srv: String,
    pub window_seconds: i64,
    pub max_requests: i64,
    pub set_at: Timestamp,
}

impl From<&hub::ThresholdRecord> for ThresholdDto {
    fn from(t: &hub::ThresholdRecord) -> Self {
        ThresholdDto {
            scope: t.party.as_ref().map_or("hub".to_string(), ToString::to_string),
            srv: t.srv.clone(),
            window_seconds: t.window_secs,
            max_requests: t.max_requests,
            set_at: t.set_at,
        }
    }
}

/// A page size asked for: `default` when absent, else 1 to `max`; a bad one names `limit`.
pub fn parse_limit(text: Option<&str>, default: usize, max: usize) -> Result<usize, crate::problem::Problem> {
    match text {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| crate::problem::Problem::bad_request("limit", format!("1 to {max}"))),
    }
}
