//! Settings from a TOML file, environment variables and flags; a flag beats its environment
//! variable, which beats the file, which beats the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

#[derive(Args, Clone, Default)]
pub struct GlobalArgs {
    /// TOML settings file (keys: data_dir, listen, clock, clock_start, durability, seed,
    /// relax_mpan_check_digit, log_format, admitted_max, planning_cache).
    #[arg(long, global = true, env = "METERHUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the hub keeps its data [default: ./meterhub-data].
    #[arg(long, global = true, env = "METERHUB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Accept MPANs that fail the check digit (industry test data does).
    #[arg(long, global = true, env = "METERHUB_RELAX_MPAN_CHECK_DIGIT")]
    pub relax_mpan_check_digit: bool,
    /// Log format [default: text].
    #[arg(long, global = true, env = "METERHUB_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Largest `admitted_max` accepted, from any source.
pub const ADMITTED_MAX_LIMIT: u32 = 1_000_000;
/// Largest `planning_cache` accepted, from any source (about 25 GiB when full).
pub const PLANNING_CACHE_LIMIT: u32 = 100_000_000;

#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]; port 0 picks a free one.
    #[arg(long, env = "METERHUB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// `system` time, or a `simulated` clock that the hub operator advances through the API
    /// [default: system].
    #[arg(long, env = "METERHUB_CLOCK", value_enum)]
    pub clock: Option<ClockKind>,
    /// Where a new simulated clock starts (RFC 3339 or date) [default: now]. A data directory
    /// that already ran a simulated clock resumes from its saved time.
    #[arg(long, env = "METERHUB_CLOCK_START")]
    pub clock_start: Option<String>,
    /// `full` fsyncs every commit; `normal` may lose the last commits on power loss (never on
    /// a process crash) [default: full].
    #[arg(long, env = "METERHUB_DURABILITY", value_enum)]
    pub durability: Option<DurabilityArg>,
    /// Seed of the simulated fleet (device keys, consumption); a data directory keeps the
    /// seed it was first started with [default: 1].
    #[arg(long, env = "METERHUB_SEED")]
    pub seed: Option<u64>,
    /// Requests accepted to run now that may wait for their devices at once, half of them at
    /// most one party's. Beyond it a submission waits up to 10 s for room, then is refused
    /// with 503 (nothing recorded), so an accepted request is answered within a fraction of a
    /// second even under overload, and one party's flood leaves room for the others
    /// [default: 2048].
    #[arg(long, env = "METERHUB_ADMITTED_MAX", value_parser = clap::value_parser!(u32).range(1..=ADMITTED_MAX_LIMIT as i64))]
    pub admitted_max: Option<u32>,
    /// Metering points whose planning facts (registrations, enrolments, linked meter) the hub
    /// keeps in memory, filled in the background after start: about 220 bytes each when full
    /// (32 million take about 7 GiB). Beyond it the least recently used are read from the
    /// database when a request needs them, which costs each such request about a fifth more
    /// CPU [default: 4194304].
    #[arg(long, env = "METERHUB_PLANNING_CACHE", value_parser = clap::value_parser!(u32).range(1..=PLANNING_CACHE_LIMIT as i64))]
    pub planning_cache: Option<u32>,
}

#[derive(Clone, Copy, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClockKind {
    System,
    Simulated,
}

#[derive(Clone, Copy, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityArg {
    Full,
    Normal,
}

/// The settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    clock: Option<ClockKind>,
    clock_start: Option<String>,
    durability: Option<DurabilityArg>,
    relax_mpan_check_digit: Option<bool>,
    log_format: Option<LogFormat>,
    seed: Option<u64>,
    admitted_max: Option<u32>,
    planning_cache: Option<u32>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub clock: ClockKind,
    pub clock_start: Option<jiff::Timestamp>,
    pub durability: store::sqlite::Durability,
    pub id_rules: domain::IdRules,
    pub seed: u64,
    pub admitted_max: usize,
    pub planning_cache: usize,
}

fn read_file(path: Option<&Path>) -> anyhow::Result<FileSettings> {
    let Some(path) = path else {
        return Ok(FileSettings::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read settings file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("settings file {}", path.display()))
}

impl Settings {
    pub fn resolve(g: &GlobalArgs, s: &ServeArgs) -> anyhow::Result<Settings> {
        let file = read_file(g.config.as_deref())?;
        let clock_start = match s.clock_start.as_ref().or(file.clock_start.as_ref()) {
            None => None,
            Some(t) => Some(domain::time::parse_instant(t).map_err(|e| anyhow::anyhow!("clock_start: {e}"))?),
        };
        let clock = s.clock.or(file.clock).unwrap_or(ClockKind::System);
        if clock_start.is_some() && clock == ClockKind::System {
            bail!("clock_start is only for the simulated clock: add --clock simulated");
        }
        let relax = g.relax_mpan_check_digit || file.relax_mpan_check_digit.unwrap_or(false);
        Ok(Settings {
            data_dir: g.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("meterhub-data")),
            listen: s.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".parse().expect("address")),
            clock,
            clock_start,
            durability: match s.durability.or(file.durability).unwrap_or(DurabilityArg::Full) {
                DurabilityArg::Full => store::sqlite::Durability::Full,
                DurabilityArg::Normal => store::sqlite::Durability::Normal,
            },
            id_rules: if relax { domain::IdRules::RELAXED } else { domain::IdRules::STRICT },
            seed: s.seed.or(file.seed).unwrap_or(1),
            admitted_max: match s.admitted_max.or(file.admitted_max) {
                None => hub::pipeline::ADMITTED_MAX,
                Some(n @ 1..=ADMITTED_MAX_LIMIT) => n as usize,
                Some(n) => bail!("admitted_max: {n} is not in 1..={ADMITTED_MAX_LIMIT} (at least 1)"),
            },
            planning_cache: match s.planning_cache.or(file.planning_cache) {
                None => store::sqlite::PLANNING_ENTRIES_DEFAULT,
                Some(n @ 1..=PLANNING_CACHE_LIMIT) => n as usize,
                Some(n) => bail!("planning_cache: {n} is not in 1..={PLANNING_CACHE_LIMIT} (at least 1)"),
            },
        })
    }
}

/// Logs go to stderr. Commands other than `serve` log warnings only, unless RUST_LOG says
/// otherwise.
pub fn init_logging(g: &GlobalArgs, quiet: bool) -> anyhow::Result<()> {
    let file = read_file(g.config.as_deref())?;
    let format = g.log_format.or(file.log_format).unwrap_or(LogFormat::Text);
    let default = if quiet { "warn" } else { "info,tower_http=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}
