//! `meterhub utrn generate|verify`: GBCS UTRNs from the command line, as a supplier makes
//! them and as a meter checks them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use domain::Eui64;
use domain::crypto::{KeyAgreementKey, p256_point_from_pem};
use domain::utrn::{self, CounterCache, ValueClass};

#[derive(Subcommand)]
pub enum UtrnCommand {
    /// Make a UTRN (the supplier's side) and print it.
    ///
    /// Example with the DCC Boxed test keys in data/reference/dccboxed-test-keys/:
    /// `meterhub utrn generate --supplier-key 90b3d51f30010000-pp-ka.key --device-cert
    /// 00db1234567890a0-ka.pem --originator 90B3D51F30010000 --target 00DB1234567890A0
    /// --counter 0x100000000 --value 100 --class pounds` prints 73943333457189043313.
    Generate(GenerateArgs),
    /// Check a UTRN as the meter does (the device's side) and print its counter, value and
    /// class, or why it is refused (with the GBCS alert code); exit status 1 when refused.
    ///
    /// The meter uses its key-agreement private key and the supplier's prepayment public key
    /// (`--device-key`, `--supplier-cert`). ECDH is symmetric, so the supplier's private key
    /// with the device's certificate (`--supplier-key`, `--device-cert`) checks the same MAC:
    /// useful with published test keys, where only the supplier's private key is given.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct GenerateArgs {
    /// The supplier's prepayment key-agreement private key (PEM PKCS#8 or EC PRIVATE KEY).
    #[arg(long)]
    supplier_key: PathBuf,
    /// The device's key-agreement certificate or public key (PEM).
    #[arg(long)]
    device_cert: PathBuf,
    /// The supplier's EUI-64 (originator).
    #[arg(long)]
    originator: String,
    /// The meter's EUI-64 (target).
    #[arg(long)]
    target: String,
    /// The counter: a multiple of 2^32, strictly increasing per supplier and device
    /// (decimal or 0x hex).
    #[arg(long)]
    counter: String,
    /// The value, 0 to 8191, in units of --class.
    #[arg(long)]
    value: u32,
    /// `pennies` or `pounds`.
    #[arg(long)]
    class: String,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The UTRN (20 digits; spaces and dashes ignored).
    utrn: String,
    /// The meter's key-agreement private key (PEM).
    #[arg(long, conflicts_with = "supplier_key", required_unless_present = "supplier_key")]
    device_key: Option<PathBuf>,
    /// The supplier's prepayment key-agreement certificate or public key (PEM).
    #[arg(long, requires = "device_key")]
    supplier_cert: Option<PathBuf>,
    /// Or: the supplier's prepayment private key (PEM) ...
    #[arg(long, requires = "device_cert")]
    supplier_key: Option<PathBuf>,
    /// ... with the device's key-agreement certificate (PEM).
    #[arg(long)]
    device_cert: Option<PathBuf>,
    #[arg(long)]
    originator: String,
    #[arg(long)]
    target: String,
    /// A counter the meter already accepted (its anti-replay cache), repeatable.
    #[arg(long = "accepted")]
    accepted: Vec<String>,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn eui(field: &str, s: &str) -> anyhow::Result<Eui64> {
    Eui64::parse(s).with_context(|| format!("--{field}"))
}

fn counter(field: &str, s: &str) -> anyhow::Result<u64> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.with_context(|| format!("--{field}: a whole number, decimal or 0x hex"))
}

fn secret(key: &Path, peer: &Path, key_field: &str, peer_field: &str) -> anyhow::Result<[u8; 32]> {
    let key = KeyAgreementKey::from_pem(&read(key)?).with_context(|| format!("--{key_field}"))?;
    let point = p256_point_from_pem(&read(peer)?).with_context(|| format!("--{peer_field}"))?;
    key.shared_secret(&point).with_context(|| format!("--{peer_field}"))
}

pub fn run(cmd: UtrnCommand) -> anyhow::Result<bool> {
    match cmd {
        UtrnCommand::Generate(a) => {
            let class =
                ValueClass::parse(&a.class).with_context(|| format!("--class {:?}: pennies or pounds", a.class))?;
            let z = secret(&a.supplier_key, &a.device_cert, "supplier-key", "device-cert")?;
            let (o, t) = (eui("originator", &a.originator)?, eui("target", &a.target)?);
            let n = counter("counter", &a.counter)?;
            let u = utrn::generate(&z, o, t, n, class, a.value).context("cannot make the UTRN")?;
            println!("{u}");
            Ok(true)
        }
        UtrnCommand::Verify(a) => {
            let z = match (&a.device_key, &a.supplier_cert, &a.supplier_key, &a.device_cert) {
                (Some(k), Some(c), None, _) => secret(k, c, "device-key", "supplier-cert")?,
                (None, _, Some(k), Some(c)) => secret(k, c, "supplier-key", "device-cert")?,
                _ => bail!("give --device-key with --supplier-cert, or --supplier-key with --device-cert"),
            };
            let (o, t) = (eui("originator", &a.originator)?, eui("target", &a.target)?);
            let mut earlier: Vec<u64> =
                a.accepted.iter().map(|c| counter("accepted", c)).collect::<anyhow::Result<_>>()?;
            earlier.sort_unstable();
            let mut cache = CounterCache::new();
            for n in earlier {
                cache.remember_accepted(n);
            }
            match cache.accept(&z, o, t, &a.utrn) {
                Ok(ok) => {
                    println!(
                        "accepted: counter {:#x}, value {} {} ({} pence)",
                        ok.counter,
                        ok.value,
                        ok.class.as_str(),
                        ok.pence()
                    );
                    Ok(true)
                }
                Err(e) => {
                    let alert = e.alert().map(|c| format!(" (alert 0x{c:04X})")).unwrap_or_default();
                    println!("refused: {e}{alert}");
                    Ok(false)
                }
            }
        }
    }
}
