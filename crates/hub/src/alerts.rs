//! Device alerts reaching parties (R-PM-5 now; the whole dispatching of issue 6 builds on
//! it). A transport hands the hub each device's alerts in the device's order, again until
//! the hub has stored them; the hub stores each (device, number) once, for the recipient
//! chosen when it first arrived, and each recipient pulls its own in order.
//!
//! Recipients today: the registered supplier of the device's metering point at the alert's
//! instant (for a device not linked to one, the supplier it trusts). The dispatch table of
//! issue 6 (network operators, other users, the hub operator) replaces this rule.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use store::AlertRecord;

use crate::transport::{AlertSink, DeviceAlert};
use crate::{Caller, Hub, HubError, Inner};

/// Alerts returned by one pull, at most.
pub const ALERTS_PAGE_MAX: usize = 1000;

/// The hub as an alert sink. Holds the hub weakly: the transport it is given to is owned
/// by the hub, and a strong handle would keep both alive for ever.
pub(crate) struct Sink(pub(crate) Weak<Inner>);

#[async_trait]
impl AlertSink for Sink {
    async fn deliver(&self, alerts: Vec<DeviceAlert>) -> Result<(), String> {
        let inner = self.0.upgrade().ok_or("the hub has stopped")?;
        Hub { inner }.receive_alerts(alerts).await.map_err(|e| e.to_string())
    }
}

impl Hub {
    pub(crate) fn alert_sink(&self) -> Arc<dyn AlertSink> {
        Arc::new(Sink(Arc::downgrade(&self.inner)))
    }

    /// Store device alerts for their recipients.
    pub async fn receive_alerts(&self, alerts: Vec<DeviceAlert>) -> Result<(), HubError> {
        let now = self.now();
        let mut records = Vec::with_capacity(alerts.len());
        for a in alerts {
            // Refused whole, so the transport keeps it and delivers it again: never lost.
            let Some(device) = self.store().device(a.device).await? else {
                return Err(HubError::NotFound(format!("alert from device {}, which the hub does not know", a.device)));
            };
            let recipient = match device.mpxn {
                Some(m) => match self.store().registration_at(m, a.at, None).await? {
                    Some(r) => r.data.supplier,
                    None => self.trusted_supplier_of(&device).await?,
                },
                None => self.trusted_supplier_of(&device).await?,
            };
            records.push(AlertRecord {
                seq: 0,
                party: recipient,
                device: a.device,
                device_seq: a.seq,
                mpxn: device.mpxn,
                at: a.at,
                code: a.code,
                detail: a.detail,
                data: a.data.map(|d| d.to_string()),
                received_at: now,
            });
        }
        let new = self.store().record_alerts(records).await?;
        metrics::counter!("meterhub_alerts_stored_total").increment(new);
        Ok(())
    }

    /// The caller's alerts after a sequence number, in order.
    pub async fn alerts(&self, caller: &Caller, after: i64, limit: usize) -> Result<Vec<AlertRecord>, HubError> {
        self.authorize(caller, "alert.read-own", None)?;
        Ok(self.store().alerts_after(&caller.party.id, after, limit.clamp(1, ALERTS_PAGE_MAX)).await?)
    }
}
