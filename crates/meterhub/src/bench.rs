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
    /// GBCS UTRN generation (supplier side) and verification (meter side, with its
    /// anti-replay cache) per second on one core, with the ECDH shared secret cached as a
    /// hub does per (supplier, device); beside the raw SHA-256 + AES-128-GCM cost of one
    /// UTRN measured in the same run.
    Utrn {
        /// UTRNs to make and check.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
    },
    /// Generate a fleet, then run service requests (4.1.1 read registers) end to end:
    /// authenticated caller, authorised, audited, executed by the simulated meter, response
    /// stored. Prints requests per second and resident memory per simulated meter, beside
    /// the bare device computation measured in the same run.
    Pipeline {
        /// Homes in the generated fleet.
        #[arg(long, default_value_t = 100_000)]
        meters: u64,
        /// Requests to run.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Seed (fleet and request targets).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Requests accepted to run now that may wait at once (as `serve --admitted-max`).
        #[arg(long, default_value_t = hub::pipeline::ADMITTED_MAX as u32, value_parser = clap::value_parser!(u32).range(1..=crate::config::ADMITTED_MAX_LIMIT as i64))]
        admitted_max: u32,
    },
    /// Generate a fleet, then take N electricity switches through their whole process on the
    /// simulated clock: requested, objection window closed (confirmed, registry updated),
    /// switch instant (SRV 6.23 signed with the hub's key, run by each meter, definitive
    /// reading, both suppliers told). Prints switches per second of real time for each phase
    /// beside the pure state machine's own rate measured in the same run.
    Switching {
        /// Switches to run (one per generated home).
        #[arg(long, default_value_t = 100_000)]
        switches: u64,
        /// Requests in flight at once while asking.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seed (fleet).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Generate a fleet, then dispatch device alerts: each resolved to its recipients from the
    /// dispatch table at its instant (supplier, network operator, hub operator) and stored
    /// durably, one row per recipient. Prints alerts per second beside the bare store write
    /// of the same rows measured in the same run; then end-to-end latency percentiles from a
    /// meter raising an alert (tamper) to its supplier's stream reader receiving it.
    Alerts {
        /// Homes in the generated fleet.
        #[arg(long, default_value_t = 10_000)]
        meters: u64,
        /// Alerts to dispatch.
        #[arg(long, default_value_t = 200_000)]
        alerts: u64,
        /// Alerts handed to the hub at once (as the fleet hands over a system's alerts).
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Batches in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Alerts raised for the latency measurement.
        #[arg(long, default_value_t = 5_000)]
        latency_alerts: u64,
        /// Seed (fleet).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The mass-disconnect attack (R-FLT-1): a stolen supplier credential submits N
    /// disable-supply requests (SRV 7.2) across its homes. Prints how many the default
    /// thresholds let through, how many wait in quarantine, that every one is stored, and how
    /// fast the hub took them.
    Disconnect {
        /// Disable-supply requests the attacker sends.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Homes in the generated fleet (the attacker's share is a fifth).
        #[arg(long, default_value_t = 5_000)]
        meters: u64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
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
        BenchCommand::Utrn { count } => bench_utrn(count),
        BenchCommand::Pipeline { meters, requests, concurrency, seed, admitted_max } => {
            bench_pipeline(g, meters, requests, concurrency, seed, admitted_max as usize).await
        }
        BenchCommand::Switching { switches, concurrency, seed } => {
            bench_switching(g, switches, concurrency, seed).await
        }
        BenchCommand::Disconnect { requests, meters, concurrency } => {
            bench_disconnect(g, requests, meters, concurrency).await
        }
        BenchCommand::Alerts { meters, alerts, batch, concurrency, latency_alerts, seed } => {
            bench_alerts(g, meters, alerts, batch, concurrency, latency_alerts, seed).await
        }
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

/// CPU time this process has used, user and system together, in seconds (Linux; `None`
/// elsewhere). Less noisy than a rate on a shared machine: compare it per request.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let total = ticks(11)? + ticks(12)?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(total as f64 / 100.0)
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

async fn bench_pipeline(
    g: &GlobalArgs,
    meters: u64,
    requests: u64,
    concurrency: usize,
    seed: u64,
    admitted_max: usize,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    anyhow::ensure!(
        meters >= 1 && requests >= 1 && concurrency >= 1,
        "meters, requests and concurrency are at least 1"
    );
    let tmp = tempfile::tempdir()?;
    let mut settings = Settings::resolve(g, &Default::default())?;
    settings.data_dir = tmp.path().join("data");
    settings.clock = ClockKind::System;
    settings.seed = seed;
    settings.admitted_max = admitted_max;
    let (rss_start, _) = memory_kib();
    let (hub, store) = crate::local::open_hub(&settings, crate::local::ClockFrom::Settings).await?;
    let fleet = crate::local::attach_fleet(&hub, &settings).await?;
    let args = crate::generate::GenerateArgs { meters, gas_percent: 30, suppliers: 5 };
    let generated = crate::generate::generate(&hub, &fleet.fleet, &settings.data_dir, &args, true).await?;
    println!(
        "generated {} homes ({} meters) in {:.1}s ({:.0} homes/s)",
        generated.homes,
        generated.electricity + generated.gas,
        generated.seconds,
        generated.homes as f64 / generated.seconds
    );
    let (_, rss_generated) = memory_kib();
    // The hub fills its planning cache in the background once the bulk load is over, as it
    // does after every start; the run measures the hub warm, so wait for it.
    let warming_started = Instant::now();
    while store.planning_warming() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!(
        "planning cache warmed in the background: {} metering points in {:.1}s (the run below starts after it)",
        store.planning_stats().entries,
        warming_started.elapsed().as_secs_f64()
    );

    // Baseline, same run: the meter's own work for a 4.1.1, with no hub around it.
    let sample = fleet.fleet.system(fleet_device(&hub, 1).await?).await?;
    let meter = sample.meters[0].clone();
    let started = Instant::now();
    let n_base = 200_000u64;
    let mut acc = 0u64;
    for i in 0..n_base {
        let at = hub.now() + jiff::SignedDuration::from_secs(i as i64);
        acc = acc.wrapping_add(sample.consumption(&meter).registers_at(at).import_wh);
    }
    let base_rate = n_base as f64 / started.elapsed().as_secs_f64();
    std::hint::black_box(acc);

    // Callers: the simulated suppliers, authenticated as the API would.
    let callers = Arc::new(sim_suppliers(&hub).await?);
    // The bulk load is over: the run below allocates as a serving hub does.
    crate::allocator::for_serving();
    let dispatcher = tokio::spawn(hub.clone().run_dispatcher(std::time::Duration::from_millis(5)));
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let bar = indicatif::ProgressBar::new(requests);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} submitting [{bar:40}] {pos}/{len} {per_sec}")
            .expect("template"),
    );
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let reads_before = fleet.fleet.reads();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (hub, callers, next, refused, bar) =
            (hub.clone(), callers.clone(), next.clone(), refused.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            // When each accepted request was submitted, for the latency figures.
            let mut submitted = Vec::new();
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (w as u64 + 1));
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let home = rng.random_range(1..=meters);
                let dist = 10 + (home % 14) as u8;
                let caller = &callers[(home % 5) as usize];
                let input = hub::pipeline::SubmitInput {
                    srv: "4.1.1".into(),
                    target: hub::pipeline::Target::Mpxn(mpan_for(dist, 9_000_000_000 + home)),
                    body: serde_json::json!({}),
                    execute_at: None,
                };
                match hub.submit(caller, &input).await {
                    Ok(r) => submitted.push((r.id, r.submitted_at)),
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                bar.inc(1);
            }
            submitted
        }));
    }
    let mut submitted = std::collections::HashMap::new();
    for t in tasks {
        submitted.extend(t.await?);
    }
    bar.finish_and_clear();
    let submitted_secs = started.elapsed().as_secs_f64();
    // Wait until the dispatcher has answered everything.
    while !store_idle(&hub).await? {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let cpu = cpu_started.zip(cpu_seconds()).map(|(a, b)| b - a);
    let reads = fleet.fleet.reads().since(reads_before);
    let searches = hub.dispatch_searches().await;
    dispatcher.abort();
    hub.drain_dispatch().await;
    // Submission to the device's answer (a response's time; the commit after it is not in it).
    let mut latencies = Vec::with_capacity(submitted.len());
    for caller in callers.iter() {
        let mut after = 0;
        loop {
            let page = hub.responses(caller, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                if let Some(at) = submitted.get(&r.request_id) {
                    latencies.push(r.at.duration_since(*at).as_secs_f64() * 1e3);
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0.0);
    let (peak, rss_end) = memory_kib();
    let counts = hub.counts().await?;
    let planning = store.planning_stats();
    fleet.close().await;
    store.close().await;

    let ok = requests - refused.load(Ordering::Relaxed);
    println!(
        "pipeline: {ok} requests 4.1.1 end to end in {total_secs:.2}s = {:.0} requests/s (accepted at {:.0}/s; {} refused; concurrency {concurrency}; durability {:?})",
        ok as f64 / total_secs,
        requests as f64 / submitted_secs,
        refused.load(Ordering::Relaxed),
        settings.durability,
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU: {cpu:.1}s over {total_secs:.1}s on {} cores = {:.0} µs per request (callers, hub, store and devices together)",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu * 1e6 / ok.max(1) as f64
        );
    }
    println!(
        "  latency, submission to the device's answer: median {:.0} ms, 90th percentile {:.0} ms, 99th {:.0} ms (at most {} accepted requests wait at once)",
        percentile(0.5),
        percentile(0.9),
        percentile(0.99),
        hub.config().admitted_max
    );
    println!("  baseline, same run: the meter's own 4.1.1 computation alone = {base_rate:.0}/s");
    let kib = |v: Option<u64>| v.map_or(0.0, |k| k as f64);
    let per_meter = (kib(rss_generated) - kib(rss_start)) * 1024.0 / (generated.electricity + generated.gas) as f64;
    println!(
        "  memory: resident {:.1} MiB at start, {:.1} MiB after generating {} meters ({per_meter:.0} bytes per meter), {:.1} MiB after the run, peak {:.1} MiB",
        kib(rss_start) / 1024.0,
        kib(rss_generated) / 1024.0,
        generated.electricity + generated.gas,
        kib(rss_end) / 1024.0,
        kib(peak) / 1024.0
    );
    println!(
        "  the fleet keeps device state in its database with at most {} systems cached; registry: {} metering points",
        fleet::CACHE_SYSTEMS_DEFAULT,
        counts.metering_points
    );
    println!(
        "  fleet reads during the run: {} systems read ahead of their dispatch round in {} transactions ({:.1} each), {} read one at a time",
        reads.ahead,
        reads.ahead_transactions,
        reads.ahead as f64 / reads.ahead_transactions.max(1) as f64,
        reads.alone
    );
    println!(
        "  dispatcher: {} searches found {} due requests; {} ({:.0}%) were kept in memory since their insert, the rest read from their rows",
        searches.searches,
        searches.found,
        searches.kept,
        100.0 * searches.kept as f64 / searches.found.max(1) as f64
    );
    let looked_up = (planning.hits + planning.misses).max(1);
    println!(
        "  planning cache: {} metering points kept ({:.0} bytes packed each); {:.0}% of {} lookups answered from memory",
        planning.entries,
        planning.packed_bytes as f64 / planning.entries.max(1) as f64,
        planning.hits as f64 * 100.0 / looked_up as f64,
        looked_up
    );
    Ok(())
}

async fn bench_switching(g: &GlobalArgs, switches: u64, concurrency: usize, seed: u64) -> anyhow::Result<()> {
    use domain::switching::{Process, Switch};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    anyhow::ensure!(switches >= 1 && concurrency >= 1, "switches and concurrency are at least 1");
    // A Monday: the window closes at midnight after the next Monday.
    let start: jiff::Timestamp = "2026-01-05T09:00:00Z".parse()?;
    let world = SimWorld::generate(g, switches, seed, Some(start)).await?;
    let hub = world.hub.clone();
    let clock = hub.clock();
    let manual = clock.as_manual().context("the bench runs on the simulated clock")?;

    // Baseline, same run: the pure state machine alone, request to completion.
    let n_base = 200_000u64;
    let started = Instant::now();
    let supply_start: jiff::civil::Date = "2026-01-14".parse()?;
    for i in 0..n_base {
        let at = start + jiff::SignedDuration::from_secs(i as i64 % 3600);
        let mut s =
            Switch::open(Process::Electricity, domain::calendar::Division::EnglandAndWales, at, Some(supply_start))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        s.tick("2026-01-14T00:00:00Z".parse()?);
        s.complete(at).map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(&s);
    }
    let base_rate = n_base as f64 / started.elapsed().as_secs_f64();

    let callers = Arc::new(sim_suppliers(&hub).await?);
    let (homes, first_home) = (world.homes, world.first_home);
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let bar = progress(homes, "requesting");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (hub, callers, next, refused, bar) =
            (hub.clone(), callers.clone(), next.clone(), refused.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= homes {
                    break;
                }
                let home = first_home + k;
                let dist = 10 + (home % 14) as u8;
                // The next simulated supplier takes the home over.
                let caller = &callers[((home + 1) % 5) as usize];
                let input = hub::switching::SwitchInput {
                    mpxn: mpan_for(dist, 9_000_000_000 + home),
                    supply_start: Some("2026-01-14".into()),
                    supplier: None,
                };
                if let Err(e) = hub.request_switch(caller, &input).await
                    && refused.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("first refusal: {e}");
                }
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    bar.finish_and_clear();
    let asked_secs = started.elapsed().as_secs_f64();
    let ok = homes - refused.load(Ordering::Relaxed);

    // The windows close: every switch is confirmed and the registry updated.
    manual.advance_to("2026-01-13T09:00:00Z".parse()?);
    let phase = Instant::now();
    let confirmed = drive(&hub).await?;
    let confirm_secs = phase.elapsed().as_secs_f64();
    // The switch instant passes: credentials, definitive readings, completion.
    manual.advance_to("2026-01-14T09:00:00Z".parse()?);
    let phase = Instant::now();
    let completed = drive(&hub).await?;
    let complete_secs = phase.elapsed().as_secs_f64();
    let left = hub.store().due_switches("2027-01-01T00:00:00Z".parse()?, 1).await?.len();
    let sample = hub.store().switches(None, None, 1).await?;
    anyhow::ensure!(left == 0, "switches were left in progress");
    anyhow::ensure!(
        sample.first().is_some_and(|s| s.state.stage == domain::switching::Stage::Completed),
        "the last switch did not complete"
    );
    world.close().await;
    let total = asked_secs + confirm_secs + complete_secs;
    println!(
        "switching: {ok} electricity switches through their windows in {total:.2}s of real time = {:.0} switches/s ({} refused)",
        ok as f64 / total,
        refused.load(Ordering::Relaxed)
    );
    println!("  asked:     {:.0}/s ({asked_secs:.2}s, concurrency {concurrency})", ok as f64 / asked_secs);
    println!(
        "  confirmed: {:.0}/s ({confirm_secs:.2}s; {confirmed} steps: window closed, registry version)",
        ok as f64 / confirm_secs
    );
    println!(
        "  completed: {:.0}/s ({complete_secs:.2}s; {completed} steps: 6.23 signed and run by the meter, definitive reading, notices)",
        ok as f64 / complete_secs
    );
    println!("  baseline, same run: the pure state machine alone (open, windows, complete) = {base_rate:.0}/s");
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "the bench's flags, as given")]
async fn bench_alerts(
    g: &GlobalArgs,
    meters: u64,
    alerts: u64,
    batch: usize,
    concurrency: usize,
    latency_alerts: u64,
    seed: u64,
) -> anyhow::Result<()> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    anyhow::ensure!(meters >= 1 && alerts >= 1 && batch >= 1 && concurrency >= 1, "every count is at least 1");
    let world = SimWorld::generate(g, meters, seed, None).await?;
    let (hub, first_home) = (world.hub.clone(), world.first_home);
    // Synthetic alerts come from the first homes' meters; the latency phase uses other homes'
    // meters with their own numbering. As the fleet does, each meter's alerts are handed over
    // in its order by one task at a time: meter k belongs to task k mod concurrency.
    anyhow::ensure!(world.homes >= 2 * concurrency as u64, "at least two homes per task");
    let sample = ((world.homes / 2).min(2_000) / concurrency as u64) * concurrency as u64;
    let mut devices = Vec::new();
    let mut live = Vec::new();
    for k in 0..sample {
        devices.push(fleet_device(&hub, first_home + k).await?);
        live.push(fleet_device(&hub, first_home + sample + k).await?);
    }
    let devices = Arc::new(devices);
    let live = Arc::new(live);
    let now = hub.now();
    let tasks_n = concurrency as u64;
    // Task t's i-th item overall: the global index t + i * tasks (so its meters are its own).
    let own = move |t: u64, total: u64| (0..).map(move |k: u64| t + k * tasks_n).take_while(move |i| *i < total);

    // Baseline, same run, first (on the same fresh table): as many rows as the dispatch will
    // store, written straight to the store with their recipients known, by as many tasks, in
    // batches of the same number of rows.
    let party: domain::PartyId = "sim-supplier-1".parse()?;
    // Tamper and outage-restored alerts have two recipients, credit alerts one.
    let expected: u64 = (0..alerts).map(|i| if i % 3 == 2 { 1 } else { 2 }).sum();
    let base_rows = expected;
    let chunk = ((base_rows as f64 / alerts as f64) * batch as f64).ceil().max(1.0) as usize;
    let base_started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tasks_n {
        let (hub, party, devices) = (hub.clone(), party.clone(), devices.clone());
        tasks.push(tokio::spawn(async move {
            let rows: Vec<u64> = own(t, base_rows).collect();
            for part in rows.chunks(chunk) {
                let records = part
                    .iter()
                    .map(|&i| store::AlertRecord {
                        seq: 0,
                        party: party.clone(),
                        recipient_as: "registered-supplier".into(),
                        device: Some(devices[(i % sample) as usize]),
                        device_seq: Some(1 + i / sample),
                        mpxn: None,
                        at: now,
                        code: 0x8F74,
                        detail: "bench".into(),
                        data: None,
                        received_at: now,
                    })
                    .collect();
                hub.store().record_alerts(records).await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let base_secs = base_started.elapsed().as_secs_f64();

    // A mix the default table routes to one or two recipients: tamper (supplier and hub
    // operator), outage restored (network operator and supplier), credit added (supplier).
    // Numbered above the baseline's rows from the same meters (each meter's numbers rise).
    let codes = [0x8F74u16, 0x8F35, 0x810E];
    let first_seq = base_rows / sample + 2;
    let make_devices = devices.clone();
    let make = move |i: u64| hub::transport::DeviceAlert {
        device: make_devices[(i % sample) as usize],
        seq: first_seq + i / sample,
        at: now,
        code: codes[(i % 3) as usize],
        detail: "bench".into(),
        data: None,
    };
    let bar = progress(alerts, "dispatching");
    let stored = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tasks_n {
        let (hub, bar, stored) = (hub.clone(), bar.clone(), stored.clone());
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mine: Vec<u64> = own(t, alerts).collect();
            for part in mine.chunks(batch) {
                let n = hub.receive_alerts(part.iter().map(|&i| make(i)).collect()).await?;
                stored.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                bar.inc(part.len() as u64);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let rows = stored.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(rows == expected, "{rows} recipient rows stored, {expected} expected");

    // Latency: meters raise tamper alerts through the fleet; each supplier's reader follows
    // its alerts as a stream does. One alert in flight per meter.
    let raised: Arc<Mutex<HashMap<domain::Eui64, Instant>>> = Default::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Default::default();
    let callers = sim_suppliers(&hub).await?;
    let mut readers = Vec::new();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for c in callers {
        // Start after everything the throughput phase stored.
        let mut cursor = 0;
        let mut tail = hub.store().alerts_after(&c.party.id, cursor, hub::alerts::ALERTS_PAGE_MAX).await?;
        while let Some(last) = tail.last() {
            cursor = last.seq;
            tail = hub.store().alerts_after(&c.party.id, cursor, hub::alerts::ALERTS_PAGE_MAX).await?;
        }
        let (hub, raised, latencies, done) = (hub.clone(), raised.clone(), latencies.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let list = hub.next_alerts(&c, cursor, std::time::Duration::from_millis(200)).await?;
                let at = Instant::now();
                for a in list {
                    cursor = a.seq;
                    if let Some(d) = a.device
                        && let Some(t0) = raised.lock().expect("raised").remove(&d)
                    {
                        latencies.lock().expect("latencies").push((at - t0).as_secs_f64() * 1000.0);
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    let raisers = concurrency.max(1) * 2;
    let per = latency_alerts.div_ceil(raisers as u64);
    let lat_started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..raisers {
        let (fleet, devices, raised) = (world.fleet.fleet.clone(), live.clone(), raised.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..per {
                let i = (r as u64 + k * raisers as u64) % sample;
                let d = devices[i as usize];
                // Wait until this meter's last alert has been received.
                while raised.lock().expect("raised").contains_key(&d) {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                raised.lock().expect("raised").insert(d, Instant::now());
                fleet.tamper(d, 0x8F74).await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    while !raised.lock().expect("raised").is_empty() && lat_started.elapsed().as_secs() < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await??;
    }
    let lat_secs = lat_started.elapsed().as_secs_f64();
    let mut l = latencies.lock().expect("latencies").clone();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(0.0);
    world.close().await;
    println!(
        "alerts: {alerts} device alerts dispatched in {secs:.2}s = {:.0} alerts/s ({rows} recipient rows = {:.0} rows/s; batch {batch}, concurrency {concurrency})",
        alerts as f64 / secs,
        rows as f64 / secs
    );
    println!(
        "  baseline, same run, before: {base_rows} rows written straight to the store ({chunk} a batch, {concurrency} at once) = {:.0} rows/s",
        base_rows as f64 / base_secs
    );
    println!(
        "  end to end (meter raises tamper -> fleet -> hub dispatch -> supplier's stream reader): {} alerts in {lat_secs:.2}s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.len(),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        l.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

async fn bench_disconnect(g: &GlobalArgs, requests: u64, meters: u64, concurrency: usize) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    anyhow::ensure!(requests >= 1 && meters >= 5 && concurrency >= 1, "requests >= 1, meters >= 5, concurrency >= 1");
    let world = SimWorld::generate(g, meters, 1, None).await?;
    let (hub, first_home) = (world.hub.clone(), world.first_home);
    let callers = sim_suppliers(&hub).await?;
    // The attacker holds the credential of the supplier of the first home.
    let first_mpan = {
        let dist = 10 + (first_home % 14) as u8;
        mpan_for(dist, 9_000_000_000 + first_home)
    };
    let supplier = hub
        .store()
        .registration_at(domain::Mpxn::parse(&first_mpan)?, hub.now(), None)
        .await?
        .context("the first home is registered")?
        .data
        .supplier;
    let attacker = callers.into_iter().find(|c| c.party.id == supplier).context("its supplier")?;
    // Its homes: every fifth, as the generator shares them out.
    let homes: Vec<String> = (0..world.homes)
        .map(|k| first_home + k)
        .filter(|h| (h - first_home).is_multiple_of(5))
        .map(|h| mpan_for(10 + (h % 14) as u8, 9_000_000_000 + h))
        .collect();
    let homes = Arc::new(homes);
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let next = Arc::new(AtomicU64::new(0));
    let bar = progress(requests, "attacking");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (hub, attacker, homes, counts, next, bar) =
            (hub.clone(), attacker.clone(), homes.clone(), counts.clone(), next.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= requests {
                    return Ok::<(), anyhow::Error>(());
                }
                let input = hub::pipeline::SubmitInput {
                    srv: "7.2".into(),
                    target: hub::pipeline::Target::Mpxn(homes[(k % homes.len() as u64) as usize].clone()),
                    body: serde_json::json!({}),
                    execute_at: None,
                };
                let r = hub.submit(&attacker, &input).await?;
                let slot = match r.status {
                    hub::RequestStatus::AwaitingSignature => 0,
                    hub::RequestStatus::Quarantined => 1,
                    _ => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let quarantined_stored =
        hub.store().requests_in_status(&attacker.party.id, hub::RequestStatus::Quarantined, 10_000_000).await?.len();
    let alerts = hub.alerts(&attacker, Some(0), hub::alerts::ALERTS_PAGE_MAX).await?;
    let told = alerts.iter().filter(|a| domain::alerts::HubAlert::of_code(a.code).is_some()).count();
    world.close().await;
    let (admitted, held, other) =
        (counts[0].load(Ordering::Relaxed), counts[1].load(Ordering::Relaxed), counts[2].load(Ordering::Relaxed));
    println!(
        "disconnect: {requests} disable-supply requests from one stolen credential ({}) over {} homes in {secs:.2}s = {:.0} requests/s",
        attacker.party.id,
        homes.len(),
        requests as f64 / secs
    );
    println!("  let through to signing (the default threshold: 100 per party per hour): {admitted}");
    println!(
        "  held in quarantine, answered at once: {held}; stored in quarantine: {quarantined_stored}; other: {other}"
    );
    println!("  alerts to the supplier about it: {told} (once per threshold and hour, not once per request)");
    anyhow::ensure!(admitted + held == requests && quarantined_stored as u64 == held, "a request was lost");
    Ok(())
}

/// A generated fleet on the simulated clock in a temporary data directory, for a bench.
struct SimWorld {
    _tmp: tempfile::TempDir,
    hub: Hub,
    store: std::sync::Arc<store::sqlite::SqliteStore>,
    fleet: crate::local::FleetHandle,
    /// Homes generated, and the fleet's system id of the first.
    homes: u64,
    first_home: u64,
}

impl SimWorld {
    /// Generate `meters` electricity-only homes shared by five suppliers, the clock at
    /// `start` (London Monday 5 January 2026, 09:00, unless given).
    async fn generate(
        g: &GlobalArgs,
        meters: u64,
        seed: u64,
        start: Option<jiff::Timestamp>,
    ) -> anyhow::Result<SimWorld> {
        let tmp = tempfile::tempdir()?;
        let mut settings = Settings::resolve(g, &Default::default())?;
        settings.data_dir = tmp.path().join("data");
        settings.clock = ClockKind::Simulated;
        settings.clock_start = Some(match start {
            Some(t) => t,
            None => "2026-01-05T09:00:00Z".parse()?,
        });
        settings.seed = seed;
        let (hub, store) = crate::local::open_hub(&settings, crate::local::ClockFrom::Settings).await?;
        let fleet = crate::local::attach_fleet(&hub, &settings).await?;
        let args = crate::generate::GenerateArgs { meters, gas_percent: 0, suppliers: 5 };
        let generated = crate::generate::generate(&hub, &fleet.fleet, &settings.data_dir, &args, true).await?;
        println!("generated {} homes in {:.1}s", generated.homes, generated.seconds);
        let first_home = fleet.fleet.next_system_id().await? as u64 - generated.homes;
        Ok(SimWorld { _tmp: tmp, hub, store, fleet, homes: generated.homes, first_home })
    }

    async fn close(self) {
        self.fleet.close().await;
        self.store.close().await;
    }
}

/// A progress bar for `len` steps of `what`.
fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}}"
        ))
        .expect("template"),
    );
    bar
}

/// The generated fleet's five simulated suppliers, authenticated as the API would.
async fn sim_suppliers(hub: &Hub) -> anyhow::Result<Vec<hub::Caller>> {
    let mut callers = Vec::new();
    for i in 1..=5 {
        let id: domain::PartyId = format!("sim-supplier-{i}").parse()?;
        let t = hub.issue_token_unchecked(&id, "bench").await?;
        callers.push(hub.authenticate(&t.token).await?);
    }
    Ok(callers)
}

/// Run switching and dispatch until neither has anything left; returns the switch steps.
async fn drive(hub: &Hub) -> anyhow::Result<usize> {
    let mut steps = 0;
    loop {
        let moved = hub.run_switches_due().await?;
        let ran = hub.dispatch_due().await?;
        steps += moved;
        if moved + ran == 0 {
            return Ok(steps);
        }
    }
}

/// The electricity meter of generated home `home`.
async fn fleet_device(hub: &Hub, home: u64) -> anyhow::Result<domain::Eui64> {
    let dist = 10 + (home % 14) as u8;
    let mpxn = domain::Mpxn::parse(&mpan_for(dist, 9_000_000_000 + home))?;
    Ok(hub.store().device_for_mpxn(mpxn).await?.context("generated home missing")?.eui)
}

/// True when nothing is queued and due.
async fn store_idle(hub: &Hub) -> anyhow::Result<bool> {
    Ok(hub.store().due_requests(hub.now(), 1, Default::default(), 0).await?.requests.is_empty())
}

fn bench_utrn(count: u64) -> anyhow::Result<()> {
    use domain::crypto::{KeyAgreementKey, aes128_gcm_tag, derive_p256_scalar, sha256};
    use domain::utrn::{self, CounterCache, ValueClass};
    anyhow::ensure!((1..=100_000_000).contains(&count), "--count is 1 to 100,000,000");
    let supplier = KeyAgreementKey::from_scalar(&derive_p256_scalar(b"bench supplier"))?;
    let device = KeyAgreementKey::from_scalar(&derive_p256_scalar(b"bench device"))?;
    let started = Instant::now();
    let z = supplier.shared_secret(&device.public_point())?;
    let ecdh = started.elapsed();
    let o = domain::Eui64::parse("90B3D51F30010000")?;
    let t = domain::Eui64::parse("00DB1234567890A0")?;

    // Raw cost, same run: the KDF's SHA-256 over the same input size and one GCM tag.
    let started = Instant::now();
    let mut acc = 0u8;
    for i in 0..count {
        let mut input = [0u8; 69];
        input[..8].copy_from_slice(&i.to_be_bytes());
        let key = sha256(&input);
        let tag = aes128_gcm_tag(key[..16].try_into().expect("16"), &[0; 12], &input[..35]);
        acc ^= tag[15];
    }
    std::hint::black_box(acc);
    let raw = count as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut issued = Vec::with_capacity(count as usize);
    for n in 1..=count {
        issued.push(utrn::generate(&z, o, t, n << 32, ValueClass::Pennies, (n % 8192) as u32)?);
    }
    let generated = count as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut cache = CounterCache::new();
    let mut pence = 0u64;
    for u in &issued {
        pence += cache.accept(&z, o, t, u)?.pence();
    }
    let verified = count as f64 / started.elapsed().as_secs_f64();
    let expected: u64 = (1..=count).map(|n| n % 8192).sum();
    anyhow::ensure!(pence == expected, "credited {pence} pence, issued {expected}");

    println!("utrn: {count} UTRNs on one core, shared secret cached (ECDH once: {:.0} µs)", ecdh.as_secs_f64() * 1e6);
    println!("  generate: {generated:.0} /s");
    println!("  verify (meter side, anti-replay cache of 100): {verified:.0} /s; every one credited once");
    println!("  baseline, same run: raw SHA-256 + AES-128-GCM tag = {raw:.0} /s");
    Ok(())
}
