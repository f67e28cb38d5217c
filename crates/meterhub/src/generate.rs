//! `meterhub fleet generate`: a whole simulated fleet in bulk — parties, registrations,
//! premises and devices, commissioned and enrolled — deterministic from the seed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use device::system::kind_text as kind_name;
use domain::{Mpxn, Party, PartyId, crypto};
use hub::Hub;
use hub::parties::PartyInput;
use hub::registry::RegistrationInput;
use hub::transport::InstallOrder;
use hub::{EnrolledHome, NewPremises};
use indicatif::{ProgressBar, ProgressStyle};

use crate::bench::{mpan_for, mprn_for};

/// Homes generated per transaction.
const CHUNK_HOMES: usize = 2000;

#[derive(clap::Args, Clone)]
pub struct GenerateArgs {
    /// Homes to generate (each with an electricity meter, comms hub and display; some with gas).
    #[arg(long)]
    pub meters: u64,
    /// Share of homes that also have gas, in percent.
    #[arg(long, default_value_t = 30)]
    pub gas_percent: u8,
    /// Simulated suppliers the homes are shared between.
    #[arg(long, default_value_t = 5)]
    pub suppliers: u8,
}

/// What a generation made.
#[derive(Debug, Default, Clone, Copy)]
pub struct Generated {
    pub homes: u64,
    pub electricity: u64,
    pub gas: u64,
    pub seconds: f64,
}

/// The simulated suppliers' private keys are written here (the hub keeps only public keys).
pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("simulated-keys")
}

/// Make sure the simulated market exists: suppliers (with keys), distributors 10-23, gas
/// transporters, and a registration service. Returns the suppliers.
async fn ensure_parties(hub: &Hub, data_dir: &Path, suppliers: u8) -> anyhow::Result<Vec<Party>> {
    let existing = hub.parties_unchecked().await?;
    let has = |id: &str| existing.iter().any(|p| p.id.as_str() == id);
    let mut eui = 0x0200_0000_0000_0000u64;
    let mut add = async |id: String, roles: &[&str], key: bool| -> anyhow::Result<()> {
        eui += 1;
        if has(&id) {
            return Ok(());
        }
        let signing_key_pem = if key {
            let dir = keys_dir(data_dir);
            std::fs::create_dir_all(&dir)?;
            let k = crypto::SigningKey::generate(&crypto::SystemRandom::new())?;
            std::fs::write(dir.join(format!("{id}.pem")), k.pkcs8_pem())?;
            Some(crypto::public_key_pem(&k.public_key_spki()))
        } else {
            None
        };
        let input = PartyInput {
            id: id.clone(),
            name: format!("Simulated {id}"),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            originator: format!("{eui:016X}"),
            signing_key_pem,
        };
        hub.create_party_unchecked(&input).await.with_context(|| format!("party {id}"))?;
        Ok(())
    };
    for i in 1..=suppliers {
        add(format!("sim-supplier-{i}"), &["IS", "GS"], true).await?;
    }
    for d in 10..=23 {
        add(format!("dno-{d}"), &["ED"], false).await?;
    }
    for g in 1..=4 {
        add(format!("gdn-{g}"), &["GT"], false).await?;
    }
    add("sim-registration".into(), &["REG"], false).await?;
    let parties = hub.parties_unchecked().await?;
    let out: Vec<Party> = (1..=suppliers)
        .filter_map(|i| parties.iter().find(|p| p.id.as_str() == format!("sim-supplier-{i}")).cloned())
        .collect();
    anyhow::ensure!(out.iter().all(|p| p.signing_key_spki.is_some()), "a simulated supplier has no signing key");
    Ok(out)
}

