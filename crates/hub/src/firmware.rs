//! Firmware (R-FLT-3, R-FLT-4). A manufacturer uploads an image with its manifest (layer,
//! version, device kind, urgency; an application layer names its supplier), signed with its
//! registered key; the hub checks the signature and the hash so it never distributes junk,
//! and the device checks both again against the key it was built with.
//!
//! A supplier distributes an image to its devices with a campaign: SRV 11.1 to each device
//! (the hub attaches the image), in waves. After each wave the failure rate (devices that
//! refused the image or could not be reached) is checked: beyond the campaign's limit the
//! campaign halts, and the supplier and the hub operator are alerted. Security patches go
//! first: each scheduler pass moves security campaigns before routine ones, within one
//! bound on the requests a pass may queue. Activation is the supplier's own critical
//! SRV 11.3, signed and verified by the device, possibly future-dated.

use base64::Engine as _;
use device::firmware::{IMAGE_BYTES_MAX, Layer, Manifest, Urgency};
use domain::Eui64;
use domain::alerts::HubAlert;
use serde_json::{Value, json};
use store::{CampaignDevice, CampaignRecord, CampaignStep, FirmwareImage, RequestStatus, ResponseOutcome};

use crate::{Caller, Hub, HubError};

/// Devices in one campaign, at most (DUIS: about 50,000 per 11.1 request).
pub const CAMPAIGN_DEVICES_MAX: usize = 50_000;
/// Default wave of a routine campaign; a security patch goes in one wave unless told.
pub const WAVE_SIZE_DEFAULT: u32 = 100;
/// Default failure rate beyond which a campaign halts.
pub const FAILURE_RATE_MAX_DEFAULT: f64 = 0.1;
/// Campaigns moved by one scheduler pass.
pub const CAMPAIGNS_PER_PASS: usize = 32;
/// 11.1 requests one scheduler pass may queue, across campaigns (security first).
pub const REQUESTS_PER_PASS: usize = 2_000;

/// An image as uploaded: text, checked here and named on error.
#[derive(Debug, Clone)]
pub struct ImageInput {
    pub manifest: Value,
    pub signature_base64: String,
    pub image_base64: String,
}

/// A campaign as asked for.
#[derive(Debug, Clone, Default)]
pub struct CampaignInput {
    pub image_hash: String,
    pub devices: Vec<String>,
    pub wave_size: Option<u32>,
    pub failure_rate_max: Option<f64>,
}

fn decode(field: &str, text: &str) -> Result<Vec<u8>, HubError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| HubError::invalid(field, format!("not base64: {e}")))
}

pub fn manifest_of(image: &FirmwareImage) -> Result<Manifest, HubError> {
    serde_json::from_str(&image.manifest)
        .map_err(|e| HubError::Unavailable(format!("stored manifest of {} is unreadable: {e}", image.hash)))
}

impl Hub {
    /// A manufacturer uploads a signed image.
    pub async fn upload_firmware(&self, caller: &Caller, input: &ImageInput) -> Result<FirmwareImage, HubError> {
        self.authorize(caller, "firmware.upload", None)?;
        let manifest: Manifest = serde_json::from_value(input.manifest.clone())
            .map_err(|e| HubError::invalid("manifest", format!("{e}")))?;
        manifest.check().map_err(|(field, rule)| HubError::invalid(format!("manifest.{field}"), rule))?;
        if !["electricity-meter", "gas-meter", "comms-hub", "in-home-display", "ppmid", "additional"]
            .contains(&manifest.device_kind.as_str())
        {
            return Err(HubError::invalid("manifest.device_kind", "a device kind, e.g. electricity-meter"));
        }
        let image = decode("image_base64", &input.image_base64)?;
        if image.is_empty() || image.len() > IMAGE_BYTES_MAX {
            return Err(HubError::invalid("image_base64", format!("1 to {IMAGE_BYTES_MAX} bytes")));
        }
        if device::firmware::hex(&domain::crypto::sha256(&image)) != manifest.image_hash {
            return Err(HubError::invalid("image_base64", "the image does not hash to manifest.image_hash"));
        }
        let signature = decode("signature_base64", &input.signature_base64)?;
        let key = caller.party.signing_key_spki.as_ref().ok_or_else(|| {
            HubError::invalid("signature_base64", "you have no registered signing key: devices could not verify it")
        })?;
        if !domain::crypto::verify_p256(key, &manifest.signed_bytes(), &signature) {
            return Err(HubError::invalid(
                "signature_base64",
                "does not verify with your registered key over the manifest's signed bytes",
            ));
        }
        let record = FirmwareImage {
            hash: manifest.image_hash.clone(),
            manufacturer: caller.party.id.clone(),
            manifest: serde_json::to_string(&manifest).expect("a manifest serialises"),
            signature,
            size: image.len() as u64,
            uploaded_at: self.now(),
        };
        self.store().insert_firmware_image(record.clone(), image).await?;
        tracing::info!(message = "Firmware uploaded.", hash = %record.hash, by = %caller.party.id, layer = manifest.layer.as_str(), version = %manifest.version);
        Ok(record)
    }

