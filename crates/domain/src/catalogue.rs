//! The service catalogue: one data table of every service the hub offers, the DUIS service
//! request variants (from `reference/duis-service-catalogue.md`) and the hub's own services.
//! It is the single source for authorisation ([`authorize`]), the API documentation and the
//! authorisation test matrix; no role check is written by hand anywhere else.

use std::fmt;

use crate::ids::Fuel;
use crate::party::{PartyId, Role, Roles};

/// Whether the device must verify the sender's signature over the exact command (R-SR-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Critical {
    No,
    Yes,
}

/// Who holds a future-dated request until it runs (DUIS "future date").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutureDate {
    /// Cannot be future-dated.
    No,
    /// The hub holds it and sends it at the execution time.
    Hub,
    /// The device holds it and executes it at the execution time.
    Device,
    /// Either (DUIS "Hub and Device").
    HubAndDevice,
}

impl FutureDate {
    pub fn as_str(self) -> &'static str {
        match self {
            FutureDate::No => "none",
            FutureDate::Hub => "hub",
            FutureDate::Device => "device",
            FutureDate::HubAndDevice => "hub-and-device",
        }
    }
}

/// DUIS service request variant or one of the hub's own services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    Srv,
    Hub,
}

/// The relationship a party must have to the target metering point, at the instant the
/// request is about, for a grant to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// No relationship needed (hub services without a metering point, operator services).
    None,
    /// The registered supplier of the metering point (import supplier for electricity, gas
    /// supplier for gas).
    RegisteredSupplier,
    /// The registered export supplier of an electricity metering point.
    RegisteredExportSupplier,
    /// The network operator (distributor or transporter) of the metering point.
    NetworkOperator,
    /// An other user holding the consumer's consent for the metering point.
    ConsentHolder,
    /// An agent appointed by the registered supplier.
    AppointedAgent,
    /// A supplier of the metering point before the registered one, for its own period
    /// (R-COS-4).
    FormerSupplier,
    /// A supplier of the metering point's fuel that is not its registered supplier (one
    /// that may ask to take the supply over).
    ProspectiveSupplier,
}

impl Relation {
    pub fn describe(self) -> &'static str {
        match self {
            Relation::None => "any",
            Relation::RegisteredSupplier => "registered supplier",
            Relation::RegisteredExportSupplier => "registered export supplier",
            Relation::NetworkOperator => "network operator",
            Relation::ConsentHolder => "other user with the consumer's consent",
            Relation::AppointedAgent => "agent appointed by the registered supplier",
            Relation::FormerSupplier => "former supplier (for its own period)",
            Relation::ProspectiveSupplier => "supplier other than the registered one",
        }
    }
}

/// One way to be allowed a service: holding `role` and standing in `relation` to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grant {
    pub role: Role,
    pub relation: Relation,
}

impl Grant {
    pub const fn any(role: Role) -> Grant {
        Grant { role, relation: Relation::None }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.relation {
            Relation::None => write!(f, "{}", self.role),
            r => write!(f, "{} as {}", self.role, r.describe()),
        }
    }
}

// The DUIS roles in the relationship DUIS gives them to a metering point.
const IS: Grant = Grant { role: Role::ImportSupplier, relation: Relation::RegisteredSupplier };
const ES: Grant = Grant { role: Role::ExportSupplier, relation: Relation::RegisteredExportSupplier };
const GS: Grant = Grant { role: Role::GasSupplier, relation: Relation::RegisteredSupplier };
const ED: Grant = Grant { role: Role::ElectricityDistributor, relation: Relation::NetworkOperator };
const GT: Grant = Grant { role: Role::GasTransporter, relation: Relation::NetworkOperator };
const OU: Grant = Grant { role: Role::OtherUser, relation: Relation::ConsentHolder };
const RSA: Grant = Grant { role: Role::RegisteredSupplierAgent, relation: Relation::AppointedAgent };
/// A meter asset provider appointed by the registered supplier (firmware, R-FLT-4).
const MAP: Grant = Grant { role: Role::MeterAssetProvider, relation: Relation::AppointedAgent };

