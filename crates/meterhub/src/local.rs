//! Commands that work on a data directory directly, as the local operator: no token needed
//! (whoever can read the data directory owns the hub). Safe while `serve` runs on the same
//! directory: SQLite serialises the writers.

use std::sync::Arc;

use anyhow::{Context, bail};
use domain::ids::MprnCheck;
use domain::{FullMpan, IdRules, Mpan, Mprn, PartyId, crypto};
use hub::parties::PartyInput;
use hub::{Hub, HubConfig, ManualClock, SystemClock};
use store::sqlite::{SqliteOptions, SqliteStore};

use crate::config::{ClockKind, GlobalArgs, ServeArgs, Settings};

pub struct Local {
    pub hub: Hub,
    store: Arc<SqliteStore>,
}

/// Which clock a command runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ClockFrom {
    /// The settings (`serve`, `demo`, `bench`).
    Settings,
    /// Whatever the data directory runs on: its saved simulated time, else the system clock.
    /// Local commands use this, so they never start or move a simulation.
    DataDir,
}

/// Open the store and the hub; on first start, create the hub operator and print its token
/// once.
pub async fn open_hub(settings: &Settings, clock: ClockFrom) -> anyhow::Result<(Hub, Arc<SqliteStore>)> {
    let (hub, store, first) = open_hub_quiet(settings, clock).await?;
    if let Some(t) = first {
        eprintln!("First start: created party `{}` (role HUB).", t.party);
        eprintln!("Its API token, shown only now (keep it; `meterhub party token {}` issues another):", t.party);
        println!("operator token: {}", t.token);
    }
    Ok((hub, store))
}

/// As [`open_hub`], handing the first-start operator token to the caller.
pub async fn open_hub_quiet(
    settings: &Settings,
    clock_from: ClockFrom,
) -> anyhow::Result<(Hub, Arc<SqliteStore>, Option<hub::IssuedToken>)> {
    let store = Arc::new(
        SqliteStore::open(
            &settings.data_dir,
            SqliteOptions {
                durability: settings.durability,
                planning_entries: settings.planning_cache,
                ..Default::default()
            },
        )
        .with_context(|| format!("cannot open the data directory {}", settings.data_dir.display()))?,
    );
    let saved = hub::saved_simulated_time(store.as_ref()).await?;
    let clock: Arc<dyn hub::Clock> = match (clock_from, settings.clock, saved) {
        (ClockFrom::DataDir, _, Some(saved)) => Arc::new(ManualClock::new(saved)),
        (ClockFrom::DataDir, _, None) | (ClockFrom::Settings, ClockKind::System, _) => Arc::new(SystemClock),
        (ClockFrom::Settings, ClockKind::Simulated, _) => {
            let start = settings
                .clock_start
                .unwrap_or_else(|| jiff::Timestamp::now().round(jiff::Unit::Second).expect("rounding to seconds"));
            Arc::new(ManualClock::new(start))
        }
    };
    let hub = Hub::open(
        store.clone(),
        clock,
        HubConfig { id_rules: settings.id_rules, ..Default::default() }.admitting(settings.admitted_max),
    )
    .await?;
    let first = hub.bootstrap_operator().await?;
    Ok((hub, store, first))
}

/// The simulated fleet attached to a hub.
pub struct FleetHandle {
    pub fleet: Arc<fleet::Fleet>,
    store: Arc<store::sqlite::SqliteFleetStore>,
}

impl FleetHandle {
    pub async fn close(&self) {
        self.store.close().await;
    }
}

