//! `meterhub demo`: a tour of the hub through its HTTP API, in a fresh temporary data
//! directory with a simulated clock. Every step checks its answer; any surprise is an error
//! and a non-zero exit.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use domain::crypto;
use reqwest::Method;
use serde_json::{Value, json};

use crate::config::{ClockKind, GlobalArgs, Settings};

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the data directory here instead of a temporary one (must not exist yet).
    #[arg(long)]
    keep: Option<PathBuf>,
}

const START: &str = "2026-01-05T09:00:00Z";
const MPAN: &str = "1700053058802";
const MPRN: &str = "3938424403";

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("request to {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Call and check the status; print one line.
    async fn expect(
        &self,
        what: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method.clone(), path, token, body).await?;
        let note = match value.get("detail").and_then(Value::as_str) {
            Some(d) if status >= 400 => format!("\n        {d}"),
            _ => String::new(),
        };
        println!("  {method} {path} -> {status}  {what}{note}");
        if status != want {
            bail!("{what}: expected HTTP {want}, got {status}: {value}");
        }
        Ok(value)
    }
}

/// Sign a request's pre-command, send the signature, wait for the response.
async fn sign_and_wait(c: &Client, token: &str, ack: &Value, key: &crypto::SigningKey) -> anyhow::Result<Value> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let pre = b64.decode(ack["precommand_base64"].as_str().context("pre-command")?)?;
    let sig = key.sign(&crypto::SystemRandom::new(), &pre)?;
    let id = ack["id"].as_str().context("id")?;
    let (s, v) = c
        .call(
            Method::POST,
            &format!("/v1/requests/{id}/signature"),
            Some(token),
            Some(&json!({"signature_base64": b64.encode(sig)})),
        )
        .await?;
    if s != 202 {
        bail!("signature refused: {v}");
    }
    wait_done(c, token, ack).await
}

/// Wait for a request's response.
async fn wait_done(c: &Client, token: &str, ack: &Value) -> anyhow::Result<Value> {
    let id = ack["id"].as_str().context("id")?;
    for _ in 0..10 {
        let (_, v) = c.call(Method::GET, &format!("/v1/requests/{id}?wait=5"), Some(token), None).await?;
        if v["response"].is_object() {
            return Ok(v);
        }
    }
    bail!("no response to {id}")
}

fn step(n: u32, title: &str) {
    println!("\n== {n}. {title} ==");
}

fn field<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

