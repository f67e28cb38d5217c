//! Prepayment top-ups (R-PAY-1..4). A payment service provider takes a payment for a
//! customer identifier; the hub finds the metering point and its registered supplier from
//! the registry alone, applies the supplier's rules, makes the GBCS UTRN with the supplier's
//! prepayment key and the next counter for (supplier, meter), and sends it to the meter with
//! SRV 2.2 through the ordinary pipeline; the UTRN also goes back to the payer, to type in
//! if the meter cannot be reached.
//!
//! Rules decided here:
//! - The hub keeps one prepayment key-agreement key per supplier, made when the supplier
//!   first installs a meter (meters trust its public half from installation) and never
//!   shown. UTRN counters are kept per (supplier, meter) and never reused; a crash between
//!   reserving one and storing the top-up leaves a gap, which the meter accepts.
//! - A top-up and its SRV 2.2 request are stored together, once per (provider, payment
//!   reference): the same reference again returns the same top-up and UTRN, and the meter
//!   credits a UTRN once whatever is delivered twice.
//! - Supplier confirmation (R-PAY-2): a supplier that registered an endpoint is asked over
//!   HTTP (`POST` JSON, see [`Hub::set_payment_endpoint`]) and decides; no answer within its
//!   timeout refuses the top-up and nothing is stored or credited. A supplier without one is
//!   judged by the hub's stored rules: the metering point must be registered in prepayment
//!   mode, and a top-up is 1p to £250. Up to £81.91 the UTRN carries pennies; above that,
//!   whole pounds only (at most £8,191, the UTRN's limit).

use domain::crypto::KeyAgreementKey;
use domain::customer::CustomerId;
use domain::registry::PaymentMode;
use domain::utrn::{self, ValueClass};
use domain::{Mpxn, PartyId};
use serde_json::json;
use store::{RequestRecord, RequestStatus, ResponseRecord, TopUpRecord};

use crate::{Caller, Hub, HubError};

/// Largest top-up the hub's stored supplier rules accept, pence.
pub const TOP_UP_PENCE_MAX: u64 = 25_000;
/// Largest amount a UTRN can carry, pence (8191 pounds).
pub const UTRN_PENCE_MAX: u64 = 819_100;
/// A supplier endpoint's answer time: default and bounds, milliseconds.
pub const CONFIRM_TIMEOUT_MS_DEFAULT: u32 = 5_000;
pub const CONFIRM_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=30_000;
/// Longest answer read from a supplier's endpoint.
const ANSWER_BYTES_MAX: usize = 16 * 1024;

/// Takes a payment reference out of the in-flight set when the attempt ends, however it ends.
struct InFlight<'a> {
    hub: &'a Hub,
    key: (PartyId, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.hub.inner.top_ups_in_flight.lock().expect("in-flight set").remove(&self.key);
    }
}
/// Longest payment reference.
pub const PAYMENT_REFERENCE_MAX: usize = 64;

fn invalid(field: &str, rule: impl Into<String>) -> HubError {
    HubError::invalid(field, rule)
}

/// What a payment service provider submits.
#[derive(Debug, Clone)]
pub struct TopUpInput {
    pub customer_id: String,
    pub amount_pence: i64,
    pub payment_reference: String,
}

/// A customer identifier looked up: its metering point and who supplies it now.
#[derive(Debug, Clone)]
pub struct CustomerView {
    pub customer_id: CustomerId,
    pub mpxn: Mpxn,
    pub supplier: PartyId,
    pub payment_mode: Option<PaymentMode>,
}

/// The value and class a UTRN carries for an amount.
fn utrn_value(amount_pence: u64) -> Result<(ValueClass, u32), HubError> {
    if amount_pence <= u64::from(utrn::VALUE_MAX) {
        Ok((ValueClass::Pennies, amount_pence as u32))
    } else if amount_pence.is_multiple_of(100) {
        Ok((ValueClass::Pounds, (amount_pence / 100) as u32))
    } else {
        Err(invalid("amount_pence", "above £81.91 a top-up is in whole pounds (a UTRN carries pennies up to 8191)"))
    }
}

