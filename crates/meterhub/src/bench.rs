//! `meterhub bench ...`: measurements that print figures (never timed assertions).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use hub::Hub;
use hub::parties::PartyInput;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{ClockKind, GlobalArgs, Settings};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Generate N metering points as CSV and time `registry import` of them into a fresh data
    /// directory; prints rows per second, peak memory and a raw SQLite baseline from the
    /// same run.
    Import {
        /// Rows to generate and import.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Seed for the generated data (same seed, same file).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Keep the data directory here instead of a temporary one.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

pub async fn run(g: &GlobalArgs, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Import { rows, seed, keep } => bench_import(g, rows, seed, keep).await,
    }
}

/// Parties every generated file refers to: 5 electricity suppliers, 3 gas suppliers (also
/// shippers), the 14 distributors 10-23, 4 gas transporters.
pub fn sample_parties() -> Vec<PartyInput> {
    let mut out = Vec::new();
    let mut eui = 0x0100_0000_0000_0000u64;
    let mut add = |id: String, name: String, roles: &[&str]| {
        eui += 1;
        out.push(PartyInput {
            id,
            name,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            originator: format!("{eui:016X}"),
            signing_key_pem: None,
        });
    };
    for i in 1..=5 {
        add(format!("elec-supplier-{i}"), format!("Electricity Supplier {i}"), &["IS"]);
    }
    for i in 1..=3 {
        add(format!("gas-supplier-{i}"), format!("Gas Supplier {i}"), &["GS"]);
    }
    for d in 10..=23 {
        add(format!("dno-{d}"), format!("Distribution network {d}"), &["ED"]);
    }
    for i in 1..=4 {
        add(format!("gdn-{i}"), format!("Gas distribution network {i}"), &["GT"]);
    }
    out
}

/// A valid MPAN core with distributor `dist` and serial `n`.
pub fn mpan_for(dist: u8, n: u64) -> String {
    let first12 = format!("{dist:02}{:010}", n % 10_000_000_000);
    let d: [u8; 12] = first12.bytes().map(|b| b - b'0').collect::<Vec<_>>().try_into().expect("12 digits");
    format!("{first12}{}", domain::ids::mpan_check_digit(&d))
}

/// A 10-digit MPRN with serial `n` whose advisory check digits pass.
pub fn mprn_for(n: u64) -> String {
    let body = format!("{:08}", 10_000_000 + n % 90_000_000);
    let sum: u32 = body.bytes().enumerate().map(|(i, b)| u32::from(b - b'0') * (8 - i as u32)).sum();
    format!("{body}{:02}", sum % 11)
}

/// Write `rows` registrations as import CSV: 80% electricity, 20% gas, deterministic in `seed`.
pub fn generate_csv(path: &Path, rows: u64, seed: u64) -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(w, "{}", crate::import::CSV_HEADER)?;
    for i in 0..rows {
        let day = rng.random_range(1..=28);
        let month = rng.random_range(1..=12);
        let year = rng.random_range(2015..=2025);
        let date = format!("{year}-{month:02}-{day:02}");
        let payment = ["", "credit", "prepayment"][rng.random_range(0..3)];
        if i % 5 == 4 {
            let s = rng.random_range(1..=3);
            let gdn = rng.random_range(1..=4);
            let aq = rng.random_range(3_000..=100_000);
            writeln!(
                w,
                "{},{date},gas-supplier-{s},,gas-supplier-{s},gdn-{gdn},smart-compliant,{payment},{aq}",
                mprn_for(i)
            )?;
        } else {
            let dist = 10 + (i % 14) as u8;
            let s = rng.random_range(1..=5);
            let meter = if rng.random_range(0..10) < 8 { "smart-compliant" } else { "traditional" };
            writeln!(w, "{},{date},elec-supplier-{s},,,dno-{dist},{meter},{payment},", mpan_for(dist, i))?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Peak and current resident memory of this process, in KiB (Linux).
pub fn memory_kib() -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    (field("VmHWM:"), field("VmRSS:"))
}

pub async fn create_parties(hub: &Hub, parties: &[PartyInput]) -> anyhow::Result<()> {
    for p in parties {
        hub.create_party_unchecked(p).await.with_context(|| format!("party {}", p.id))?;
    }
    Ok(())
}

async fn bench_import(g: &GlobalArgs, rows: u64, seed: u64, keep: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| tmp.path().join("data"));
    let mut settings = Settings::resolve(g, &Default::default())?;
    settings.data_dir = dir.clone();
    settings.clock = ClockKind::System;
    let csv = tmp.path().join("registry.csv");
    let started = Instant::now();
    generate_csv(&csv, rows, seed)?;
    let gen_secs = started.elapsed().as_secs_f64();
    let csv_mib = std::fs::metadata(&csv)?.len() as f64 / (1 << 20) as f64;
    println!("generated {rows} rows ({csv_mib:.1} MiB CSV, seed {seed}) in {gen_secs:.2}s");

    let (hub, store) = crate::local::open_hub(&settings, crate::local::ClockFrom::Settings).await?;
    create_parties(&hub, &sample_parties()).await?;
    let (_, rss_before) = memory_kib();
    let summary = crate::import::import_file(&hub, &csv, true).await?;
    let (peak, rss_after) = memory_kib();
    let import_secs = started.elapsed().as_secs_f64() - gen_secs;
    store.close().await;
    let db_mib = dir_size(&dir) as f64 / (1 << 20) as f64;

    let baseline = store::sqlite::raw_insert_baseline(tmp.path(), rows, settings.durability)?;
    let baseline_rate = rows as f64 / baseline.as_secs_f64();
    let rate = summary.rows as f64 / import_secs;
    println!(
        "registry import: {} rows in {import_secs:.2}s = {rate:.0} rows/s (durability {:?})",
        summary.rows, settings.durability
    );
    println!(
        "  metering points created {}, registrations added {}",
        summary.metering_points_created, summary.registrations_added
    );
    println!(
        "  baseline, same run: raw SQLite insert of {rows} rows in one transaction = {baseline_rate:.0} rows/s; import runs at {:.0}% of it",
        100.0 * rate / baseline_rate
    );
    let kib = |v: Option<u64>| v.map_or("n/a".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "  memory: peak resident {}, resident before import {}, after {}",
        kib(peak),
        kib(rss_before),
        kib(rss_after)
    );
    println!("  data directory: {db_mib:.1} MiB");
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}