/// Open the fleet's own database in the data directory and attach the fleet to the hub as
/// its device transport. A data directory keeps the seed it first ran with.
pub async fn attach_fleet(hub: &Hub, settings: &Settings) -> anyhow::Result<FleetHandle> {
    use store::FleetStore;
    let store = Arc::new(
        store::sqlite::SqliteFleetStore::open(
            &settings.data_dir,
            SqliteOptions { durability: settings.durability, ..Default::default() },
        )
        .context("cannot open the fleet's database")?,
    );
    let seed = match store.fleet_state("seed").await? {
        Some(s) => s.parse().context("the fleet's stored seed is unreadable")?,
        None => {
            store.set_fleet_state("seed", settings.seed.to_string()).await?;
            settings.seed
        }
    };
    let fleet = Arc::new(fleet::Fleet::new(store.clone(), hub.clock(), seed, fleet::CACHE_SYSTEMS_DEFAULT));
    hub.attach_transport(fleet.clone());
    Ok(FleetHandle { fleet, store })
}

impl Local {
    pub async fn open(g: &GlobalArgs) -> anyhow::Result<Local> {
        let settings = Settings::resolve(g, &ServeArgs::default())?;
        let (hub, store) = open_hub(&settings, ClockFrom::DataDir).await?;
        Ok(Local { hub, store })
    }

    pub async fn close(&self) {
        self.store.close().await;
    }

    pub async fn add_party(&self, a: crate::PartyAddArgs) -> anyhow::Result<()> {
        let mut key_out = None;
        let signing_key_pem = match (&a.public_key, &a.generate_key) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path).with_context(|| format!("cannot read public key {}", path.display()))?,
            ),
            (None, Some(path)) => {
                if path.exists() {
                    bail!("{} exists; refusing to overwrite a private key", path.display());
                }
                let key = crypto::SigningKey::generate(&crypto::SystemRandom::new())?;
                key_out = Some((path.clone(), key.pkcs8_pem()));
                Some(crypto::public_key_pem(&key.public_key_spki()))
            }
            (None, None) => None,
        };
        let input = PartyInput { id: a.id, name: a.name, roles: a.roles, originator: a.originator, signing_key_pem };
        // Check everything before writing the key file, so a refused party leaves nothing.
        input.parse(self.hub.now())?;
        if let Some((path, pem)) = &key_out {
            write_private(path, pem)?;
        }
        let party = match self.hub.create_party_unchecked(&input).await {
            Ok(p) => p,
            Err(e) => {
                if let Some((path, _)) = &key_out {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e.into());
            }
        };
        println!(
            "added party {} ({}) roles {} originator {}",
            party.id,
            party.name,
            party.roles.codes(),
            party.originator
        );
        if let Some((path, _)) = key_out {
            println!("private signing key written to {}", path.display());
        }
        if a.token {
            self.issue_token(party.id.as_str(), "cli").await?;
        }
        Ok(())
    }

    pub async fn list_parties(&self) -> anyhow::Result<()> {
        let parties = self.hub.parties_unchecked().await?;
        println!("{:<24} {:<16} {:<24} {:<7} name", "id", "roles", "originator", "key");
        for p in parties {
            let key = if p.signing_key_spki.is_some() { "P-256" } else { "-" };
            println!("{:<24} {:<16} {:<24} {:<7} {}", p.id, p.roles.codes(), p.originator, key, p.name);
        }
        Ok(())
    }

    pub async fn issue_token(&self, party: &str, label: &str) -> anyhow::Result<()> {
        let party = PartyId::parse(party)?;
        let t = self.hub.issue_token_unchecked(&party, label).await?;
        eprintln!("token {} for {} (label {:?}); the secret below is shown only now:", t.id, t.party, t.label);
        println!("{}", t.token);
        Ok(())
    }

    pub async fn list_tokens(&self, party: &str) -> anyhow::Result<()> {
        let party = PartyId::parse(party)?;
        println!("{:<14} {:<8} {:<28} label", "id", "status", "created");
        for t in self.hub.tokens_unchecked(&party).await? {
            let status = if t.revoked_at.is_some() { "revoked" } else { "active" };
            println!("{:<14} {:<8} {:<28} {}", t.id, status, t.created_at.to_string(), t.label);
        }
        Ok(())
    }

    pub async fn revoke_token(&self, party: &str, token_id: &str) -> anyhow::Result<()> {
        let party = PartyId::parse(party)?;
        if self.hub.revoke_token_unchecked(&party, token_id).await? {
            println!("revoked token {token_id} of {party}");
        } else {
            println!("token {token_id} of {party} was already revoked");
        }
        Ok(())
    }

    pub async fn show(&self, mpxn: &str, at: Option<&str>) -> anyhow::Result<()> {
        let at = at.map(domain::time::parse_instant).transpose().map_err(|e| anyhow::anyhow!("--at: {e}"))?;
        let operator = self
            .hub
            .parties_unchecked()
            .await?
            .into_iter()
            .find(|p| p.roles.contains(domain::Role::HubOperator))
            .context("no hub operator")?;
        let caller = hub::Caller { party: operator, token_id: "local".into() };
        let v = self.hub.registry_view(&caller, mpxn, at, None).await?;
        println!("{} ({}) as at {}", v.mpxn, v.fuel, v.at);
        match &v.registration {
            None => println!("  no registration in force"),
            Some(r) => {
                println!("  supplier          {}", r.data.supplier);
                if let Some(s) = &r.data.shipper {
                    println!("  shipper           {s}");
                }
                if let Some(s) = &r.data.export_supplier {
                    println!("  export supplier   {s}");
                }
                println!("  network operator  {}", r.data.network_operator);
                println!("  meter type        {}", r.data.meter_type);
                println!("  payment mode      {}", r.data.payment_mode.map_or("unknown", |p| p.as_str()));
                if let Some(aq) = r.data.annual_quantity_kwh {
                    println!("  annual quantity   {aq} kWh");
                }
                println!("  effective from    {} (recorded {} by {})", r.effective_from, r.recorded_at, r.recorded_by);
            }
        }
        println!("  enrolled          {}", v.enrolled());
        Ok(())
    }
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem).with_context(|| format!("cannot write {}", path.display()))
}