impl Hub {
    /// A supplier's prepayment key, made on first use.
    async fn prepayment_key(&self, supplier: &PartyId) -> Result<KeyAgreementKey, HubError> {
        let (der, _) = match self.store().prepayment_key(supplier).await? {
            Some(k) => k,
            None => {
                let fresh = KeyAgreementKey::generate().map_err(|e| HubError::Unavailable(e.to_string()))?;
                let der = fresh.pkcs8_der().map_err(|e| HubError::Unavailable(e.to_string()))?;
                // Two first uses at once keep the same key: the store keeps the first.
                self.store().keep_prepayment_key(supplier, der, fresh.public_point(), self.now()).await?
            }
        };
        KeyAgreementKey::from_pkcs8_der(&der).map_err(|e| HubError::Unavailable(format!("stored prepayment key: {e}")))
    }

    /// The public half of a supplier's prepayment key (made on first use), for meters to trust.
    pub async fn prepayment_point(&self, supplier: &PartyId) -> Result<Vec<u8>, HubError> {
        Ok(self.prepayment_key(supplier).await?.public_point())
    }

    fn parse_customer(&self, text: &str) -> Result<CustomerId, HubError> {
        CustomerId::parse_with(text, self.config().id_rules).map_err(|e| invalid("customer_id", e.to_string()))
    }

    /// R-PAY-1: a customer identifier's metering point and registered supplier, from the
    /// registry alone.
    pub async fn customer(&self, caller: &Caller, customer_id: &str) -> Result<CustomerView, HubError> {
        self.authorize(caller, "payment.top-up", None)?;
        self.lookup_customer(self.parse_customer(customer_id)?).await
    }

