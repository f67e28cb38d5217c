//! `meterhub`: the hub's command line. `serve` runs the hub; `demo` tours it end to end;
//! the other commands administer a data directory or check identifiers.

mod allocator;
mod bench;
mod config;
mod demo;
mod generate;
mod import;
mod local;
mod serve;
mod utrn;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// An open-source central hub for smart metering, modelled on Great Britain's DCC.
///
/// Start with `meterhub demo` for a tour, `meterhub serve` to run the hub (it prints its URL
/// and, on first start, the hub operator's API token), then open /docs in a browser.
#[derive(Parser)]
#[command(name = "meterhub", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: config::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub's HTTP API until interrupted (Ctrl-C or SIGTERM).
    Serve(config::ServeArgs),
    /// Manage parties and their API tokens in the data directory.
    #[command(subcommand)]
    Party(PartyCommand),
    /// Bulk-load and inspect the registry.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// The simulated fleet.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Check MPANs and MPRNs.
    #[command(subcommand)]
    Mpxn(MpxnCommand),
    /// Tour the hub end to end in a fresh temporary data directory; exits 0 when every step
    /// behaved as it should.
    Demo(demo::DemoArgs),
    /// Measure the hub; prints figures for BENCHMARKS.md.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Sign a critical request's pre-command with a party's private key (PEM, PKCS#8), as the
    /// party does before sending the signature to the hub. Prints the signature in base64.
    ///
    /// Example: `meterhub sign --key acme.pem --precommand "$(jq -r .precommand_base64 ack.json)"`
    Sign(SignArgs),
    /// GBCS UTRNs (prepayment top-up codes): make one as a supplier, check one as a meter.
    #[command(subcommand)]
    Utrn(utrn::UtrnCommand),
}