/// Where this catalogue grants more than the DUIS catalogue, and why: (SRV, role, reason).
/// Tests hold the catalogue to the reference plus exactly these.
pub const EXTENSIONS: &[(&str, Role, &str)] = &[
    (
        "11.1",
        Role::MeterAssetProvider,
        "R-FLT-4: the supplier's appointed meter asset provider distributes firmware on its behalf",
    ),
    (
        "11.3",
        Role::MeterAssetProvider,
        "R-FLT-4: the appointed meter asset provider activates firmware, signed with its own key, which the \
         supplier put on the device with SRV 6.15.1",
    ),
];
const IS_FORMER: Grant = Grant { role: Role::ImportSupplier, relation: Relation::FormerSupplier };
const GS_FORMER: Grant = Grant { role: Role::GasSupplier, relation: Relation::FormerSupplier };
const IS_NEW: Grant = Grant { role: Role::ImportSupplier, relation: Relation::ProspectiveSupplier };
const GS_NEW: Grant = Grant { role: Role::GasSupplier, relation: Relation::ProspectiveSupplier };
const HUB: Grant = Grant::any(Role::HubOperator);
const REG: Grant = Grant::any(Role::RegistrationService);

const EVERY_ROLE: [Grant; 12] = [
    Grant::any(Role::ImportSupplier),
    Grant::any(Role::ExportSupplier),
    Grant::any(Role::GasSupplier),
    Grant::any(Role::ElectricityDistributor),
    Grant::any(Role::GasTransporter),
    Grant::any(Role::OtherUser),
    Grant::any(Role::RegisteredSupplierAgent),
    Grant::any(Role::PaymentServiceProvider),
    Grant::any(Role::MeterAssetProvider),
    Grant::any(Role::Manufacturer),
    Grant::any(Role::RegistrationService),
    Grant::any(Role::HubOperator),
];

/// One row of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// DUIS SRV number (`4.1.1`) or hub service name (`registry.read`).
    pub code: &'static str,
    pub name: &'static str,
    pub kind: ServiceKind,
    pub critical: Critical,
    pub future_date: FutureDate,
    /// Whether the service acts on one metering point (and so has relationships to check).
    pub targets_mpxn: bool,
    pub grants: &'static [Grant],
}

impl Service {
    pub fn roles(&self) -> Roles {
        Roles::from_iter(self.grants.iter().map(|g| g.role))
    }
}

const fn srv(
    code: &'static str,
    name: &'static str,
    critical: Critical,
    future_date: FutureDate,
    grants: &'static [Grant],
) -> Service {
    Service { code, name, kind: ServiceKind::Srv, critical, future_date, targets_mpxn: true, grants }
}

const fn hub(code: &'static str, name: &'static str, targets_mpxn: bool, grants: &'static [Grant]) -> Service {
    Service {
        code,
        name,
        kind: ServiceKind::Hub,
        critical: Critical::No,
        future_date: FutureDate::No,
        targets_mpxn,
        grants,
    }
}

use Critical::{No as NC, Yes as C};
use FutureDate as F;