/// Generate `args.meters` homes.
pub async fn generate(
    hub: &Hub,
    fleet: &fleet::Fleet,
    data_dir: &Path,
    args: &GenerateArgs,
    progress: bool,
) -> anyhow::Result<Generated> {
    anyhow::ensure!(args.suppliers >= 1, "--suppliers must be at least 1");
    anyhow::ensure!(args.gas_percent <= 100, "--gas-percent is 0 to 100");
    let started = Instant::now();
    let suppliers = ensure_parties(hub, data_dir, args.suppliers).await?;
    // Meters trust their supplier's signing and prepayment keys from installation: one
    // anchor per supplier, its keys shared by every home it installs.
    let mut anchors = std::collections::HashMap::new();
    for s in &suppliers {
        let anchor = device::TrustAnchor {
            originator: s.originator,
            spki: s.signing_key_spki.clone().expect("checked").into(),
            prepayment: Some(hub.prepayment_point(&s.id).await?.into()),
        };
        anchors.insert(s.id.clone(), anchor);
    }
    let operator: PartyId = hub
        .parties_unchecked()
        .await?
        .into_iter()
        .find(|p| p.roles.contains(domain::Role::HubOperator))
        .map(|p| p.id)
        .context("no hub operator")?;
    let since = domain::time::london_date(hub.now() - jiff::SignedDuration::from_hours(24 * 365)).to_string();
    let bar = if progress { ProgressBar::new(args.meters) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} generating homes [{bar:40}] {pos}/{len} {per_sec} ({eta} left)")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut done = Generated::default();
    let mut remaining = args.meters;
    while remaining > 0 {
        let n = remaining.min(CHUNK_HOMES as u64) as usize;
        // Home numbers continue from the fleet's system ids, so MPxNs never repeat across runs.
        let first = fleet.next_system_id().await?;
        let mut import = hub.begin_import(operator.clone()).await?;
        let mut homes = Vec::with_capacity(n);
        for k in 0..n {
            let home = first as u64 + k as u64;
            let supplier = &suppliers[(home % suppliers.len() as u64) as usize];
            let dist = 10 + (home % 14) as u8;
            let mpan = mpan_for(dist, 9_000_000_000 + home);
            import
                .push(
                    &mpan,
                    &RegistrationInput {
                        effective_from: since.clone(),
                        supplier: supplier.id.to_string(),
                        network_operator: format!("dno-{dist}"),
                        meter_type: "smart-compliant".into(),
                        ..Default::default()
                    },
                )
                .await?;
            // 61 is coprime with 100: every 100 consecutive homes hold exactly gas_percent gas meters.
            let gas = (home * 61) % 100 < u64::from(args.gas_percent);
            let mprn = gas.then(|| mprn_for(40_000_000 + home));
            if let Some(m) = &mprn {
                import
                    .push(
                        m,
                        &RegistrationInput {
                            effective_from: since.clone(),
                            supplier: supplier.id.to_string(),
                            shipper: Some(supplier.id.to_string()),
                            network_operator: format!("gdn-{}", 1 + home % 4),
                            meter_type: "smart-compliant".into(),
                            annual_quantity_kwh: Some(8_000 + (home * 7919) % 14_000),
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            homes.push((supplier, mpan, mprn));
        }
        import.commit().await?;
        let cos_key: std::sync::Arc<[u8]> = hub.cos_public_key().into();
        let orders: Vec<fleet::BulkHome> = homes
            .iter()
            .map(|(supplier, mpan, mprn)| fleet::BulkHome {
                order: InstallOrder {
                    electricity: Some(device::LoadShape::Domestic),
                    gas_annual_quantity_kwh: mprn.as_ref().map(|_| 12_000),
                    ihd: true,
                    ppmid: false,
                    additional: 0,
                    supplier: anchors[&supplier.id].clone(),
                    cos_key: Some(cos_key.clone()),
                    manufacturer: None,
                },
                electricity_mpxn: Some(Mpxn::parse(mpan).expect("generated MPANs are valid")),
                gas_mpxn: mprn.as_ref().map(|m| Mpxn::parse(m).expect("generated MPRNs are valid")),
            })
            .collect();
        let installed = fleet.install_commissioned(orders).await?;
        let now = hub.now();
        let enrolled: Vec<EnrolledHome> = installed
            .iter()
            .zip(&homes)
            .map(|(inst, (supplier, mpan, mprn))| {
                let mut links = Vec::new();
                for (eui, kind) in &inst.devices {
                    match kind {
                        device::DeviceKind::ElectricityMeter => links.push((*eui, Mpxn::parse(mpan).expect("valid"))),
                        device::DeviceKind::GasMeter => links.push((
                            *eui,
                            Mpxn::parse(mprn.as_deref().expect("a gas meter has an MPRN")).expect("valid"),
                        )),
                        _ => {}
                    }
                }
                EnrolledHome {
                    premises: NewPremises {
                        comms_hub: inst.comms_hub,
                        installed_at: now,
                        installed_by: supplier.id.clone(),
                        devices: inst.devices.iter().map(|(e, k)| (*e, kind_name(*k).to_string())).collect(),
                    },
                    links,
                }
            })
            .collect();
        hub.enrol_homes_unchecked(enrolled).await?;
        done.homes += n as u64;
        done.electricity += n as u64;
        done.gas += homes.iter().filter(|h| h.2.is_some()).count() as u64;
        remaining -= n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}