    pub async fn firmware_images(&self, caller: &Caller) -> Result<Vec<FirmwareImage>, HubError> {
        self.authorize(caller, "firmware.read", None)?;
        Ok(self.store().firmware_images().await?)
    }

    /// Start a campaign: every device is checked now as SRV 11.1 would be (the caller must
    /// be its registered supplier); the waves go out as the scheduler runs.
    pub async fn start_campaign(&self, caller: &Caller, input: &CampaignInput) -> Result<CampaignRecord, HubError> {
        self.check_role(caller, "firmware.distribute")?;
        let image = self
            .store()
            .firmware_image(&input.image_hash)
            .await?
            .ok_or_else(|| HubError::invalid("image_hash", format!("no image {} is uploaded", input.image_hash)))?;
        let manifest = manifest_of(&image)?;
        if manifest.layer == Layer::Application && manifest.supplier != Some(caller.party.originator) {
            return Err(HubError::invalid(
                "image_hash",
                "an application layer is distributed by its own supplier only",
            ));
        }
        if input.devices.is_empty() || input.devices.len() > CAMPAIGN_DEVICES_MAX {
            return Err(HubError::invalid("devices", format!("1 to {CAMPAIGN_DEVICES_MAX} devices")));
        }
        let mut euis: Vec<Eui64> = Vec::with_capacity(input.devices.len());
        let body = self.distribution_body(&image, &manifest);
        let now = self.now();
        for (i, text) in input.devices.iter().enumerate() {
            let field = format!("devices[{i}]");
            let eui = Eui64::parse(text).map_err(|e| HubError::invalid(&field, e.to_string()))?;
            if euis.contains(&eui) {
                return Err(HubError::invalid(&field, "listed twice"));
            }
            let d = self.store().device(eui).await?.ok_or_else(|| HubError::invalid(&field, "no such device"))?;
            if d.kind != manifest.device_kind {
                return Err(HubError::invalid(
                    &field,
                    format!("a {}, the image is for a {}", d.kind, manifest.device_kind),
                ));
            }
            self.plan(&caller.party, "11.1", d, None, &body, now)
                .await
                .map_err(|e| HubError::invalid(&field, e.to_string()))?;
            euis.push(eui);
        }
        let wave_size = match (input.wave_size, manifest.urgency) {
            (Some(w), _) if w >= 1 => w,
            (Some(_), _) => return Err(HubError::invalid("wave_size", "at least 1")),
            (None, Urgency::Security) => euis.len() as u32,
            (None, Urgency::Routine) => WAVE_SIZE_DEFAULT,
        };
        let failure_rate_max = input.failure_rate_max.unwrap_or(FAILURE_RATE_MAX_DEFAULT);
        if !(0.0..=1.0).contains(&failure_rate_max) {
            return Err(HubError::invalid("failure_rate_max", "0 to 1"));
        }
        let c = CampaignRecord {
            seq: 0,
            party: caller.party.id.clone(),
            image_hash: image.hash.clone(),
            urgency: manifest.urgency.as_str().into(),
            wave_size,
            failure_rate_max,
            state: "running".into(),
            waves_sent: 0,
            detail: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let c = self.store().insert_campaign(c, euis).await?;
        self.inner.work.notify_one();
        tracing::info!(message = "Firmware campaign started.", campaign = c.seq, by = %caller.party.id, devices = input.devices.len(), urgency = %c.urgency, wave_size);
        Ok(c)
    }

    fn distribution_body(&self, image: &FirmwareImage, manifest: &Manifest) -> Value {
        json!({"manifest": manifest, "signature": base64::engine::general_purpose::STANDARD.encode(&image.signature)})
    }

    /// A campaign with its devices (its party, or the hub operator).
    pub async fn campaign(&self, caller: &Caller, seq: i64) -> Result<(CampaignRecord, Vec<CampaignDevice>), HubError> {
        self.check_role(caller, "firmware.distribute")?;
        let c = self.store().campaign(seq).await?.ok_or_else(|| HubError::NotFound(format!("no campaign {seq}")))?;
        if c.party != caller.party.id && !caller.party.roles.contains(domain::Role::HubOperator) {
            return Err(HubError::NotFound(format!("no campaign {seq}")));
        }
        let devices = self.store().campaign_devices(seq).await?;
        Ok((c, devices))
    }

    /// The caller's campaigns (every one, for the hub operator), newest first.
    pub async fn campaigns(&self, caller: &Caller) -> Result<Vec<CampaignRecord>, HubError> {
        self.check_role(caller, "firmware.distribute")?;
        let party = (!caller.party.roles.contains(domain::Role::HubOperator)).then(|| caller.party.id.clone());
        Ok(self.store().campaigns(party, 500).await?)
    }

    /// Cancel a running campaign (its party, or the hub operator): devices not yet sent are
    /// never sent; 11.1s already queued run, and a held image does nothing until activated.
    pub async fn cancel_campaign(&self, caller: &Caller, seq: i64) -> Result<CampaignRecord, HubError> {
        let (c, _) = self.campaign(caller, seq).await?;
        if c.state != "running" {
            return Err(HubError::Conflict(format!("campaign {seq} is {}, not running", c.state)));
        }
        let step = CampaignStep {
            seq,
            version: c.version,
            state: "cancelled".into(),
            waves_sent: c.waves_sent,
            detail: Some(format!("cancelled by {} after {} wave(s)", caller.party.id, c.waves_sent)),
            at: self.now(),
            sent: Vec::new(),
            outcomes: Vec::new(),
        };
        Ok(self.store().step_campaign(step).await?)
    }

    /// Move every running campaign on: learn its wave's outcomes, halt it or send the next
    /// wave. Security patches first. Returns how many moved.
    pub async fn run_campaigns_due(&self) -> Result<usize, HubError> {
        let mut budget = REQUESTS_PER_PASS;
        let mut moved = 0;
        for c in self.store().running_campaigns(CAMPAIGNS_PER_PASS).await? {
            match self.step_campaign(&c, &mut budget).await {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(HubError::Conflict(m)) => {
                    tracing::debug!(message = "Campaign moved meanwhile.", campaign = c.seq, detail = %m)
                }
                Err(e) => tracing::error!(message = "Campaign step failed; retrying.", campaign = c.seq, error = %e),
            }
        }
        Ok(moved)
    }

    async fn step_campaign(&self, c: &CampaignRecord, budget: &mut usize) -> Result<bool, HubError> {
        let now = self.now();
        let mut devices = self.store().campaign_devices(c.seq).await?;
        let mut step = CampaignStep {
            seq: c.seq,
            version: c.version,
            state: c.state.clone(),
            waves_sent: c.waves_sent,
            detail: c.detail.clone(),
            at: now,
            sent: Vec::new(),
            outcomes: Vec::new(),
        };
        // What the current wave's requests came to.
        let mut pending = 0;
        for d in devices.iter_mut().filter(|d| d.wave == Some(c.waves_sent) && d.outcome.is_none()) {
            let Some(id) = &d.request_id else { continue };
            let (outcome, detail) = match self.store().request(id).await? {
                Some((_, Some(resp))) => match resp.outcome {
                    ResponseOutcome::Done => ("received", None),
                    ResponseOutcome::DeviceRefused => ("refused", Some(resp.body)),
                    ResponseOutcome::Failed => ("failed", Some(resp.body)),
                },
                Some((r, None)) if matches!(r.status, RequestStatus::Cancelled | RequestStatus::Deleted) => {
                    ("failed", Some(format!("request {}", r.status.as_str())))
                }
                None => ("failed", Some(format!("request {id} is gone"))),
                Some(_) => {
                    pending += 1;
                    continue;
                }
            };
            // Known from now on in this pass as well as in the store.
            d.outcome = Some(outcome.to_string());
            step.outcomes.push((d.idx, outcome.to_string(), detail));
        }
        if pending > 0 {
            if step.outcomes.is_empty() {
                return Ok(false);
            }
            self.store().step_campaign(step).await?;
            return Ok(true);
        }
        // The wave is over: judge it.
        if c.waves_sent > 0 {
            let wave: Vec<&CampaignDevice> = devices.iter().filter(|d| d.wave == Some(c.waves_sent)).collect();
            let failures = wave.iter().filter(|d| d.outcome.as_deref() != Some("received")).count();
            let rate = failures as f64 / wave.len().max(1) as f64;
            if rate > c.failure_rate_max {
                step.state = "halted".into();
                step.detail = Some(format!(
                    "wave {} failed on {failures} of {} devices ({:.0}%, limit {:.0}%): the rest are not sent",
                    c.waves_sent,
                    wave.len(),
                    rate * 100.0,
                    c.failure_rate_max * 100.0
                ));
                self.store().step_campaign(step.clone()).await?;
                tracing::error!(
                    message = "Firmware campaign halted.",
                    campaign = c.seq,
                    detail = step.detail.as_deref().unwrap_or("")
                );
                self.raise(
                    HubAlert::FirmwareDistributionFailed,
                    Some(&c.party),
                    None,
                    None,
                    format!("campaign {} of image {} halted: {}", c.seq, c.image_hash, step.detail.unwrap_or_default()),
                    json!({"campaign": c.seq, "image_hash": c.image_hash, "wave": c.waves_sent, "failures": failures}),
                )
                .await;
                return Ok(true);
            }
        }
        let unsent: Vec<&CampaignDevice> = devices.iter().filter(|d| d.wave.is_none()).collect();
        if unsent.is_empty() {
            step.state = "completed".into();
            let received = devices.iter().filter(|d| d.outcome.as_deref() == Some("received")).count();
            step.detail = Some(format!("{received} of {} devices hold the image", devices.len()));
            self.store().step_campaign(step).await?;
            return Ok(true);
        }
        // A wave goes whole or waits for the next pass (a partial wave would be judged on
        // too few devices); one bigger than a whole pass's budget goes alone.
        if (c.wave_size as usize) > *budget && *budget < REQUESTS_PER_PASS {
            return Ok(false);
        }
        // The next wave.
        let image = self
            .store()
            .firmware_image(&c.image_hash)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("image {}", c.image_hash)))?;
        let manifest = manifest_of(&image)?;
        let body = self.distribution_body(&image, &manifest);
        let party =
            self.store().party(&c.party).await?.ok_or_else(|| HubError::NotFound(format!("party {}", c.party)))?;
        let wave = c.waves_sent + 1;
        let take = c.wave_size as usize;
        for d in unsent.into_iter().take(take) {
            let built = match self.store().device(d.device).await? {
                Some(rec) => self.hub_request(&party, "11.1", rec, None, body.clone(), now, false).await,
                None => Err(HubError::NotFound(format!("device {}", d.device))),
            };
            match built {
                Ok(r) => step.sent.push((d.idx, wave, Some(r))),
                // Not allowed any more (the device changed supplier ...): a failure of this wave.
                Err(e) => {
                    step.sent.push((d.idx, wave, None));
                    step.outcomes.push((d.idx, "failed".into(), Some(format!("not sent: {e}"))));
                }
            }
        }
        *budget = budget.saturating_sub(step.sent.len());
        step.waves_sent = wave;
        let sent = step.sent.len();
        self.store().step_campaign(step).await?;
        self.inner.work.notify_one();
        tracing::info!(message = "Firmware wave sent.", campaign = c.seq, wave, devices = sent);
        Ok(true)
    }
}
