//! Schedules (SRV 5.1 create, 5.2 read, 5.3 delete) and reads distribution (R-RD-1, R-RD-2).
//!
//! A schedule is held by the hub, as DUIS has it: the hub answers 5.1/5.2/5.3 itself, at
//! once, and at each run time makes an ordinary request of the scheduled read for the
//! schedule's owner. That request goes through the same path as any other (authorised again
//! at its time, sent to the device, its response recorded and delivered), so a run's result
//! is streamed as collected (`/v1/responses/stream`) and lands in the owner's per-day read
//! batch: the same records both ways.
//!
//! Rules decided here (DUIS leaves them to the hub):
//! - Schedulable reads: 4.1.1, 4.8.1, 4.17. Runs repeat every London civil day or week from
//!   `start` (so 01:00 stays 01:00 across clock changes), until `end` if given.
//! - A run of a profile or log read (4.8.1, 4.17) asks for the period since the previous run
//!   time, so consecutive runs cover time without gap or overlap.
//! - A hub that was down catches up: each missed run is made, in order, each for its own
//!   period. A run is made exactly once (the request and the schedule's move are one write).
//! - Schedule management touches no device, so anomaly detection does not count it; runs are
//!   the hub's own traffic on the owner's behalf and are not counted either.
//! - At most [`store::SCHEDULES_PER_TARGET_MAX`] live schedules per party per device.

use device::{Command, RequestId};
use domain::Mpxn;
use domain::catalogue::Critical;
use domain::time::{in_london, parse_instant, start_of_london_day};
use jiff::{Span, Timestamp};
use serde_json::{Map, Value, json};
use store::{
    Completion, DeviceRecord, Effect, Every, ForwardRecord, ReadRecord, RequestRecord, RequestStatus, ResponseOutcome,
    ScheduleRecord,
};

use crate::{Caller, Hub, HubError};

/// SRVs the hub answers itself, without a device.
pub const HUB_ANSWERED_SRVS: &[&str] = &["5.1", "5.2", "5.3"];
/// Reads a schedule may run.
pub const SCHEDULABLE_SRVS: &[&str] = &["4.1.1", "4.8.1", "4.17"];
/// Reads that are batched per day and may be forwarded to a network operator.
pub const READ_SRVS: &[&str] = &["4.1.1", "4.8.1", "4.17"];
/// SRVs whose runs read a period: each run asks for the time since the previous run.
const PERIOD_SRVS: &[&str] = &["4.8.1", "4.17"];
/// Schedules turned into runs per round of the scheduler.
pub const SCHEDULE_BATCH_MAX: usize = 512;
/// Most reads returned by one page of a batch or of forwarded reads.
pub const READS_PAGE_MAX: usize = 1000;

fn invalid(field: &str, rule: impl Into<String>) -> HubError {
    HubError::invalid(field, rule)
}

fn fields<'a>(body: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, HubError> {
    let obj = body.as_object().ok_or_else(|| invalid("body", "must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(&format!("body.{k}"), format!("unknown field; this SRV takes: {}", allowed.join(", "))));
    }
    Ok(obj)
}

fn text<'a>(o: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, HubError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(&format!("body.{k}"), "must be a string")),
    }
}

fn instant(o: &Map<String, Value>, k: &str) -> Result<Option<Timestamp>, HubError> {
    text(o, k)?.map(|s| parse_instant(s).map_err(|e| invalid(&format!("body.{k}"), e))).transpose()
}