#[derive(Args)]
struct SignArgs {
    /// The party's private signing key (PEM `PRIVATE KEY`, as `party add --generate-key` wrote).
    #[arg(long)]
    key: PathBuf,
    /// The pre-command, base64 (`precommand_base64` of the acknowledgement).
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    precommand: Option<String>,
    /// Or a file holding the raw pre-command bytes.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PartyCommand {
    /// Add a party.
    Add(PartyAddArgs),
    /// List parties.
    List,
    /// Issue a new API token for a party and print it (shown once; only its hash is kept).
    Token {
        /// Party id.
        party: String,
        /// A label to recognise the token by.
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// List a party's tokens (ids, labels, status; never secrets).
    Tokens {
        /// Party id.
        party: String,
    },
    /// Revoke one of a party's tokens; it stops working at once.
    Revoke {
        /// Party id.
        party: String,
        /// Token id (the part after `mh_` and before the next `_`).
        token_id: String,
    },
}

#[derive(Args)]
struct PartyAddArgs {
    /// Party id: 2-40 characters, a-z, 0-9 and '-'.
    #[arg(long)]
    id: String,
    /// Display name.
    #[arg(long)]
    name: String,
    /// A role code, repeatable: IS ES GS ED GT OU RSA (DUIS), PSP MAP MFR REG HUB.
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// Originator EUI-64 (16 hex digits, plain or hyphenated).
    #[arg(long)]
    originator: String,
    /// The party's ECDSA P-256 public key (PEM) for critical commands.
    #[arg(long, conflicts_with = "generate_key")]
    public_key: Option<PathBuf>,
    /// Generate a key pair: write the private key here (mode 0600) and register its public
    /// half. The hub never sees the private key.
    #[arg(long)]
    generate_key: Option<PathBuf>,
    /// Also issue an API token and print it.
    #[arg(long)]
    token: bool,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Import registrations from CSV, all or nothing, with a progress bar.
    ///
    /// Columns (header row required): mpxn, effective_from, supplier, export_supplier,
    /// shipper, network_operator, meter_type, payment_mode, annual_quantity_kwh. Empty cells
    /// are absent values. effective_from is an RFC 3339 instant or a date (start of that
    /// London day). Parties must exist with the right roles. Re-running a file adds nothing.
    /// Enrolment is not imported: only enrolling a smart metering system sets that flag.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Show a metering point as at an instant.
    Show {
        mpxn: String,
        /// Instant (RFC 3339) or date; default now.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Generate homes in bulk: simulated suppliers (keys in DATA_DIR/simulated-keys),
    /// distributors, registrations, and premises with comms hub, electricity meter, display
    /// and (some) gas meter, commissioned and enrolled. Progress bar; repeatable.
    Generate(generate::GenerateArgs),
}

#[derive(Subcommand)]
enum MpxnCommand {
    /// Say whether an MPAN (13-digit core or 21-digit full form) or MPRN is valid, and why
    /// not. Exit status 0 when valid, 1 when not.
    Check {
        /// The identifier.
        id: String,
    },
}

fn main() -> ExitCode {
    // Give freed memory back to the system at once: after a bulk load (fleet generate) the
    // resident size then shows what is live (about 90 bytes per meter less in `bench
    // pipeline`). Serving switches to mimalloc's own delay (`allocator::for_serving`).
    allocator::for_bulk_work();
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Serve(_));
    if let Err(e) = config::init_logging(&cli.global, quiet) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Serve(args) => serve::run(&g, args).await.map(|()| ExitCode::SUCCESS),
        Command::Mpxn(MpxnCommand::Check { id }) => Ok(local::mpxn_check(&g, &id)),
        Command::Party(cmd) => {
            let local = local::Local::open(&g).await?;
            let r = party(&local, cmd).await;
            local.close().await;
            r.map(|()| ExitCode::SUCCESS)
        }
        Command::Registry(RegistryCommand::Import { file }) => {
            let local = local::Local::open(&g).await?;
            let r = import::import_file(&local.hub, &file, true).await;
            local.close().await;
            let summary = r?;
            import::print_summary(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Registry(RegistryCommand::Show { mpxn, at }) => {
            let local = local::Local::open(&g).await?;
            let r = local.show(&mpxn, at.as_deref()).await;
            local.close().await;
            r.map(|()| ExitCode::SUCCESS)
        }
        Command::Fleet(FleetCommand::Generate(args)) => {
            let settings = config::Settings::resolve(&g, &Default::default())?;
            let (hub, store) = local::open_hub(&settings, local::ClockFrom::DataDir).await?;
            let fleet = local::attach_fleet(&hub, &settings).await?;
            let r = generate::generate(&hub, &fleet.fleet, &settings.data_dir, &args, true).await;
            fleet.close().await;
            store.close().await;
            let done = r?;
            println!(
                "generated {} homes ({} electricity meters, {} gas meters) in {:.1}s ({:.0} homes/s)",
                done.homes,
                done.electricity,
                done.gas,
                done.seconds,
                done.homes as f64 / done.seconds.max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => demo::run(&g, args).await.map(|()| ExitCode::SUCCESS),
        Command::Bench(cmd) => bench::run(&g, cmd).await.map(|()| ExitCode::SUCCESS),
        Command::Sign(a) => sign(a).map(|()| ExitCode::SUCCESS),
        Command::Utrn(cmd) => utrn::run(cmd).map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
    }
}

async fn party(local: &local::Local, cmd: PartyCommand) -> anyhow::Result<()> {
    match cmd {
        PartyCommand::Add(a) => local.add_party(a).await,
        PartyCommand::List => local.list_parties().await,
        PartyCommand::Token { party, label } => local.issue_token(&party, &label).await,
        PartyCommand::Tokens { party } => local.list_tokens(&party).await,
        PartyCommand::Revoke { party, token_id } => local.revoke_token(&party, &token_id).await,
    }
}

fn sign(a: SignArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let pem = std::fs::read_to_string(&a.key).with_context(|| format!("cannot read {}", a.key.display()))?;
    let key = domain::crypto::SigningKey::from_pem(&pem).context("--key")?;
    let bytes = match (a.precommand, a.file) {
        (Some(text), _) => b64.decode(text.trim()).context("--precommand is not base64")?,
        (None, Some(path)) => std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        (None, None) => anyhow::bail!("give --precommand or --file"),
    };
    // Refuse to sign what is not a meterhub command: a signature is a commitment.
    let cmd = device::Command::decode(&bytes).context("the pre-command is not a meterhub command")?;
    let sig = key.sign(&domain::crypto::SystemRandom::new(), &bytes)?;
    eprintln!("signed SRV {} request {} ({} bytes)", cmd.srv, cmd.id, bytes.len());
    println!("{}", b64.encode(sig));
    Ok(())
}
