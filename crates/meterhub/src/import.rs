//! `meterhub registry import`: stream a CSV into the registry in one transaction.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hub::registry::RegistrationInput;
use hub::{Hub, ImportSummary};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

/// One CSV row, as text: the hub checks each field and names it on error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvRow {
    mpxn: String,
    effective_from: String,
    supplier: String,
    #[serde(default)]
    export_supplier: Option<String>,
    #[serde(default)]
    shipper: Option<String>,
    network_operator: String,
    meter_type: String,
    #[serde(default)]
    payment_mode: Option<String>,
    #[serde(default)]
    annual_quantity_kwh: Option<String>,
}

/// The header every import file starts with.
pub const CSV_HEADER: &str =
    "mpxn,effective_from,supplier,export_supplier,shipper,network_operator,meter_type,payment_mode,annual_quantity_kwh";

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Import `path`; everything or nothing. Refusals name the line and the field.
pub async fn import_file(hub: &Hub, path: &Path, progress: bool) -> anyhow::Result<ImportSummary> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader =
        csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(BufReader::with_capacity(1 << 20, file));
    let operator = hub
        .parties_unchecked()
        .await?
        .into_iter()
        .find(|p| p.roles.contains(domain::Role::HubOperator))
        .context("the data directory has no hub operator")?;
    let bar = if progress { ProgressBar::new(len) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} importing [{bar:40}] {bytes}/{total_bytes} {msg} ({eta} left)")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let mut import = hub.begin_import(operator.id).await?;
    let mut record = csv::StringRecord::new();
    let headers = reader.headers().with_context(|| format!("{}: cannot read the header row", path.display()))?.clone();
    let mut rows: u64 = 0;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("{len} columns where the header has {expected_len}")
                    }
                    _ => e.to_string(),
                };
                import.abort(format!("line {line}: {reason}")).await;
                bar.abandon();
                bail!("{} line {line}: {reason}; nothing was imported", path.display());
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let row: CsvRow = match record.deserialize(Some(&headers)) {
            Ok(r) => r,
            Err(e) => {
                import.abort(format!("line {line}: {e}")).await;
                bar.abandon();
                bail!("{} line {line}: {e}; nothing was imported", path.display());
            }
        };
        let aq = match non_empty(row.annual_quantity_kwh).map(|s| s.parse::<u64>()).transpose() {
            Ok(v) => v,
            Err(e) => {
                import.abort(format!("line {line}")).await;
                bar.abandon();
                bail!(
                    "{} line {line}: annual_quantity_kwh: not a whole number of kWh ({e}); nothing was imported",
                    path.display()
                );
            }
        };
        let input = RegistrationInput {
            effective_from: row.effective_from,
            supplier: row.supplier,
            export_supplier: non_empty(row.export_supplier),
            shipper: non_empty(row.shipper),
            network_operator: row.network_operator,
            meter_type: row.meter_type,
            payment_mode: non_empty(row.payment_mode),
            annual_quantity_kwh: aq,
        };
        if let Err(e) = import.push(&row.mpxn, &input).await {
            import.abort(format!("line {line}: {e}")).await;
            bar.abandon();
            bail!("{} line {line}: {e}; nothing was imported", path.display());
        }
        rows += 1;
        if rows.is_multiple_of(8192) {
            bar.set_position(record.position().map_or(0, |p| p.byte()));
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{rows} rows, {:.0} rows/s", rows as f64 / secs));
        }
    }
    bar.set_message(format!("{rows} rows read; committing"));
    let summary = import.commit().await;
    bar.finish_and_clear();
    let summary = summary?;
    let secs = started.elapsed().as_secs_f64();
    if progress {
        eprintln!("imported {} in {:.2}s ({:.0} rows/s)", path.display(), secs, summary.rows as f64 / secs.max(1e-9));
    }
    Ok(summary)
}

pub fn print_summary(s: &ImportSummary) {
    println!(
        "rows {}, metering points created {}, registrations added {}, already recorded (skipped) {}",
        s.rows, s.metering_points_created, s.registrations_added, s.duplicates_skipped
    );
}