/// Check a 5.x body and return its canonical form. `now` bounds a new schedule's start.
pub(crate) fn validate_schedule_body(srv: &str, body: &Value, now: Timestamp) -> Result<Value, HubError> {
    match srv {
        "5.1" => {
            let o = fields(body, &["srv", "every", "start", "end"])?;
            let read = text(o, "srv")?
                .filter(|s| SCHEDULABLE_SRVS.contains(s))
                .ok_or_else(|| invalid("body.srv", format!("required, one of {}", SCHEDULABLE_SRVS.join(", "))))?;
            let every = text(o, "every")?
                .and_then(Every::parse)
                .ok_or_else(|| invalid("body.every", "required, \"day\" or \"week\""))?;
            let start = instant(o, "start")?.ok_or_else(|| invalid("body.start", "required, the first run's time"))?;
            crate::pipeline::check_ahead("body.start", start, now)?;
            let end = instant(o, "end")?;
            if end.is_some_and(|e| e <= start) {
                return Err(invalid("body.end", "must be after start"));
            }
            let mut out = json!({"srv": read, "every": every.as_str(), "start": start.to_string()});
            if let Some(e) = end {
                out["end"] = json!(e.to_string());
            }
            Ok(out)
        }
        "5.2" => {
            let o = fields(body, &["schedule_id"])?;
            Ok(match text(o, "schedule_id")? {
                Some(id) => json!({"schedule_id": id}),
                None => json!({}),
            })
        }
        "5.3" => {
            let o = fields(body, &["schedule_id"])?;
            let id = text(o, "schedule_id")?.ok_or_else(|| invalid("body.schedule_id", "required"))?;
            Ok(json!({"schedule_id": id}))
        }
        _ => unreachable!("only schedule SRVs come here"),
    }
}

/// Run `k` of a schedule (0 is `first`; -1 the one before it, whose time starts the first
/// run's period): the first run's London wall-clock time, `k` days or weeks on. Computed
/// from the first run each time, so a time that does not exist on a spring-forward day
/// (it moves an hour on, that day only) never shifts the runs after it.
pub fn run_at(first: Timestamp, every: Every, k: i64) -> Option<Timestamp> {
    let civil = in_london(first).datetime().checked_add(Span::new().days(every.days().checked_mul(k)?)).ok()?;
    civil.to_zoned(domain::time::london()).ok().map(|z| z.timestamp())
}

/// The run after run `k`, or `None` past `end`.
pub fn next_run(first: Timestamp, every: Every, k: i64, end: Option<Timestamp>) -> Option<Timestamp> {
    let next = run_at(first, every, k + 1)?;
    if end.is_some_and(|e| next > e) { None } else { Some(next) }
}

/// A schedule as callers see it.
pub fn schedule_json(s: &ScheduleRecord) -> Value {
    json!({
        "schedule_id": s.id,
        "srv": s.srv,
        "target": s.target.to_string(),
        "mpxn": s.mpxn.map(|m| m.to_string()),
        "every": s.every.as_str(),
        "first_run": s.first_run.to_string(),
        "end": s.end.map(|e| e.to_string()),
        "next_run": s.next_run.map(|e| e.to_string()),
        "runs": s.runs,
        "created_at": s.created_at.to_string(),
    })
}

impl Hub {
    /// Answer a 5.x request at once: its response and effect are stored with it, or nothing
    /// is (a refused one changes nothing and is not acknowledged).
    pub(crate) async fn answer_schedule_request(
        &self,
        mut record: RequestRecord,
        body: &Value,
        device: &DeviceRecord,
        mpxn: Option<Mpxn>,
    ) -> Result<RequestRecord, HubError> {
        let now = record.submitted_at;
        let (response, effect) = match record.srv.as_str() {
            "5.1" => {
                let every = Every::parse(body["every"].as_str().unwrap_or_default()).expect("validated");
                let first_run = parse_instant(body["start"].as_str().unwrap_or_default()).expect("validated");
                let end = body["end"].as_str().map(|s| parse_instant(s).expect("validated"));
                let schedule = ScheduleRecord {
                    id: record.id.clone(),
                    party: record.party.clone(),
                    srv: body["srv"].as_str().unwrap_or_default().to_string(),
                    target: device.eui,
                    mpxn,
                    every,
                    first_run,
                    end,
                    next_run: Some(first_run),
                    runs: 0,
                    created_at: now,
                    deleted_at: None,
                };
                (schedule_json(&schedule), Some(Effect::ScheduleCreated(schedule)))
            }
            "5.2" => {
                let mut list = self.store().schedules(&record.party, Some(device.eui)).await?;
                if let Some(id) = body["schedule_id"].as_str() {
                    list.retain(|s| s.id == id);
                    if list.is_empty() {
                        return Err(HubError::NotFound(format!("you have no live schedule {id} on {}", device.eui)));
                    }
                }
                (json!({"schedules": list.iter().map(schedule_json).collect::<Vec<_>>()}), None)
            }
            "5.3" => {
                let id = body["schedule_id"].as_str().unwrap_or_default().to_string();
                match self.store().schedule(&id).await? {
                    Some(s) if s.party == record.party && s.target == device.eui && s.deleted_at.is_none() => {}
                    _ => return Err(HubError::NotFound(format!("you have no live schedule {id} on {}", device.eui))),
                }
                (
                    json!({"schedule_id": id, "deleted_at": now.to_string()}),
                    Some(Effect::ScheduleDeleted { id, party: record.party.clone(), at: now }),
                )
            }
            other => unreachable!("SRV {other} is not answered by the hub"),
        };
        record.status = RequestStatus::Queued;
        let completion = Completion {
            request_id: record.id.clone(),
            request_seq: None,
            party: record.party.clone(),
            at: now,
            outcome: ResponseOutcome::Done,
            body: response.to_string(),
            effects: effect.into_iter().collect(),
        };
        let stored = self.store().record_hub_request(record, completion).await?;
        self.inner.completed.notify_waiters();
        Ok(stored)
    }