/// `meterhub mpxn check`: valid/invalid and the reason; exit 0 when valid, 1 when not.
pub fn mpxn_check(g: &GlobalArgs, id: &str) -> std::process::ExitCode {
    let rules = if g.relax_mpan_check_digit { IdRules::RELAXED } else { IdRules::STRICT };
    let len = id.chars().count();
    let result: Result<Vec<String>, String> = match len {
        13 => Mpan::parse_with(id, rules).map_err(|e| e.to_string()).map(|m| {
            let mut lines = vec![format!("valid MPAN core {m} (distributor {:02})", m.distributor_id())];
            if !m.check_digit_valid() {
                lines.push("note: the check digit is wrong; accepted because the rule is relaxed".into());
            }
            lines
        }),
        21 => FullMpan::parse_with(id, rules).map_err(|e| e.to_string()).map(|f| {
            vec![format!(
                "valid full MPAN: profile class {:02}, meter time-switch code {:03}, line loss factor class {:03}, core {} (distributor {:02})",
                f.top_line.profile_class,
                f.top_line.meter_timeswitch_code,
                f.top_line.line_loss_factor_class,
                f.core,
                f.core.distributor_id()
            )]
        }),
        6..=10 => Mprn::parse(id).map_err(|e| e.to_string()).map(|m| {
            let advisory = match m.advisory_check() {
                MprnCheck::Pass => "the advisory check digits pass".to_string(),
                MprnCheck::Fail { expected, found } => format!(
                    "the advisory check digits fail (they are {found:02}, the published rule gives {expected:02}); \
                     reported, not enforced"
                ),
            };
            vec![format!("valid MPRN {m}"), format!("note: {advisory}")]
        }),
        _ => domain::Mpxn::parse_with(id, rules).map(|_| Vec::new()).map_err(|e| e.to_string()),
    };
    match result {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("{reason}");
            std::process::ExitCode::FAILURE
        }
    }
}