/// Every service the hub knows. DUIS rows follow `reference/duis-service-catalogue.md`.
pub static CATALOGUE: &[Service] = &[
    srv("1.1.1", "Update Import Tariff (Primary Element)", C, F::Device, &[IS, GS]),
    srv("1.2.1", "Update Price (Primary Element)", C, F::Device, &[IS, GS]),
    srv("1.5", "Update Meter Balance", C, F::No, &[IS, GS]),
    srv("1.6", "Update Payment Mode", C, F::Device, &[IS, GS]),
    srv("2.1", "Update Prepay Configuration", C, F::Device, &[IS, GS]),
    srv("2.2", "Top Up Device", NC, F::No, &[IS, GS]),
    srv("2.3", "Update Debt", C, F::No, &[IS, GS]),
    srv("2.5", "Activate Emergency Credit", C, F::No, &[IS, GS]),
    srv("3.1", "Display Message", NC, F::Hub, &[IS, GS]),
    srv("3.2", "Restrict Access For Change Of Tenancy", NC, F::Hub, &[IS, GS]),
    srv("4.1.1", "Read Instantaneous Import Registers", NC, F::Hub, &[IS, GS, ED, GT]),
    srv("4.8.1", "Read Active Import Profile Data", NC, F::Hub, &[IS, GS, ED, GT, OU, IS_FORMER, GS_FORMER]),
    srv("4.17", "Retrieve Daily Consumption Log", NC, F::Hub, &[IS, GS, ED, GT, OU, IS_FORMER, GS_FORMER]),
    srv("5.1", "Create Schedule", NC, F::No, &[IS, ES, GS, ED, GT, OU]),
    srv("5.2", "Read Schedule", NC, F::No, &[IS, ES, GS, ED, GT, OU]),
    srv("5.3", "Delete Schedule", NC, F::No, &[IS, ES, GS, ED, GT, OU]),
    srv("6.2", "Read Device Configuration (6.2.x variants)", NC, F::No, &[IS, ES, GS, ED, GT, RSA]),
    srv("6.11", "Synchronise Clock", C, F::No, &[IS, GS]),
    srv("6.15.1", "Update Security Credentials (KRP)", C, F::Device, &[IS, GS, ED, GT]),
    srv("6.20.1", "Set Import MPxN", NC, F::Hub, &[IS, GS]),
    srv("6.22", "Configure Alert Behaviour", NC, F::No, &[IS, GS, ED]),
    srv("6.23", "Update Security Credentials (CoS)", NC, F::HubAndDevice, &[IS, GS]),
    srv("7.1", "Enable Supply", C, F::No, &[IS]),
    srv("7.2", "Disable Supply", C, F::No, &[IS, GS]),
    srv("7.3", "Arm Supply", C, F::No, &[IS, GS]),
    srv("7.4", "Read Supply Status", NC, F::No, &[IS, ES, GS, RSA, ED, GT]),
    srv("8.1.1", "Commission Device", C, F::No, &[IS, GS]),
    srv("8.3", "Decommission Device", NC, F::No, &[IS, GS]),
    srv("8.7.1", "Join Service (critical)", C, F::No, &[IS, GS]),
    srv("8.7.2", "Join Service (non-critical)", NC, F::No, &[IS, GS, OU]),
    srv("8.8.1", "Unjoin Service (critical)", C, F::No, &[IS, GS]),
    srv("8.8.2", "Unjoin Service (non-critical)", NC, F::No, &[IS, GS, OU]),
    srv("8.11", "Update HAN Device Log", NC, F::Hub, &[IS, GS, OU]),
    srv("11.1", "Update Firmware", NC, F::No, &[IS, GS, MAP]),
    srv("11.2", "Read Firmware Version", NC, F::Hub, &[IS, ES, GS, ED, GT, OU, RSA]),
    srv("11.3", "Activate Firmware", C, F::Device, &[IS, GS, MAP]),
    // The hub's own services.
    hub("catalogue.read", "Read the service catalogue", false, &EVERY_ROLE),
    hub("clock.read", "Read the hub clock", false, &EVERY_ROLE),
    hub("clock.advance", "Advance the simulated hub clock", false, &[HUB]),
    hub("party.read-own", "Read own party record", false, &EVERY_ROLE),
    hub("party.token-own", "Issue and revoke own API tokens", false, &EVERY_ROLE),
    hub("party.read", "List and read every party", false, &[HUB]),
    hub("party.manage", "Create parties, issue and revoke any party's tokens", false, &[HUB]),
    hub("request.read-own", "Read own service requests, their responses and audit trail", false, &EVERY_ROLE),
    hub("request.read", "Read any party's service requests and audit trails", false, &[HUB]),
    hub(
        "alert.read-own",
        "Read, stream and acknowledge the alerts addressed to you, in order; set your webhook",
        false,
        &EVERY_ROLE,
    ),
    hub("alert.dispatch-manage", "Read and edit the alert dispatch table (who gets which alert)", false, &[HUB]),
    hub(
        "anomaly.configure-own",
        "Set own anomaly-detection thresholds per SRV and window; see the hub-wide ones",
        false,
        &EVERY_ROLE,
    ),
    hub("anomaly.configure-hub", "Set hub-wide anomaly-detection thresholds", false, &[HUB]),
    hub(
        "premises.install",
        "Fit devices at a premises (the simulation's installer visit); the devices trust the installer",
        false,
        &[Grant::any(Role::ImportSupplier), Grant::any(Role::GasSupplier)],
    ),
    hub(
        "premises.read",
        "Read a premises' devices as the inventory knows them",
        false,
        &[Grant::any(Role::ImportSupplier), Grant::any(Role::GasSupplier), HUB],
    ),
    hub(
        "consent.record-own",
        "Record the consumer's consent you hold for a metering point (other users); end it",
        true,
        &[Grant::any(Role::OtherUser)],
    ),
    hub(
        "appointment.manage",
        "Appoint an agent (RSA or MAP) for a metering point you supply; end the appointment",
        true,
        &[IS, ES, GS],
    ),
    hub(
        "grants.read",
        "Read a metering point's consents or appointments: your own, or all as its registered supplier",
        true,
        &[
            Grant::any(Role::ImportSupplier),
            Grant::any(Role::ExportSupplier),
            Grant::any(Role::GasSupplier),
            Grant::any(Role::OtherUser),
            Grant::any(Role::RegisteredSupplierAgent),
            Grant::any(Role::MeterAssetProvider),
            HUB,
        ],
    ),
    hub(
        "payment.top-up",
        "Look up a customer identifier; take a top-up for it and follow it to the meter (R-PAY-1..3)",
        false,
        &[Grant::any(Role::PaymentServiceProvider)],
    ),
    hub(
        "payment.endpoint-own",
        "Register the HTTP endpoint that confirms top-ups for your metering points (R-PAY-2)",
        false,
        &[Grant::any(Role::ImportSupplier), Grant::any(Role::GasSupplier)],
    ),
    hub(
        "simulation.consumer",
        "Simulation: see a home's in-home display and act as its consumer at the meter's keypad",
        false,
        &[HUB],
    ),
    hub("grants.manage-any", "Read and end any consent or appointment", true, &[HUB]),
    hub(
        "reads.batch",
        "Read own reads (4.1.1, 4.8.1, 4.17 responses) collected on a day, as one batch",
        false,
        &[
            Grant::any(Role::ImportSupplier),
            Grant::any(Role::ExportSupplier),
            Grant::any(Role::GasSupplier),
            Grant::any(Role::ElectricityDistributor),
            Grant::any(Role::GasTransporter),
            Grant::any(Role::OtherUser),
        ],
    ),
    hub(
        "reads.forward",
        "Forward a read to the metering point's network operator (supplier hub principle)",
        false,
        &[Grant::any(Role::ImportSupplier), Grant::any(Role::ExportSupplier), Grant::any(Role::GasSupplier)],
    ),
    hub(
        "reads.forwarded",
        "Read the reads suppliers forwarded to it",
        false,
        &[Grant::any(Role::ElectricityDistributor), Grant::any(Role::GasTransporter)],
    ),
    hub(
        "switch.request",
        "Ask to take over a metering point's supply (change of supplier); cancel it; accept a gas offer",
        true,
        &[IS_NEW, GS_NEW],
    ),
    hub(
        "switch.object",
        "Object to a switch away from you in its objection window, or withdraw the objection",
        false,
        &[Grant::any(Role::ImportSupplier), Grant::any(Role::GasSupplier)],
    ),
    hub("switch.register", "Registration system: offer and confirm gas switches (activity 1.20)", false, &[REG]),
    hub(
        "switch.read",
        "Read the switches you are part of, their steps and definitive readings (every one: REG, HUB)",
        false,
        &[Grant::any(Role::ImportSupplier), Grant::any(Role::GasSupplier), REG, HUB],
    ),
    hub("switch.read-any", "Read every switch", false, &[REG, HUB]),
    hub(
        "tenancy.notify",
        "Notify a change of tenancy at a metering point you supply: ends other users' consents, sets 3.2",
        true,
        &[IS, GS],
    ),
    hub(
        "firmware.upload",
        "Upload a firmware image with its manifest, signed with your (the manufacturer's) key",
        false,
        &[Grant::any(Role::Manufacturer)],
    ),
    hub(
        "firmware.read",
        "List firmware images and their manifests",
        false,
        &[
            Grant::any(Role::Manufacturer),
            Grant::any(Role::ImportSupplier),
            Grant::any(Role::GasSupplier),
            Grant::any(Role::MeterAssetProvider),
            HUB,
        ],
    ),
    hub(
        "firmware.distribute",
        "Run a firmware campaign: SRV 11.1 to your devices in waves (each device checked as for 11.1)",
        false,
        &[Grant::any(Role::ImportSupplier), Grant::any(Role::GasSupplier), Grant::any(Role::MeterAssetProvider), HUB],
    ),
    hub("notice.read-own", "Read the hub's notices to you (consent ended, switch steps), in order", false, &EVERY_ROLE),
    hub("registry.write", "Create metering points and record registrations", true, &[REG]),
    hub("registry.history", "Read every recorded registration version of a metering point", true, &[REG, HUB]),
    hub(
        "registry.read",
        "Read a metering point's registration as at an instant, and its history",
        true,
        &[REG, HUB, IS, ES, GS, ED, GT],
    ),
];