    /// Turn every due schedule run into a queued request. Returns how many were made. A
    /// schedule behind by several runs (the hub was down) gets one per round, each reading
    /// its own period, until it is caught up.
    pub async fn run_schedules_due(&self) -> Result<usize, HubError> {
        let mut made = 0;
        loop {
            let now = self.now();
            let due = self.store().due_schedules(now, SCHEDULE_BATCH_MAX).await?;
            let mut round = 0;
            for s in &due {
                if self.make_run(s, now).await? {
                    round += 1;
                }
            }
            made += round;
            if round == 0 {
                break;
            }
        }
        if made > 0 {
            self.inner.work.notify_one();
        }
        Ok(made)
    }

    /// Make one run of a schedule; false if it was not made (taken, deleted, owner gone).
    async fn make_run(&self, s: &ScheduleRecord, now: Timestamp) -> Result<bool, HubError> {
        let Some(run_at) = s.next_run else { return Ok(false) };
        let Some(owner) = self.store().party(&s.party).await? else {
            tracing::warn!(message = "Schedule owner is gone; run skipped.", schedule = %s.id, party = %s.party);
            return Ok(false);
        };
        let body = if PERIOD_SRVS.contains(&s.srv.as_str()) {
            // The period since the previous run (run k-1), without gap or overlap.
            let from = self::run_at(s.first_run, s.every, s.runs - 1).unwrap_or(run_at);
            json!({"from": from.to_string(), "to": run_at.to_string()})
        } else {
            json!({})
        };
        let counter = self.next_request_counter(owner.originator).await?;
        let id = RequestId { originator: owner.originator, target: s.target, counter };
        let body_text = body.to_string();
        let command =
            Command { id, srv: s.srv.clone(), execute_at: Some(run_at), body: body_text.clone().into_bytes() };
        debug_assert!(domain::catalogue::service(&s.srv).is_some_and(|x| x.critical == Critical::No));
        let request = RequestRecord {
            seq: 0,
            id: id.to_string(),
            party: s.party.clone(),
            srv: s.srv.clone(),
            target: s.target,
            mpxn: s.mpxn,
            body: body_text,
            precommand: command.encode(),
            signature: None,
            submitted_at: now,
            execute_at: Some(run_at),
            status: RequestStatus::Queued,
            status_at: now,
            note: Some(format!("run of schedule {}", s.id)),
            schedule_id: Some(s.id.clone()),
        };
        match self
            .store()
            .record_schedule_run(&s.id, run_at, request, next_run(s.first_run, s.every, s.runs, s.end))
            .await
        {
            Ok(_) => Ok(true),
            // Deleted or already run since it was read: nothing to do.
            Err(store::StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The caller's reads recorded on a London day (`YYYY-MM-DD`), after a sequence number:
    /// the per-day batch (R-RD-2). The same records are streamed as they are collected.
    pub async fn read_batch(
        &self,
        caller: &Caller,
        day: &str,
        after: i64,
        limit: usize,
    ) -> Result<(Timestamp, Timestamp, Vec<ReadRecord>), HubError> {
        self.authorize(caller, "reads.batch", None)?;
        let date: jiff::civil::Date = day.parse().map_err(|_| invalid("day", "a London calendar day as YYYY-MM-DD"))?;
        let from = start_of_london_day(date).map_err(|e| invalid("day", e))?;
        let next = date.tomorrow().map_err(|e| invalid("day", e.to_string()))?;
        let to = start_of_london_day(next).map_err(|e| invalid("day", e))?;
        let reads = self
            .store()
            .reads_between(&caller.party.id, READ_SRVS, from, to, after, limit.clamp(1, READS_PAGE_MAX))
            .await?;
        Ok((from, to, reads))
    }

    /// Forward one of the caller's reads to the network operator of its metering point
    /// (supplier hub principle, R-RD-1). Forwarding again returns the first forward.
    pub async fn forward_read(
        &self,
        caller: &Caller,
        request_id: &str,
        to: Option<&str>,
    ) -> Result<ForwardRecord, HubError> {
        self.authorize(caller, "reads.forward", None)?;
        let read = self
            .store()
            .read(request_id)
            .await?
            .filter(|r| r.response.party == caller.party.id)
            .ok_or_else(|| HubError::NotFound(format!("you have no answered request {request_id}")))?;
        if !READ_SRVS.contains(&read.srv.as_str()) {
            return Err(invalid(
                "request_id",
                format!("SRV {} is not a read; only {} can be forwarded", read.srv, READ_SRVS.join(", ")),
            ));
        }
        if read.response.outcome != ResponseOutcome::Done {
            return Err(HubError::Conflict(format!(
                "request {request_id} did not succeed ({}); there is no read to forward",
                read.response.outcome.as_str()
            )));
        }
        let mpxn =
            read.mpxn.ok_or_else(|| HubError::Conflict(format!("request {request_id} has no metering point")))?;
        let reg = self.store().registration_at(mpxn, read.response.at, None).await?.ok_or_else(|| {
            HubError::Conflict(format!("{mpxn} had no registration when it was read ({})", read.response.at))
        })?;
        let me = &caller.party.id;
        if reg.data.supplier != *me && reg.data.export_supplier.as_ref() != Some(me) {
            return Err(HubError::Conflict(format!(
                "{me} was not the registered supplier of {mpxn} when it was read; only that supplier forwards its reads"
            )));
        }
        let operator = reg.data.network_operator.clone();
        if let Some(t) = to
            && t != operator.as_str()
        {
            return Err(invalid(
                "to",
                format!("reads of {mpxn} go only to its network operator, {operator} (supplier hub principle)"),
            ));
        }
        Ok(self.store().forward_read(request_id, me, &operator, self.now()).await?)
    }

    /// Reads forwarded to the caller (a network operator) after a sequence number.
    pub async fn forwarded_reads(
        &self,
        caller: &Caller,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(ForwardRecord, ReadRecord)>, HubError> {
        self.authorize(caller, "reads.forwarded", None)?;
        Ok(self.store().forwarded_reads(&caller.party.id, after, limit.clamp(1, READS_PAGE_MAX)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs keep their London wall-clock time across the clock changes.
    #[test]
    fn runs_keep_local_time_across_clock_changes() {
        // 03:30 London on the Saturday before the October change (BST, UTC+1).
        let first: Timestamp = "2026-10-24T02:30:00Z".parse().unwrap();
        let runs: Vec<String> = (0..3).map(|k| run_at(first, Every::Day, k).unwrap().to_string()).collect();
        assert_eq!(
            runs,
            ["2026-10-24T02:30:00Z", "2026-10-25T03:30:00Z", "2026-10-26T03:30:00Z"],
            "25 hours apart once"
        );
        assert_eq!(run_at(first, Every::Day, -1).unwrap().to_string(), "2026-10-23T02:30:00Z");
        assert_eq!(run_at(first, Every::Week, 1).unwrap().to_string(), "2026-10-31T03:30:00Z");
        assert_eq!(
            next_run(first, Every::Day, 0, Some(first + jiff::SignedDuration::from_hours(12))),
            None,
            "past the end"
        );

        // 01:30 daily does not exist on the March change day (29 March 2026): that run is at
        // 02:30 BST, and the next day's is back at 01:30.
        let first: Timestamp = "2026-03-28T01:30:00Z".parse().unwrap();
        let runs: Vec<String> = (0..3).map(|k| run_at(first, Every::Day, k).unwrap().to_string()).collect();
        assert_eq!(runs, ["2026-03-28T01:30:00Z", "2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"]);
    }
}