pub async fn run(g: &GlobalArgs, args: DemoArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = match args.keep {
        Some(d) if d.exists() => bail!("{} exists; give a new directory to --keep", d.display()),
        Some(d) => d,
        None => tmp.path().join("data"),
    };
    let mut settings = Settings::resolve(g, &Default::default())?;
    settings.data_dir = dir.clone();
    settings.clock = ClockKind::Simulated;
    settings.clock_start = Some(START.parse()?);

    step(1, "A fresh hub");
    let (hub, store, first) = crate::local::open_hub_quiet(&settings, crate::local::ClockFrom::Settings).await?;
    let fleet = crate::local::attach_fleet(&hub, &settings).await?;
    let dispatcher = tokio::spawn(hub.clone().run_dispatcher(std::time::Duration::from_millis(50)));
    // Systems with something to do on their own (a held change, a prepayment threshold).
    let waker = tokio::spawn(fleet.fleet.clone().run_wakeups(std::time::Duration::from_millis(50)));
    let operator = first.context("a fresh data directory creates the hub operator")?.token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(axum::serve(listener, api::router(hub.clone())).into_future());
    let c = Client { http: reqwest::Client::new(), base: format!("http://{addr}") };
    println!("  data directory {}", dir.display());
    println!(
        "  API on http://{addr}, simulated clock at {START}; the first start made the `hub-operator` party and its token"
    );
    let clock = c.expect("hub clock", Method::GET, "/v1/clock", Some(&operator), None, 200).await?;
    println!("        London time {}", clock["london"].as_str().unwrap_or("?"));

    step(2, "Parties: the hub operator registers the market");
    let acme_key = crypto::SigningKey::generate(&crypto::SystemRandom::new())?;
    let maker_key = crypto::SigningKey::generate(&crypto::SystemRandom::new())?;
    let parties = [
        ("reg-service", "Registration Service", vec!["REG"], None),
        ("acme-energy", "Acme Energy", vec!["IS", "GS"], Some(crypto::public_key_pem(&acme_key.public_key_spki()))),
        ("brightside-power", "Brightside Power", vec!["IS"], None),
        ("northern-wires", "Northern Wires (distributor 17)", vec!["ED"], None),
        ("cadent", "Cadent Gas", vec!["GT"], None),
        ("warmhomes-esco", "WarmHomes ESCO", vec!["OU"], None),
        (
            "meterworks",
            "MeterWorks (meter manufacturer)",
            vec!["MFR"],
            Some(crypto::public_key_pem(&maker_key.public_key_spki())),
        ),
    ];
    let mut tokens = std::collections::HashMap::new();
    for (i, (id, name, roles, key)) in parties.iter().enumerate() {
        let body = json!({ "id": id, "name": name, "roles": roles, "originator": format!("90-B3-D5-1F-30-01-00-{:02X}", i + 1),
                           "signing_key_pem": key });
        c.expect(
            &format!("{id} ({})", roles.join(",")),
            Method::POST,
            "/v1/parties",
            Some(&operator),
            Some(&body),
            201,
        )
        .await?;
        let t = c
            .expect(
                "its API token",
                Method::POST,
                &format!("/v1/parties/{id}/tokens"),
                Some(&operator),
                Some(&json!({"label": "demo"})),
                201,
            )
            .await?;
        tokens.insert(*id, t["token"].as_str().context("token")?.to_string());
    }
    let tok = |id: &str| tokens[id].clone();
    println!("  acme-energy's public signing key is registered; its private key never leaves the demo's memory");

    step(3, "Registrations: effective-dated, never overwritten (R-REG-1)");
    let reg = tok("reg-service");
    let path = format!("/v1/metering-points/{MPAN}/registrations");
    let acme_from = json!({"effective_from": "2025-04-01", "supplier": "acme-energy", "network_operator": "northern-wires",
                           "meter_type": "smart-compliant"});
    c.expect("electricity: acme-energy from 1 April 2025", Method::POST, &path, Some(&reg), Some(&acme_from), 201)
        .await?;
    let switch = json!({"effective_from": "2026-02-02", "supplier": "brightside-power", "network_operator": "northern-wires",
                        "meter_type": "smart-compliant", "payment_mode": "prepayment"});
    c.expect(
        "a switch to brightside-power from 2 February 2026 (future)",
        Method::POST,
        &path,
        Some(&reg),
        Some(&switch),
        201,
    )
    .await?;
    let gas = json!({"effective_from": "2024-10-01", "supplier": "acme-energy", "shipper": "acme-energy",
                     "network_operator": "cadent", "meter_type": "smart-compliant", "annual_quantity_kwh": 11500});
    c.expect(
        "gas: acme-energy ships and supplies, 11,500 kWh a year",
        Method::POST,
        &format!("/v1/metering-points/{MPRN}/registrations"),
        Some(&reg),
        Some(&gas),
        201,
    )
    .await?;

    step(4, "As-at queries: who may see what, when");
    let mp = format!("/v1/metering-points/{MPAN}");
    let v = c
        .expect("acme-energy reads its metering point now", Method::GET, &mp, Some(&tok("acme-energy")), None, 200)
        .await?;
    println!("        supplier {}, enrolled {}", field(&v, &["registration", "supplier"]), v["enrolled"]);
    c.expect("brightside-power is not the supplier yet", Method::GET, &mp, Some(&tok("brightside-power")), None, 403)
        .await?;
    let v = c
        .expect(
            "brightside-power asks as at 15 Feb 2026",
            Method::GET,
            &format!("{mp}?at=2026-02-15"),
            Some(&tok("brightside-power")),
            None,
            200,
        )
        .await?;
    println!(
        "        supplier {}, payment mode {}",
        field(&v, &["registration", "supplier"]),
        field(&v, &["registration", "payment_mode"])
    );
    c.expect(
        "acme-energy cannot look past its own period",
        Method::GET,
        &format!("{mp}?at=2026-03-01"),
        Some(&tok("acme-energy")),
        None,
        403,
    )
    .await?;
    c.expect("the distributor reads its own area", Method::GET, &mp, Some(&tok("northern-wires")), None, 200).await?;
    let v = c
        .expect(
            "acme-energy reads the gas point",
            Method::GET,
            &format!("/v1/metering-points/{MPRN}"),
            Some(&tok("acme-energy")),
            None,
            200,
        )
        .await?;
    println!("        large supply point (> 73,200 kWh): {}", v["large_gas_supply_point"]);
    let h = c
        .expect(
            "the registration service reads the full history",
            Method::GET,
            &format!("{mp}/history"),
            Some(&reg),
            None,
            200,
        )
        .await?;
    println!("        {} versions recorded", h["registrations"].as_array().map_or(0, Vec::len));

    step(5, "Refusals name the reason");
    c.expect("no token", Method::GET, &mp, None, None, 401).await?;
    c.expect("an unknown token", Method::GET, &mp, Some("mh_000000000000_nope"), None, 401).await?;
    c.expect("an ESCO holds no role for registry reads", Method::GET, &mp, Some(&tok("warmhomes-esco")), None, 403)
        .await?;
    c.expect(
        "a supplier cannot write the registry",
        Method::POST,
        &path,
        Some(&tok("acme-energy")),
        Some(&acme_from),
        403,
    )
    .await?;
    c.expect(
        "a bad MPAN check digit",
        Method::POST,
        "/v1/metering-points/1700053058803/registrations",
        Some(&reg),
        Some(&acme_from),
        400,
    )
    .await?;
    let mut unknown = acme_from.clone();
    unknown["colour"] = json!("blue");
    c.expect("an unknown field", Method::POST, &path, Some(&reg), Some(&unknown), 400).await?;
    let mut no_shipper = gas.clone();
    no_shipper.as_object_mut().context("object")?.remove("shipper");
    c.expect(
        "gas without a shipper",
        Method::POST,
        &format!("/v1/metering-points/{MPRN}/registrations"),
        Some(&reg),
        Some(&no_shipper),
        400,
    )
    .await?;
    let mut wrong_role = acme_from.clone();
    wrong_role["network_operator"] = json!("cadent");
    c.expect(
        "a gas transporter as an electricity distributor",
        Method::POST,
        &path,
        Some(&reg),
        Some(&wrong_role),
        400,
    )
    .await?;

    step(6, "Time moves only when the operator says so");
    let v = c
        .expect(
            "advance the simulated clock 30 days",
            Method::POST,
            "/v1/clock/advance",
            Some(&operator),
            Some(&json!({"by": "P30D"})),
            200,
        )
        .await?;
    println!("        now {}", v["london"].as_str().unwrap_or("?"));
    c.expect(
        "a supplier cannot move time",
        Method::POST,
        "/v1/clock/advance",
        Some(&tok("acme-energy")),
        Some(&json!({"by": "P1D"})),
        403,
    )
    .await?;
    c.expect(
        "nor can time go back",
        Method::POST,
        "/v1/clock/advance",
        Some(&operator),
        Some(&json!({"to": "2026-01-01"})),
        400,
    )
    .await?;
    let v = c
        .expect("brightside-power is now the supplier", Method::GET, &mp, Some(&tok("brightside-power")), None, 200)
        .await?;
    println!("        supplier {}", field(&v, &["registration", "supplier"]));
    c.expect("and acme-energy no longer sees it", Method::GET, &mp, Some(&tok("acme-energy")), None, 403).await?;

    step(7, "Credentials are revocable");
    let acme_id = tok("acme-energy").split('_').nth(1).context("token id")?.to_string();
    c.expect(
        "the operator revokes acme-energy's token",
        Method::DELETE,
        &format!("/v1/parties/acme-energy/tokens/{acme_id}"),
        Some(&operator),
        None,
        200,
    )
    .await?;
    c.expect("the revoked token is refused at once", Method::GET, "/v1/whoami", Some(&tok("acme-energy")), None, 401)
        .await?;

    step(8, "Bulk load: `meterhub registry import`");
    crate::bench::create_parties(&hub, &crate::bench::sample_parties()).await?;
    let csv = tmp.path().join("registry.csv");
    crate::bench::generate_csv(&csv, 2000, 7)?;
    let s = crate::import::import_file(&hub, &csv, false).await?;
    println!(
        "  imported {} rows: {} metering points, {} registrations",
        s.rows, s.metering_points_created, s.registrations_added
    );
    let s = crate::import::import_file(&hub, &csv, false).await?;
    println!("  the same file again adds nothing: {} skipped as already recorded", s.duplicates_skipped);
    let (_, metrics) = c.call(Method::GET, "/metrics", None, None).await?;
    let line =
        metrics.as_str().and_then(|m| m.lines().find(|l| l.starts_with("meterhub_metering_points "))).unwrap_or("?");
    println!("  GET /metrics -> {line}");

    step(9, "A smart home: install, commission with signed commands, enrol (R-REG-2)");
    let t = c
        .expect(
            "a new token for acme-energy",
            Method::POST,
            "/v1/parties/acme-energy/tokens",
            Some(&operator),
            Some(&json!({})),
            201,
        )
        .await?;
    let acme = t["token"].as_str().context("token")?.to_string();
    let home_mpan = crate::bench::mpan_for(17, 4242);
    let body = json!({"effective_from": "2025-10-01", "supplier": "acme-energy", "network_operator": "northern-wires",
                      "meter_type": "smart-compliant"});
    c.expect(
        &format!("the registration service records {home_mpan} for acme-energy"),
        Method::POST,
        &format!("/v1/metering-points/{home_mpan}/registrations"),
        Some(&reg),
        Some(&body),
        201,
    )
    .await?;
    let p = c
        .expect(
            "acme-energy's installer fits meters, comms hub and display",
            Method::POST,
            "/v1/premises",
            Some(&acme),
            Some(&json!({"electricity": "domestic", "gas_annual_quantity_kwh": 11500, "manufacturer": "meterworks"})),
            201,
        )
        .await?;
    let devices: Vec<(String, String)> = p["devices"]
        .as_array()
        .context("devices")?
        .iter()
        .map(|d| {
            (d["eui"].as_str().unwrap_or_default().to_string(), d["kind"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    for (eui, kind) in &devices {
        let ack = c
            .expect(
                &format!("8.1.1 commission the {kind}: the hub returns the bytes to sign"),
                Method::POST,
                "/v1/requests",
                Some(&acme),
                Some(&json!({"srv": "8.1.1", "target": {"device": eui}})),
                202,
            )
            .await?;
        let r = sign_and_wait(&c, &acme, &ack, &acme_key).await?;
        println!("        signed by acme-energy, verified by the device: {}", r["response"]["outcome"]);
        if r["response"]["outcome"] != json!("done") {
            bail!("commissioning failed: {r}");
        }
    }
    let meter_of = |kind: &str| devices.iter().find(|(_, k)| k == kind).map(|(e, _)| e.clone()).unwrap_or_default();
    for (kind, mpxn) in [("electricity-meter", home_mpan.as_str()), ("gas-meter", MPRN)] {
        let ack = c
            .expect(
                &format!("6.20.1 link the {kind} to {mpxn}"),
                Method::POST,
                "/v1/requests",
                Some(&acme),
                Some(&json!({"srv": "6.20.1", "target": {"device": meter_of(kind)}, "body": {"mpxn": mpxn}})),
                202,
            )
            .await?;
        wait_done(&c, &acme, &ack).await?;
    }
    let v = c
        .expect(
            "the registry now says enrolled",
            Method::GET,
            &format!("/v1/metering-points/{home_mpan}"),
            Some(&acme),
            None,
            200,
        )
        .await?;
    println!("        enrolled: {}", v["enrolled"]);
    if v["enrolled"] != json!(true) {
        bail!("enrolment did not set the flag");
    }

    step(10, "Service requests: reads, a message on the display, a future-dated read");
    let read = |srv: &str, body: Value| json!({"srv": srv, "target": {"mpxn": home_mpan}, "body": body});
    let ack = c
        .expect(
            "4.1.1 read the registers",
            Method::POST,
            "/v1/requests",
            Some(&acme),
            Some(&read("4.1.1", json!({}))),
            202,
        )
        .await?;
    let r = wait_done(&c, &acme, &ack).await?;
    println!(
        "        import register {} Wh at {}",
        r["response"]["body"]["import_wh"], r["response"]["body"]["read_at"]
    );
    c.expect("a day passes", Method::POST, "/v1/clock/advance", Some(&operator), Some(&json!({"by": "P1D"})), 200)
        .await?;
    let ack = c
        .expect(
            "4.8.1 the distributor reads the half-hourly profile",
            Method::POST,
            "/v1/requests",
            Some(&tok("northern-wires")),
            Some(&read("4.8.1", json!({}))),
            202,
        )
        .await?;
    let r = wait_done(&c, &tok("northern-wires"), &ack).await?;
    let hh = r["response"]["body"]["half_hours"].as_array().cloned().unwrap_or_default();
    let wh: u64 = hh.iter().filter_map(|p| p[1].as_u64()).sum();
    println!("        {} half hours, {:.2} kWh since installation", hh.len(), wh as f64 / 1000.0);
    let ack = c
        .expect(
            "3.1 display a message",
            Method::POST,
            "/v1/requests",
            Some(&acme),
            Some(&read("3.1", json!({"message": "Welcome to your smart meter"}))),
            202,
        )
        .await?;
    wait_done(&c, &acme, &ack).await?;
    let ihd = devices.iter().find(|(_, k)| k == "in-home-display").map(|(e, _)| e.clone()).unwrap_or_default();
    let view = fleet.fleet.ihd_view(ihd.parse()?).await?;
    println!("        the in-home display shows {:?}", view["message"].as_str().unwrap_or(""));
    let tomorrow = (hub.now() + jiff::SignedDuration::from_hours(24)).to_string();
    let mut future = read("4.1.1", json!({}));
    future["execute_at"] = json!(tomorrow);
    let ack = c
        .expect(
            "4.1.1 future-dated to tomorrow: held by the hub",
            Method::POST,
            "/v1/requests",
            Some(&acme),
            Some(&future),
            202,
        )
        .await?;
    println!("        status {}", ack["status"]);
    c.expect("a day passes", Method::POST, "/v1/clock/advance", Some(&operator), Some(&json!({"by": "P1D"})), 200)
        .await?;
    let r = wait_done(&c, &acme, &ack).await?;
    println!("        ran at {}", r["response"]["body"]["read_at"]);

    step(11, "A schedule the hub runs; reads streamed, batched per day, forwarded (R-RD-1, R-RD-2)");
    let start = (hub.now() + jiff::SignedDuration::from_hours(1)).to_string();
    let (_, before) = c.call(Method::GET, "/v1/responses?limit=1000", Some(&acme), None).await?;
    let seen = before.as_array().and_then(|a| a.last()).and_then(|r| r["seq"].as_i64()).unwrap_or(0);
    let ack = c
        .expect(
            "5.1 a daily profile read (4.8.1), answered by the hub at once",
            Method::POST,
            "/v1/requests",
            Some(&acme),
            Some(&read("5.1", json!({"srv": "4.8.1", "every": "day", "start": start}))),
            202,
        )
        .await?;
    let schedule_id = ack["id"].as_str().unwrap_or_default().to_string();
    println!("        schedule {schedule_id}: {}", ack["status"]);
    let mut streamed: Vec<Value> = Vec::new();
    for _ in 0..2 {
        c.expect("a day passes", Method::POST, "/v1/clock/advance", Some(&operator), Some(&json!({"by": "P1D"})), 200)
            .await?;
        // The dispatcher makes the run and reads the meter; follow the response stream.
        let want = streamed.len() + 1;
        for _ in 0..100 {
            let (_, v) =
                c.call(Method::GET, &format!("/v1/responses?after={seen}&limit=1000"), Some(&acme), None).await?;
            // Every response after the schedule's own (5.1) is a run of it.
            streamed = v.as_array().cloned().unwrap_or_default();
            streamed.retain(|r| r["request_id"].as_str() != Some(schedule_id.as_str()));
            if streamed.len() >= want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if streamed.len() < want {
            bail!("the schedule did not run: {streamed:?}");
        }
    }
    let today = domain::time::london_date(hub.now()).to_string();
    let batch = c
        .expect("the day's read batch", Method::GET, &format!("/v1/reads/days/{today}"), Some(&acme), None, 200)
        .await?;
    let batched: Vec<Value> =
        batch["reads"].as_array().map(|a| a.iter().map(|r| r["response"].clone()).collect()).unwrap_or_default();
    let last = streamed.last().cloned().unwrap_or_default();
    println!(
        "        {} runs streamed as collected; today's batch holds {} read(s); the same record both ways: {}",
        streamed.len(),
        batched.len(),
        batched.contains(&last)
    );
    if !batched.contains(&last) {
        bail!("the batch and the stream disagree");
    }
    let run_id = last["request_id"].as_str().unwrap_or_default();
    c.expect(
        "acme-energy forwards the read to the distributor (supplier hub principle)",
        Method::POST,
        &format!("/v1/reads/{run_id}/forward"),
        Some(&acme),
        Some(&json!({})),
        200,
    )
    .await?;
    let inbox = c
        .expect(
            "northern-wires sees the forwarded read",
            Method::GET,
            "/v1/reads/forwarded",
            Some(&tok("northern-wires")),
            None,
            200,
        )
        .await?;
    println!("        {} forwarded read(s)", inbox.as_array().map_or(0, Vec::len));
    c.expect(
        "5.3 delete the schedule",
        Method::POST,
        "/v1/requests",
        Some(&acme),
        Some(&read("5.3", json!({"schedule_id": schedule_id}))),
        202,
    )
    .await?;

    step(
        12,
        "Product: a tariff held by the meter until midnight, confirmed to the supplier; an inconsistent one refused (R-PM-1..5)",
    );
    let midnight = domain::time::start_of_london_day(domain::time::london_date(hub.now()).tomorrow()?)
        .map_err(anyhow::Error::msg)?;
    let tou = json!({"tariff": {"rates_mp_per_kwh": [27500, 11000],
                                 "switching": [{"at": "00:30", "rate": 1}, {"at": "07:30", "rate": 0}]},
                     "standing_charge_mp_per_day": 53000});
    let mut held = read("1.1.1", tou);
    held["execute_at"] = json!(midnight.to_string());
    let ack = c
        .expect(
            "1.1.1 an Economy 7 tariff from midnight (signed)",
            Method::POST,
            "/v1/requests",
            Some(&acme),
            Some(&held),
            202,
        )
        .await?;
    let r = sign_and_wait(&c, &acme, &ack, &acme_key).await?;
    println!("        the meter holds it until {}", r["response"]["body"]["held_until"]);
    let ack = c
        .expect(
            "2.1 emergency credit on a credit-mode meter (signed)",
            Method::POST,
            "/v1/requests",
            Some(&acme),
            Some(&read("2.1", json!({"emergency_credit": {"limit_pence": 500, "threshold_pence": 100}}))),
            202,
        )
        .await?;
    let r = sign_and_wait(&c, &acme, &ack, &acme_key).await?;
    println!("        {}: {}", r["response"]["outcome"], r["response"]["body"]["reason"]);
    if r["response"]["outcome"] != json!("device-refused") {
        bail!("an inconsistent product was not refused: {r}");
    }
    c.expect("a day passes", Method::POST, "/v1/clock/advance", Some(&operator), Some(&json!({"by": "P1D"})), 200)
        .await?;
    let ack = c
        .expect(
            "6.2 read the meter's configuration",
            Method::POST,
            "/v1/requests",
            Some(&acme),
            Some(&read("6.2", json!({}))),
            202,
        )
        .await?;
    let r = wait_done(&c, &acme, &ack).await?;
    let activation = &r["response"]["body"]["activations"][0];
    println!(
        "        in force since {} (alert 0x{:04X}), import register then {} Wh; rates {}",
        activation["at"],
        activation["alert"].as_u64().unwrap_or_default(),
        activation["import_wh"],
        r["response"]["body"]["product"]["tariff"]["rates_mp_per_kwh"]
    );

    let alerts = c.expect("acme-energy's alerts", Method::GET, "/v1/alerts", Some(&acme), None, 200).await?;
    let confirmation = alerts.as_array().and_then(|a| a.iter().find(|x| x["code"] == json!("0x8F66"))).cloned();
    match confirmation {
        Some(x) => println!("        {} {}: {}", x["code"], x["name"], x["detail"]),
        None => bail!("no confirmation of the held tariff reached the supplier: {alerts}"),
    }

    step(13, "Prepayment: a top-up by customer identifier, a GBCS UTRN, credited once (R-PAY-1..4)");
    let psp_body =
        json!({"id": "paypoint", "name": "PayPoint", "roles": ["PSP"], "originator": "90-B3-D5-1F-30-01-00-20"});
    c.expect("a payment service provider joins", Method::POST, "/v1/parties", Some(&operator), Some(&psp_body), 201)
        .await?;
    let t = c
        .expect("its API token", Method::POST, "/v1/parties/paypoint/tokens", Some(&operator), Some(&json!({})), 201)
        .await?;
    let psp = t["token"].as_str().context("token")?.to_string();
    let prepay = json!({"effective_from": hub.now().to_string(), "supplier": "acme-energy",
                        "network_operator": "northern-wires", "meter_type": "smart-compliant", "payment_mode": "prepayment"});
    c.expect(
        &format!("{home_mpan} goes over to prepayment now"),
        Method::POST,
        &format!("/v1/metering-points/{home_mpan}/registrations"),
        Some(&reg),
        Some(&prepay),
        201,
    )
    .await?;
    let customer = domain::customer::CustomerId::for_mpxn(domain::Mpxn::parse(&home_mpan)?).to_string();
    let v = c
        .expect(
            &format!("the customer's card reads {customer}: whose is it?"),
            Method::GET,
            &format!("/v1/customers/{}", customer.replace(' ', "")),
            Some(&psp),
            None,
            200,
        )
        .await?;
    println!("        {} supplied by {}, {}", v["mpxn"], v["supplier"], v["payment_mode"]);
    let pay = json!({"customer_id": customer, "amount_pence": 1000, "payment_reference": "DEMO-0001"});
    let t = c.expect("a £10.00 payment at the shop", Method::POST, "/v1/top-ups", Some(&psp), Some(&pay), 201).await?;
    let utrn = t["utrn"].as_str().unwrap_or_default().to_string();
    println!("        UTRN {utrn} (counter {}), on its way to the meter with SRV 2.2", t["counter"]);
    let mut credited = Value::Null;
    for _ in 0..100 {
        let (_, v) = c.call(Method::GET, "/v1/top-ups/DEMO-0001", Some(&psp), None).await?;
        if v["delivery"] == json!("completed") {
            credited = v["meter_response"].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!(
        "        the meter checked the UTRN and credited {} pence; balance {} pence",
        credited["body"]["credited_pence"], credited["body"]["balance_pence"]
    );
    if credited["outcome"] != json!("done") {
        bail!("the top-up was not credited: {credited}");
    }
    let again = c
        .expect("the till sends the same payment again", Method::POST, "/v1/top-ups", Some(&psp), Some(&pay), 200)
        .await?;
    println!("        the same top-up and UTRN back: {}", again["utrn"].as_str() == Some(utrn.as_str()));
    let meter = meter_of("electricity-meter").parse()?;
    let typed = fleet.fleet.keypad_entry(meter, &utrn).await?;
    println!("  the customer types the UTRN on the meter too: {}", serde_json::to_value(&typed)?["body"]["reason"]);
    let view = fleet.fleet.ihd_view(meter).await?;
    let balance = view["meters"].as_array().and_then(|m| m.first()).map(|m| m["balance_pence"].clone());
    println!("        the in-home display shows a balance of {} pence", balance.unwrap_or_default());

    step(14, "Change of supplier: objection window, objection withdrawn, switch instant (R-COS-1..6)");
    let nova_key = crypto::SigningKey::generate(&crypto::SystemRandom::new())?;
    let nova_body = json!({"id": "nova-energy", "name": "Nova Energy", "roles": ["IS", "GS"], "originator": "90-B3-D5-1F-30-01-00-21",
                           "signing_key_pem": crypto::public_key_pem(&nova_key.public_key_spki())});
    c.expect(
        "nova-energy (IS,GS), the incoming supplier",
        Method::POST,
        "/v1/parties",
        Some(&operator),
        Some(&nova_body),
        201,
    )
    .await?;
    let t = c
        .expect("its token", Method::POST, "/v1/parties/nova-energy/tokens", Some(&operator), Some(&json!({})), 201)
        .await?;
    let nova = t["token"].as_str().context("token")?.to_string();
    // The earliest supply start: the day the 5 working-day objection window closes (this
    // metering point is in Scotland: its bank holidays count).
    let mpan: domain::Mpan = home_mpan.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let closes = domain::switching::window_end(domain::calendar::Division::of_mpan(mpan), hub.now(), 5);
    let supply_start = domain::time::london_date(closes).to_string();
    let sw = c
        .expect(
            &format!("nova asks to supply {home_mpan} from {supply_start}"),
            Method::POST,
            "/v1/switches",
            Some(&nova),
            Some(&json!({"mpxn": home_mpan, "supply_start": supply_start})),
            201,
        )
        .await?;
    let id = sw["id"].as_i64().context("switch id")?;
    println!("        stage {}, objections until {}", sw["stage"], sw["deadline"]);
    let v =
        c.expect("acme objects", Method::POST, &format!("/v1/switches/{id}/object"), Some(&acme), None, 200).await?;
    println!("        resolve or unpick by {}", v["switch"]["deadline"]);
    c.expect("a day passes", Method::POST, "/v1/clock/advance", Some(&operator), Some(&json!({"by": "P1D"})), 200)
        .await?;
    let v = c
        .expect(
            "acme withdraws its objection",
            Method::POST,
            &format!("/v1/switches/{id}/withdraw-objection"),
            Some(&acme),
            None,
            200,
        )
        .await?;
    let switch_at = v["switch"]["switch_at"].as_str().context("switch instant")?.to_string();
    println!("        {}: nova supplies from {switch_at}; it is irrevocable now", v["switch"]["stage"]);
    let after: jiff::Timestamp = switch_at.parse()?;
    let to = (after + jiff::SignedDuration::from_hours(2)).to_string();
    c.expect(
        &format!("time moves to {to}"),
        Method::POST,
        "/v1/clock/advance",
        Some(&operator),
        Some(&json!({"to": to})),
        200,
    )
    .await?;
    let mut done = Value::Null;
    for _ in 0..200 {
        let (_, v) = c.call(Method::GET, &format!("/v1/switches/{id}"), Some(&nova), None).await?;
        if v["switch"]["stage"] == json!("completed") {
            done = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if done.is_null() {
        bail!("the switch did not complete");
    }
    let steps: Vec<&str> =
        done["events"].as_array().map(|e| e.iter().filter_map(|e| e["to"].as_str()).collect()).unwrap_or_default();
    println!("        steps: {}", steps.join(" -> "));
    println!(
        "        credentials {}; definitive reading {}",
        done["switch"]["credentials"], done["switch"]["definitive_reading"]
    );
    let (_, acme_view) = c.call(Method::GET, &format!("/v1/switches/{id}"), Some(&acme), None).await?;
    println!(
        "        acme sees the same reading: {}",
        acme_view["switch"]["definitive_reading"] == done["switch"]["definitive_reading"]
    );
    c.expect(
        "acme's disable-supply (7.2) now",
        Method::POST,
        "/v1/requests",
        Some(&acme),
        Some(&json!({"srv": "7.2", "target": {"mpxn": home_mpan}})),
        403,
    )
    .await?;
    let meter: domain::Eui64 = meter_of("electricity-meter").parse()?;
    let bytes = device::Command {
        id: device::RequestId { originator: "90-B3-D5-1F-30-01-00-02".parse()?, target: meter, counter: 1 << 40 },
        srv: "7.2".into(),
        execute_at: None,
        body: b"{}".to_vec(),
    }
    .encode();
    let signature = acme_key.sign(&crypto::SystemRandom::new(), &bytes)?;
    let access = device::Access { requester: device::Requester::Supplier, from: None, to: None };
    let o = hub::transport::DeviceTransport::send(
        fleet.fleet.as_ref(),
        hub::transport::DeviceMessage { target: meter, bytes, signature: Some(signature), access, image: None },
    )
    .await?;
    println!(
        "  the same, signed by acme and sent straight to the meter: {}",
        serde_json::to_value(&o)?["body"]["code"]
    );
    let r = c
        .expect(
            "acme reads its own period's daily log (4.17)",
            Method::POST,
            "/v1/requests",
            Some(&acme),
            Some(&json!({"srv": "4.17", "target": {"mpxn": home_mpan}})),
            202,
        )
        .await?;
    let r = wait_done(&c, &acme, &r).await?;
    println!("        {} .. {}: ends at the switch", r["response"]["body"]["from"], r["response"]["body"]["to"]);

    step(15, "Change of tenancy: the ESCO's consent ends, the new tenant sees nothing earlier (R-COT-1, R-COT-4)");
    let esco = tok("warmhomes-esco");
    c.expect(
        "WarmHomes records its customer's consent",
        Method::POST,
        &format!("/v1/metering-points/{home_mpan}/consents"),
        Some(&esco),
        Some(&json!({})),
        201,
    )
    .await?;
    let tomorrow = domain::time::london_date(hub.now()).tomorrow()?.to_string();
    let v = c
        .expect(
            &format!("nova notifies a change of tenancy from {tomorrow}"),
            Method::POST,
            &format!("/v1/metering-points/{home_mpan}/change-of-tenancy"),
            Some(&nova),
            Some(&json!({"tenancy_from": tomorrow})),
            201,
        )
        .await?;
    println!("        consents ending: {}; SRV 3.2 held until then: {}", v["consents_ended_for"], v["restriction"]);
    let (_, n) = c.call(Method::GET, "/v1/notices", Some(&esco), None).await?;
    println!("        WarmHomes is told: {}", n[0]["detail"]);
    c.expect("two days pass", Method::POST, "/v1/clock/advance", Some(&operator), Some(&json!({"by": "P2D"})), 200)
        .await?;
    let mut days = Value::Null;
    for _ in 0..200 {
        let view = fleet.fleet.ihd_view(meter).await?;
        let e = view["meters"].as_array().and_then(|m| m.iter().find(|m| m["fuel"] == json!("electricity")).cloned());
        if let Some(e) = e
            && e["days"].as_array().is_some_and(|d| d.len() == 1)
        {
            days = e["days"].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if days.is_null() {
        bail!("the display still shows the earlier tenant's days");
    }
    println!("  the new tenant's display shows only its own days: {days}");
    c.expect(
        "WarmHomes reads the profile now",
        Method::POST,
        "/v1/requests",
        Some(&esco),
        Some(&json!({"srv": "4.8.1", "target": {"mpxn": home_mpan}})),
        403,
    )
    .await?;

    step(16, "A critical command with a bad signature is refused by the device (R-SR-2)");
    let ack = c
        .expect(
            "8.1.1 again, signed with a key the meter does not trust",
            Method::POST,
            "/v1/requests",
            Some(&nova),
            Some(&json!({"srv": "8.1.1", "target": {"device": meter_of("electricity-meter")}})),
            202,
        )
        .await?;
    let stranger = crypto::SigningKey::generate(&crypto::SystemRandom::new())?;
    let r = sign_and_wait(&c, &nova, &ack, &stranger).await?;
    println!("        {}: {}", r["response"]["outcome"], r["response"]["body"]["reason"]);
    if r["response"]["outcome"] != json!("device-refused") {
        bail!("a forged signature was not refused: {r}");
    }
    let (_, trail) = c
        .call(Method::GET, &format!("/v1/requests/{}/audit", ack["id"].as_str().unwrap_or("")), Some(&nova), None)
        .await?;
    let events: Vec<&str> =
        trail.as_array().map(|a| a.iter().filter_map(|e| e["event"].as_str()).collect()).unwrap_or_default();
    println!("        audit trail: {}", events.join(" -> "));

    step(17, "A new in-home display for the new tenant: unjoin, HAN log, join (R-COT-2)");
    let premises_id = p["id"].as_i64().context("premises id")?;
    let old_ihd = meter_of("in-home-display");
    let chf = meter_of("comms-hub");
    let run = |srv: &'static str, target: Value, body: Value| {
        let (c, nova) = (&c, &nova);
        async move {
            let ack = c
                .expect(
                    &format!("SRV {srv} {body}"),
                    Method::POST,
                    "/v1/requests",
                    Some(nova),
                    Some(&json!({"srv": srv, "target": target, "body": body})),
                    202,
                )
                .await?;
            let r = wait_done(c, nova, &ack).await?;
            if r["response"]["outcome"] != json!("done") {
                bail!("SRV {srv} failed: {r}");
            }
            anyhow::Ok(r)
        }
    };
    run("8.8.2", json!({"mpxn": home_mpan}), json!({"device": old_ihd})).await?;
    let new = c
        .expect(
            "nova's installer fits a new display",
            Method::POST,
            &format!("/v1/premises/{premises_id}/devices"),
            Some(&nova),
            Some(&json!({"kind": "in-home-display"})),
            201,
        )
        .await?;
    let new_ihd = new["eui"].as_str().context("eui")?.to_string();
    let r = run("8.11", json!({"device": chf}), json!({"remove": [old_ihd], "add": [new_ihd]})).await?;
    println!("        the comms hub's HAN log now: {}", r["response"]["body"]["han_log"]);
    run("8.7.2", json!({"mpxn": home_mpan}), json!({"device": new_ihd})).await?;
    let (_, premises) = c.call(Method::GET, &format!("/v1/premises/{premises_id}"), Some(&nova), None).await?;
    for d in premises["devices"].as_array().into_iter().flatten().filter(|d| d["kind"] == json!("in-home-display")) {
        println!("        display {}: on the HAN {}, joined to {}", d["eui"], d["on_han"], d["joined_to"]);
    }
    let shows = |v: Value| v["meters"].as_array().map(|m| m.iter().map(|m| m["fuel"].clone()).collect::<Vec<_>>());
    println!(
        "        the old display shows {:?}; the new one {:?}",
        shows(fleet.fleet.ihd_view(old_ihd.parse()?).await?).unwrap_or_default(),
        shows(fleet.fleet.ihd_view(new_ihd.parse()?).await?).unwrap_or_default()
    );

    step(18, "Alerts: the dispatch table, a power cut, tamper, a signed webhook (R-FLT-2)");
    let webhooks = tokio::spawn(hub.clone().run_webhooks(std::time::Duration::from_millis(50)));
    let routes = c.expect("the dispatch table", Method::GET, "/v1/alert-routes", Some(&operator), None, 200).await?;
    for r in routes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| ["*", "0x8F36", "0x8F74", "hub.quarantine"].contains(&r["code"].as_str().unwrap_or("")))
    {
        println!("        {:<15} -> {}", r["code"].as_str().unwrap_or(""), r["recipients"]);
    }
    // nova's alert receiver: checks every push's signature.
    let received: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let secret: std::sync::Arc<std::sync::Mutex<String>> = Default::default();
    let hook_app = {
        let (received, secret) = (received.clone(), secret.clone());
        axum::Router::new().route(
            "/alerts",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (received, secret) = (received.clone(), secret.clone());
                async move {
                    let sig = headers.get("x-meterhub-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                    let (t, v1) = sig.split_once(',').unwrap_or(("", ""));
                    let t = t.trim_start_matches("t=");
                    let key = secret.lock().expect("secret").clone();
                    let mac = crypto::hmac_sha256(key.as_bytes(), format!("{t}.{body}").as_bytes());
                    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
                    if v1.trim_start_matches("v1=") != hex {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&body) {
                        received.lock().expect("received").extend(v["alerts"].as_array().cloned().unwrap_or_default());
                    }
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_addr = hook_listener.local_addr()?;
    let hook_server = tokio::spawn(axum::serve(hook_listener, hook_app).into_future());
    // What nova had before is acknowledged; the webhook carries what comes next.
    let (_, old) = c.call(Method::GET, "/v1/alerts?limit=1000", Some(&nova), None).await?;
    if let Some(last) = old.as_array().and_then(|a| a.last()) {
        c.expect(
            "nova acknowledges its alerts so far",
            Method::POST,
            "/v1/alerts/ack",
            Some(&nova),
            Some(&json!({"up_to": last["seq"]})),
            200,
        )
        .await?;
    }
    let w = c
        .expect(
            "nova sets its webhook",
            Method::PUT,
            "/v1/webhook",
            Some(&nova),
            Some(&json!({"url": format!("http://{hook_addr}/alerts")})),
            200,
        )
        .await?;
    *secret.lock().expect("secret") = w["secret"].as_str().unwrap_or_default().to_string();
    println!("  a power cut at the home");
    fleet.fleet.power_off(meter).await?;
    c.expect(
        "five minutes pass",
        Method::POST,
        "/v1/clock/advance",
        Some(&operator),
        Some(&json!({"by": "PT5M"})),
        200,
    )
    .await?;
    let wires = tok("northern-wires");
    let mut seen = Value::Null;
    for _ in 0..200 {
        let (_, v) = c.call(Method::GET, "/v1/alerts", Some(&wires), None).await?;
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            seen = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let first = seen.as_array().and_then(|a| a.first()).context("the comms hub did not report the outage")?;
    println!("        Northern Wires: {} {} ({})", first["code"], first["name"], first["detail"]);
    fleet.fleet.power_on(meter).await?;
    fleet.fleet.tamper(meter, 0x8F74).await?;
    let (_, v) = c.call(Method::GET, "/v1/alerts", Some(&wires), None).await?;
    println!("        Northern Wires, after power returns: {}", v.as_array().map_or(0, Vec::len));
    let mut pushed = Vec::new();
    for _ in 0..200 {
        pushed = received.lock().expect("received").clone();
        if pushed.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if pushed.len() < 3 {
        bail!("nova's webhook got {} alerts, not 3: {pushed:?}", pushed.len());
    }
    for a in &pushed {
        println!("        pushed to nova, signature checked: {} {}", a["code"], a["name"]);
    }
    let (_, op) = c.call(Method::GET, "/v1/alerts", Some(&operator), None).await?;
    println!(
        "        the hub operator: {}",
        op.as_array()
            .map(|a| a.iter().map(|a| a["code"].clone()).collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    step(19, "A stolen credential tries a mass disconnect (R-FLT-1, R-SR-5)");
    let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
    for _ in 0..300 {
        let (status, ack) = c
            .call(
                Method::POST,
                "/v1/requests",
                Some(&nova),
                Some(&json!({"srv": "7.2", "target": {"mpxn": home_mpan}})),
            )
            .await?;
        if status != 202 {
            bail!("7.2 submission answered {status}: {ack}");
        }
        *statuses.entry(ack["status"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    println!("        300 disable-supply requests with nova's token: {statuses:?}");
    if statuses.get("awaiting-signature") != Some(&100) || statuses.get("quarantined") != Some(&200) {
        bail!("the default threshold did not hold: {statuses:?}");
    }
    let (_, q) = c.call(Method::GET, "/v1/quarantine", Some(&nova), None).await?;
    println!("        held in quarantine, for nova to release or delete: {}", q.as_array().map_or(0, Vec::len));
    let (_, op) = c.call(Method::GET, "/v1/alerts", Some(&operator), None).await?;
    if let Some(a) = op.as_array().and_then(|a| a.iter().find(|a| a["code"] == json!("hub.quarantine"))) {
        println!("        the hub operator is alerted once: {}", a["detail"]);
    } else {
        bail!("the hub operator was not alerted");
    }
    hook_server.abort();
    webhooks.abort();

    step(20, "Firmware: a signed image, a campaign, activation by the supplier (R-FLT-3, R-FLT-4)");
    let image: Vec<u8> = b"MeterWorks ESME core 2.0.0 ".iter().copied().cycle().take(64 * 1024).collect();
    let hash: String = crypto::sha256(&image).iter().map(|b| format!("{b:02x}")).collect();
    let manifest = device::firmware::Manifest {
        image_hash: hash.clone(),
        layer: device::firmware::Layer::Core,
        version: "2.0.0".into(),
        device_kind: "electricity-meter".into(),
        supplier: None,
        urgency: device::firmware::Urgency::Security,
    };
    let signature = maker_key.sign(&crypto::SystemRandom::new(), &manifest.signed_bytes())?;
    {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        c.expect(
            "MeterWorks uploads core 2.0.0 (a security patch), signed",
            Method::POST,
            "/v1/firmware",
            Some(&tok("meterworks")),
            Some(&json!({"manifest": manifest, "signature_base64": b64(&signature), "image_base64": b64(&image)})),
            201,
        )
        .await?;
    }
    let camp = c
        .expect(
            "nova distributes it to the home's meter (SRV 11.1, one wave)",
            Method::POST,
            "/v1/firmware/campaigns",
            Some(&nova),
            Some(&json!({"image_hash": hash, "devices": [meter_of("electricity-meter")]})),
            201,
        )
        .await?;
    let mut view = Value::Null;
    for _ in 0..200 {
        let (_, v) = c.call(Method::GET, &format!("/v1/firmware/campaigns/{}", camp["id"]), Some(&nova), None).await?;
        if v["campaign"]["state"] != json!("running") {
            view = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!("        campaign {}: {}", view["campaign"]["state"], view["campaign"]["detail"]);
    if view["campaign"]["state"] != json!("completed") {
        bail!("the campaign did not complete: {view}");
    }
    let ack = c
        .expect(
            "nova activates it with SRV 11.3 (critical)",
            Method::POST,
            "/v1/requests",
            Some(&nova),
            Some(&json!({"srv": "11.3", "target": {"device": meter_of("electricity-meter")}, "body": {"image_hash": hash}})),
            202,
        )
        .await?;
    let r = sign_and_wait(&c, &nova, &ack, &nova_key).await?;
    println!("        the meter: {}", r["response"]["body"]);
    let ack = c
        .expect(
            "11.2 reads the running version",
            Method::POST,
            "/v1/requests",
            Some(&nova),
            Some(&json!({"srv": "11.2", "target": {"device": meter_of("electricity-meter")}})),
            202,
        )
        .await?;
    let r = wait_done(&c, &nova, &ack).await?;
    println!("        running firmware {}", r["response"]["body"]["firmware"]);
    if r["response"]["body"]["firmware"] != json!("2.0.0") {
        bail!("firmware 2.0.0 is not running: {r}");
    }

    step(21, "The API describes itself");
    let doc = c.expect("OpenAPI document", Method::GET, "/openapi.json", None, None, 200).await?;
    println!(
        "        {} paths; the catalogue table is in its description",
        doc["paths"].as_object().map_or(0, |p| p.len())
    );
    let (status, _) = c.call(Method::GET, "/docs/", None, None).await?;
    println!("  GET /docs/ -> {status}  Swagger UI (vendored, no download)");
    if status != 200 {
        bail!("/docs/ answered {status}");
    }

    server.abort();
    dispatcher.abort();
    hub.drain_dispatch().await;
    waker.abort();
    fleet.close().await;
    store.close().await;
    println!("\nEvery step behaved as expected. Run `meterhub serve` and open http://127.0.0.1:8080/docs to explore.");
    Ok(())
}