    async fn lookup_customer(&self, id: CustomerId) -> Result<CustomerView, HubError> {
        let mpxn = id.mpxn();
        let reg = self
            .store()
            .registration_at(mpxn, self.now(), None)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("metering point {mpxn} has no registration now")))?;
        Ok(CustomerView { customer_id: id, mpxn, supplier: reg.data.supplier, payment_mode: reg.data.payment_mode })
    }

    /// Take a top-up (R-PAY-2, R-PAY-3). Returns it and whether it is new (false: the
    /// payment reference was seen before and this is the same top-up again).
    pub async fn top_up(&self, caller: &Caller, input: &TopUpInput) -> Result<(TopUpRecord, bool), HubError> {
        let reference = input.payment_reference.trim();
        if reference.is_empty()
            || reference.chars().count() > PAYMENT_REFERENCE_MAX
            || reference.chars().any(char::is_control)
        {
            return Err(invalid("payment_reference", format!("1 to {PAYMENT_REFERENCE_MAX} printable characters")));
        }
        if input.amount_pence < 1 {
            return Err(invalid("amount_pence", "a whole number of pence, at least 1"));
        }
        let amount = input.amount_pence as u64;
        // A reference seen before is answered from the record, whatever the registry says now.
        self.authorize(caller, "payment.top-up", None)?;
        let asked = self.parse_customer(&input.customer_id)?;
        if let Some(done) = self.store().top_up(&caller.party.id, reference).await? {
            return same_again(done, asked.mpxn(), amount);
        }
        // One attempt per reference at a time, so a supplier is never asked twice for one payment.
        let key = (caller.party.id.clone(), reference.to_string());
        if !self.inner.top_ups_in_flight.lock().expect("in-flight set").insert(key.clone()) {
            return Err(HubError::Conflict(format!(
                "a top-up with reference {reference:?} is being taken right now; ask again for its result"
            )));
        }
        let _release = InFlight { hub: self, key };
        let view = self.lookup_customer(asked).await?;
        let supplier = view.supplier.clone();
        if amount > UTRN_PENCE_MAX {
            return Err(invalid("amount_pence", format!("a UTRN carries at most {UTRN_PENCE_MAX} pence")));
        }
        let (class, value) = utrn_value(amount)?;
        let meter = self.store().device_for_mpxn(view.mpxn).await?.ok_or_else(|| {
            HubError::Conflict(format!("metering point {} has no enrolled smart meter (R-REG-2)", view.mpxn))
        })?;
        // The meter checks UTRNs with the key of the supplier it trusts: a UTRN made with
        // another's would take the payment and credit nothing.
        let trusted = self.trusted_supplier_of(&meter).await?;
        if trusted != supplier {
            return Err(HubError::Conflict(format!(
                "the meter of {} trusts {trusted}'s keys, not the registered supplier {supplier}'s (change of supplier \
                 credentials not done); nothing was issued",
                view.mpxn
            )));
        }
        // The supplier has the last word (asked once everything the hub can check holds).
        self.supplier_confirms(&caller.party.id, &view, amount, reference).await?;
        let owner = self.store().party(&supplier).await?.ok_or_else(|| {
            HubError::Conflict(format!("the registered supplier {supplier} is not a party of the hub"))
        })?;
        let transport = self
            .inner
            .transport
            .get()
            .ok_or_else(|| HubError::Unavailable("no device transport is attached".into()))?;
        let point = transport
            .key_agreement_point(meter.eui)
            .await
            .map_err(|e| HubError::Unavailable(format!("the meter's certificate: {e}")))?;
        let key = self.prepayment_key(&supplier).await?;
        let z = key.shared_secret(&point).map_err(|e| HubError::Unavailable(format!("the meter's key: {e}")))?;
        let n = self.store().next_utrn_counter(&supplier, meter.eui).await?;
        let counter = n << 32;
        let code = utrn::generate(&z, owner.originator, meter.eui, counter, class, value)
            .map_err(|e| HubError::Unavailable(format!("cannot make the UTRN: {e}")))?;

        // The SRV 2.2 that carries it, sent for the supplier.
        let now = self.now();
        let request_counter = self.next_request_counter(owner.originator).await?;
        let id = device::RequestId { originator: owner.originator, target: meter.eui, counter: request_counter };
        let body = json!({"utrn": code}).to_string();
        let command = device::Command { id, srv: "2.2".into(), execute_at: None, body: body.clone().into_bytes() };
        let request = RequestRecord {
            seq: 0,
            id: id.to_string(),
            party: supplier.clone(),
            srv: "2.2".into(),
            target: meter.eui,
            mpxn: Some(view.mpxn),
            body,
            precommand: command.encode(),
            signature: None,
            submitted_at: now,
            execute_at: None,
            status: RequestStatus::Queued,
            status_at: now,
            note: Some(format!("top-up {reference} by {}", caller.party.id)),
            schedule_id: None,
        };
        let record = TopUpRecord {
            seq: 0,
            psp: caller.party.id.clone(),
            payment_reference: reference.to_string(),
            customer_id: view.customer_id.digits(),
            mpxn: view.mpxn,
            supplier,
            meter: meter.eui,
            amount_pence: amount,
            counter,
            utrn: code,
            request_id: id.to_string(),
            at: now,
        };
        match self.store().insert_top_up(record, request).await {
            Ok(t) => {
                metrics::counter!("meterhub_top_ups_total").increment(1);
                tracing::info!(message = "Top-up issued.", psp = %t.psp, reference = %t.payment_reference, mpxn = %t.mpxn, pence = t.amount_pence);
                self.inner.work.notify_one();
                Ok((t, true))
            }
            // The same reference arrived twice at once: the first one stands.
            Err(store::StoreError::Conflict(m)) => match self.store().top_up(&caller.party.id, reference).await? {
                Some(done) => same_again(done, view.mpxn, amount),
                None => Err(HubError::Conflict(m)),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// R-PAY-2: the registered supplier accepts the top-up, over HTTP when it registered an
    /// endpoint, by the hub's stored rules otherwise.
    async fn supplier_confirms(
        &self,
        psp: &PartyId,
        view: &CustomerView,
        amount: u64,
        reference: &str,
    ) -> Result<(), HubError> {
        let supplier = &view.supplier;
        let Some((url, timeout_ms)) = self.store().payment_endpoint(supplier).await? else {
            if view.payment_mode != Some(PaymentMode::Prepayment) {
                return Err(HubError::Conflict(format!(
                    "refused by {supplier}: metering point {} is not in prepayment mode",
                    view.mpxn
                )));
            }
            if amount > TOP_UP_PENCE_MAX {
                return Err(invalid(
                    "amount_pence",
                    format!("{supplier} accepts top-ups of at most {TOP_UP_PENCE_MAX} pence"),
                ));
            }
            return Ok(());
        };
        static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
        // No redirects: the hub asks the endpoint the supplier registered, nowhere else.
        let client = CLIENT.get_or_init(|| {
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default()
        });
        let question = json!({
            "customer_id": view.customer_id.digits(),
            "mpxn": view.mpxn.to_string(),
            "payment_mode": view.payment_mode.map(|p| p.to_string()),
            "amount_pence": amount,
            "payment_reference": reference,
            "payment_service_provider": psp.as_str(),
        });
        let unavailable = |why: String| {
            tracing::warn!(message = "Supplier did not confirm a top-up.", supplier = %supplier, reason = %why);
            metrics::counter!("meterhub_top_up_confirmations_failed_total").increment(1);
            HubError::Unavailable(format!(
                "{supplier} did not confirm the top-up ({why}); nothing was issued or credited"
            ))
        };
        let answer = client
            .post(&url)
            .json(&question)
            .timeout(std::time::Duration::from_millis(u64::from(timeout_ms)))
            .send()
            .await
            .map_err(|e| {
                unavailable(if e.is_timeout() { format!("no answer within {timeout_ms} ms") } else { e.to_string() })
            })?;
        if !answer.status().is_success() {
            return Err(unavailable(format!("its endpoint answered HTTP {}", answer.status().as_u16())));
        }
        // Read at most ANSWER_BYTES_MAX of the answer.
        let mut answer = answer;
        let mut bytes = Vec::new();
        while let Some(chunk) = answer.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > ANSWER_BYTES_MAX {
                return Err(unavailable(format!("its answer is longer than {ANSWER_BYTES_MAX} bytes")));
            }
        }
        let body: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| unavailable(format!("its answer is not JSON: {e}")))?;
        match body.get("accepted").and_then(serde_json::Value::as_bool) {
            Some(true) => Ok(()),
            Some(false) => Err(HubError::Conflict(format!(
                "refused by {supplier}: {}",
                body.get("reason").and_then(serde_json::Value::as_str).unwrap_or("no reason given")
            ))),
            None => Err(unavailable("its answer has no \"accepted\": true or false".into())),
        }
    }

    /// A supplier registers (or with `None` removes) the endpoint that confirms its top-ups.
    /// The hub `POST`s JSON `{customer_id, mpxn, payment_mode, amount_pence,
    /// payment_reference, payment_service_provider}` and expects HTTP 200 with
    /// `{"accepted": true}` or `{"accepted": false, "reason": "..."}`.
    pub async fn set_payment_endpoint(
        &self,
        caller: &Caller,
        endpoint: Option<(&str, Option<u32>)>,
    ) -> Result<Option<(String, u32)>, HubError> {
        self.authorize(caller, "payment.endpoint-own", None)?;
        let endpoint = match endpoint {
            None => None,
            Some((url, timeout)) => {
                let parsed = reqwest::Url::parse(url).map_err(|e| invalid("url", e.to_string()))?;
                if parsed.scheme() != "http" {
                    return Err(invalid(
                        "url",
                        "http:// only: this build's client has no TLS; terminate TLS in a proxy on your side of a private link",
                    ));
                }
                let timeout = timeout.unwrap_or(CONFIRM_TIMEOUT_MS_DEFAULT);
                if !CONFIRM_TIMEOUT_MS_RANGE.contains(&timeout) {
                    return Err(invalid("timeout_ms", "100 to 30000 milliseconds"));
                }
                Some((parsed.to_string(), timeout))
            }
        };
        self.store().set_payment_endpoint(&caller.party.id, endpoint.clone(), self.now()).await?;
        Ok(endpoint)
    }

    /// The caller's registered top-up confirmation endpoint.
    pub async fn payment_endpoint(&self, caller: &Caller) -> Result<Option<(String, u32)>, HubError> {
        self.authorize(caller, "payment.endpoint-own", None)?;
        Ok(self.store().payment_endpoint(&caller.party.id).await?)
    }

    /// A provider's top-up with the state of its delivery to the meter.
    pub async fn top_up_status(
        &self,
        caller: &Caller,
        payment_reference: &str,
    ) -> Result<(TopUpRecord, RequestRecord, Option<ResponseRecord>), HubError> {
        self.authorize(caller, "payment.top-up", None)?;
        let t =
            self.store().top_up(&caller.party.id, payment_reference).await?.ok_or_else(|| {
                HubError::NotFound(format!("you have no top-up with reference {payment_reference:?}"))
            })?;
        let (request, response) =
            self.store().request(&t.request_id).await?.ok_or_else(|| {
                HubError::Unavailable(format!("the request of top-up {payment_reference:?} is missing"))
            })?;
        Ok((t, request, response))
    }
}

/// A payment reference seen before: the same top-up again is answered with the first; a
/// different one under the same reference is refused.
fn same_again(done: TopUpRecord, mpxn: Mpxn, amount: u64) -> Result<(TopUpRecord, bool), HubError> {
    if done.mpxn == mpxn && done.amount_pence == amount {
        Ok((done, false))
    } else {
        Err(HubError::Conflict(format!(
            "payment reference {:?} was used for another top-up ({} pence to {})",
            done.payment_reference, done.amount_pence, done.customer_id
        )))
    }
}