/// Look a service up by its code.
pub fn service(code: &str) -> Option<&'static Service> {
    CATALOGUE.iter().find(|s| s.code == code)
}

/// What is true of the target metering point at the instant a request is about: the input to
/// the relationship half of authorisation. Built by the hub from the registry.
#[derive(Debug, Clone, Copy)]
pub struct TargetFacts<'a> {
    pub mpxn: &'a str,
    pub fuel: Fuel,
    /// The instant the facts hold at, for messages.
    pub at: jiff::Timestamp,
    pub registered_supplier: Option<&'a PartyId>,
    pub export_supplier: Option<&'a PartyId>,
    pub network_operator: Option<&'a PartyId>,
    /// Other users holding consumer consent at the instant.
    pub consent_holders: &'a [PartyId],
    /// Agents appointed by the registered supplier at the instant.
    pub appointed_agents: &'a [PartyId],
    /// Suppliers whose period ended before the instant.
    pub former_suppliers: &'a [PartyId],
}

impl TargetFacts<'_> {
    fn satisfies(&self, party: &PartyId, grant: &Grant) -> bool {
        if grant.role.fuel().is_some_and(|f| f != self.fuel) {
            return false;
        }
        match grant.relation {
            Relation::None => true,
            Relation::RegisteredSupplier => self.registered_supplier == Some(party),
            Relation::RegisteredExportSupplier => self.export_supplier == Some(party),
            Relation::NetworkOperator => self.network_operator == Some(party),
            Relation::ConsentHolder => self.consent_holders.contains(party),
            Relation::AppointedAgent => self.appointed_agents.contains(party),
            Relation::FormerSupplier => self.former_suppliers.contains(party),
            Relation::ProspectiveSupplier => self.registered_supplier.is_some_and(|s| s != party),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The party holds none of the roles the service allows.
    #[error("service {service} is for roles [{allowed}]; party {party} holds [{held}]")]
    Role { service: &'static str, party: PartyId, held: String, allowed: String },
    /// The party holds a role the service allows, but not the relationship to the target.
    #[error("service {service}: party {party} is not {needed} of {mpxn} at {at} (it holds role(s) {held})")]
    Relationship { service: &'static str, party: PartyId, held: String, needed: String, mpxn: String, at: String },
}

impl Refusal {
    /// What is missing, machine-readable: `role` or `relationship`.
    pub fn missing(&self) -> &'static str {
        match self {
            Refusal::Role { .. } => "role",
            Refusal::Relationship { .. } => "relationship",
        }
    }
}

/// The role half of [`authorize`]: does the party hold any role the service allows?
#[allow(clippy::result_large_err, reason = "a refusal is the cold path and carries its whole explanation")]
pub fn check_role(service: &'static Service, party: &PartyId, roles: Roles) -> Result<(), Refusal> {
    if service.grants.iter().any(|g| roles.contains(g.role)) {
        Ok(())
    } else {
        Err(Refusal::Role {
            service: service.code,
            party: party.clone(),
            held: roles.codes(),
            allowed: service.roles().codes(),
        })
    }
}

/// Decide whether `party` holding `roles` may use `service` on `target`. `target` is `None`
/// for services that do not act on a metering point. Returns the grant that applies.
#[allow(clippy::result_large_err, reason = "a refusal is the cold path and carries its whole explanation")]
pub fn authorize(
    service: &'static Service,
    party: &PartyId,
    roles: Roles,
    target: Option<&TargetFacts<'_>>,
) -> Result<Grant, Refusal> {
    check_role(service, party, roles)?;
    let candidates: Vec<&Grant> = service.grants.iter().filter(|g| roles.contains(g.role)).collect();
    if let Some(g) = candidates.iter().find(|g| g.relation == Relation::None) {
        return Ok(**g);
    }
    let Some(target) = target else {
        // A relationship grant with no target cannot be satisfied.
        return Err(Refusal::Relationship {
            service: service.code,
            party: party.clone(),
            held: roles.codes(),
            needed: describe_needed(&candidates),
            mpxn: "(no metering point)".to_string(),
            at: "-".to_string(),
        });
    };
    if let Some(g) = candidates.iter().find(|g| target.satisfies(party, g)) {
        return Ok(**g);
    }
    // Explain with the grants that could apply to this fuel, if any do.
    let same_fuel: Vec<&Grant> =
        candidates.iter().copied().filter(|g| g.role.fuel().is_none_or(|f| f == target.fuel)).collect();
    let explain = if same_fuel.is_empty() { &candidates } else { &same_fuel };
    Err(Refusal::Relationship {
        service: service.code,
        party: party.clone(),
        held: roles.codes(),
        needed: describe_needed(explain),
        mpxn: target.mpxn.to_string(),
        at: target.at.to_string(),
    })
}

fn describe_needed(candidates: &[&Grant]) -> String {
    let mut out: Vec<String> = Vec::new();
    for g in candidates {
        let fuel = g.role.fuel().map(|f| format!(" ({f})")).unwrap_or_default();
        let d = format!("the {}{fuel}", g.relation.describe());
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out.join(" or ")
}
