//! Change of supplier as a state machine (R-COS-1, R-COS-2, R-COS-7), pure: every step takes
//! the instant it happens at, and the clock's part (a window closing, the switch instant)
//! is [`Switch::tick`]. The hub persists the state after every step, so a restart resumes it.
//!
//! Electricity (R-COS-1): the incoming supplier's registration request names a supply start
//! date. The outgoing supplier may object until the objection window closes, 5 GB working
//! days after the day of the request. An objection opens a resolve-or-unpick period of 5
//! working days after the day of the objection: if the outgoing supplier withdraws it in
//! time the switch proceeds, otherwise it is unpicked (withdrawn). Windows close at the end
//! of their last working day (midnight, London time); working days follow the bank holidays
//! of the metering point's division.
//!
//! Gas (R-COS-2): the incoming shipper initiates; the registration system (Xoserve, or the
//! independent gas transporter) confirms it (activity 1.20), from when the switch is
//! irrevocable and takes effect at the start of the London day 7 days later. The
//! difference between supply points, decided here: a large one (annual quantity over
//! 73,200 kWh) is nominated first and the registration system answers with an offer, which
//! the incoming shipper accepts before the confirmation; a small one goes to confirmation at
//! once. A registration system may answer late and more than once: a repeated answer
//! changes nothing (R-COS-7).
//!
//! Both: the incoming party may cancel until the switch is confirmed, never after. At the
//! switch instant the hub replaces the devices' credentials and takes the definitive
//! reading ([`Stage::Completing`]), then the switch is [`Stage::Completed`].

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::calendar::{Division, bank_holidays};
use crate::time::{london_date, start_of_london_day};

/// Working days the outgoing supplier has to object (electricity).
pub const OBJECTION_WORKING_DAYS: u32 = 5;
/// Working days of the resolve-or-unpick period an objection opens (electricity).
pub const RESOLVE_WORKING_DAYS: u32 = 5;
/// Days from the gas confirmation (activity 1.20) to the switch.
pub const GAS_CONFIRMATION_TO_SWITCH_DAYS: i64 = 7;
/// Latest electricity supply start date, in days after the day of the request.
pub const SUPPLY_START_DAYS_AHEAD_MAX: i64 = 28;

/// Which process a switch follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Process {
    Electricity,
    /// A gas supply point of at most 73,200 kWh a year (or whose annual quantity is unknown).
    GasSmall,
    /// A gas supply point of more than 73,200 kWh a year.
    GasLarge,
}

impl Process {
    pub fn as_str(self) -> &'static str {
        match self {
            Process::Electricity => "electricity",
            Process::GasSmall => "gas-small",
            Process::GasLarge => "gas-large",
        }
    }
}

/// Where a switch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Electricity: the outgoing supplier may object until the deadline.
    ObjectionWindow,
    /// Electricity: objected; resolved by the deadline or unpicked.
    Objected,
    /// Gas, large supply point: waiting for the registration system's offer.
    Nominated,
    /// Gas, large supply point: waiting for the incoming shipper to accept the offer.
    Offered,
    /// Gas: waiting for the registration system's confirmation (activity 1.20).
    AwaitingConfirmation,
    /// Irrevocable; the registry names the incoming supplier from the switch instant.
    Confirmed,
    /// The switch instant has passed: credentials are being replaced (SRV 6.23) and the
    /// definitive reading taken.
    Completing,
    Completed,
    Withdrawn,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::ObjectionWindow => "objection-window",
            Stage::Objected => "objected",
            Stage::Nominated => "nominated",
            Stage::Offered => "offered",
            Stage::AwaitingConfirmation => "awaiting-confirmation",
            Stage::Confirmed => "confirmed",
            Stage::Completing => "completing",
            Stage::Completed => "completed",
            Stage::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub const ALL: [Stage; 9] = [
        Stage::ObjectionWindow,
        Stage::Objected,
        Stage::Nominated,
        Stage::Offered,
        Stage::AwaitingConfirmation,
        Stage::Confirmed,
        Stage::Completing,
        Stage::Completed,
        Stage::Withdrawn,
    ];

    /// Whether the switch can no longer be stopped.
    pub fn is_irrevocable(self) -> bool {
        matches!(self, Stage::Confirmed | Stage::Completing | Stage::Completed)
    }
}

/// Who acts on a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Actor {
    Incoming,
    Outgoing,
    RegistrationService,
    /// The hub's own process (the clock, the switch instant's work).
    Hub,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Incoming => "incoming",
            Actor::Outgoing => "outgoing",
            Actor::RegistrationService => "registration-service",
            Actor::Hub => "hub",
        }
    }
}

/// What a party can do to a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Object,
    WithdrawObjection,
    Cancel,
    Offer,
    AcceptOffer,
    Confirm,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Object,
        Action::WithdrawObjection,
        Action::Cancel,
        Action::Offer,
        Action::AcceptOffer,
        Action::Confirm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Object => "object",
            Action::WithdrawObjection => "withdraw-objection",
            Action::Cancel => "cancel",
            Action::Offer => "offer",
            Action::AcceptOffer => "accept-offer",
            Action::Confirm => "confirm",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The one actor who may take the action.
    pub fn actor(self) -> Actor {
        match self {
            Action::Object | Action::WithdrawObjection => Actor::Outgoing,
            Action::Cancel | Action::AcceptOffer => Actor::Incoming,
            Action::Offer | Action::Confirm => Actor::RegistrationService,
        }
    }
}

/// A switch's state: everything the clock and the parties' actions need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub process: Process,
    pub division: Division,
    pub requested_at: Timestamp,
    /// Electricity: the supply start date asked for.
    pub supply_start: Option<Date>,
    pub stage: Stage,
    /// When the clock moves the switch on by itself, if it does in this stage.
    pub deadline: Option<Timestamp>,
    /// The switch instant, once confirmed.
    pub switch_at: Option<Timestamp>,
}

/// A step taken: from where to where, at which instant (a deadline's own instant when the
/// clock passed it, however late it was noticed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub from: Stage,
    pub to: Stage,
    pub at: Timestamp,
}

/// An action or request the rules refuse; `field` names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Refused {
    pub field: &'static str,
    pub rule: String,
}

fn refused(field: &'static str, rule: impl Into<String>) -> Refused {
    Refused { field, rule: rule.into() }
}

/// The end of a window of `n` working days after the London day of `from`: midnight at the
/// end of the last of them.
pub fn window_end(division: Division, from: Timestamp, n: u32) -> Timestamp {
    let last = bank_holidays().add_working_days(division, london_date(from), n);
    day_start(last.tomorrow().expect("in range"))
}

fn day_start(d: Date) -> Timestamp {
    start_of_london_day(d).expect("London midnight exists")
}

/// The first London day starting after `t` (or at `t`, if `t` is a London midnight).
fn next_day_start(t: Timestamp) -> Timestamp {
    let d = london_date(t);
    let start = day_start(d);
    if start == t { t } else { day_start(d.tomorrow().expect("in range")) }
}

impl Switch {
    /// Open a switch requested at `now`. Electricity needs a supply start date no earlier
    /// than the day the objection window closes and at most
    /// [`SUPPLY_START_DAYS_AHEAD_MAX`] days after the request; gas takes none (its date
    /// follows from the confirmation).
    pub fn open(
        process: Process,
        division: Division,
        now: Timestamp,
        supply_start: Option<Date>,
    ) -> Result<Switch, Refused> {
        let mut s = Switch {
            process,
            division,
            requested_at: now,
            supply_start,
            stage: Stage::Nominated,
            deadline: None,
            switch_at: None,
        };
        match process {
            Process::Electricity => {
                let Some(date) = supply_start else {
                    return Err(refused("supply_start", "an electricity switch needs a supply start date"));
                };
                let closes = window_end(division, now, OBJECTION_WORKING_DAYS);
                let earliest = london_date(closes);
                let latest = london_date(now).checked_add(SUPPLY_START_DAYS_AHEAD_MAX.days()).expect("in range");
                if date < earliest {
                    return Err(refused(
                        "supply_start",
                        format!(
                            "must be on or after {earliest}: the objection window of {OBJECTION_WORKING_DAYS} working days closes at {closes}"
                        ),
                    ));
                }
                if date > latest {
                    return Err(refused(
                        "supply_start",
                        format!(
                            "must be at most {SUPPLY_START_DAYS_AHEAD_MAX} days after the request, on or before {latest}"
                        ),
                    ));
                }
                s.stage = Stage::ObjectionWindow;
                s.deadline = Some(closes);
            }
            Process::GasSmall | Process::GasLarge => {
                if supply_start.is_some() {
                    return Err(refused(
                        "supply_start",
                        format!(
                            "a gas switch takes effect {GAS_CONFIRMATION_TO_SWITCH_DAYS} days after its confirmation; it takes no date"
                        ),
                    ));
                }
                s.stage = if process == Process::GasLarge { Stage::Nominated } else { Stage::AwaitingConfirmation };
            }
        }
        Ok(s)
    }

    fn confirm_at(&mut self, switch_at: Timestamp) {
        self.stage = Stage::Confirmed;
        self.switch_at = Some(switch_at);
        self.deadline = Some(switch_at);
    }

    /// A party's action at `now`. `Ok(None)` is a repeat of an action already taken (a
    /// registration system answering twice): nothing changes.
    pub fn act(&mut self, action: Action, now: Timestamp) -> Result<Option<Step>, Refused> {
        let from = self.stage;
        let gas = self.process != Process::Electricity;
        let wrong = |what: &str| {
            refused("action", format!("{} is not possible: the switch is {} ({what})", action.as_str(), from.as_str()))
        };
        match (action, from) {
            (Action::Object, Stage::ObjectionWindow) => {
                if self.deadline.is_some_and(|d| now >= d) {
                    return Err(wrong("the objection window has closed"));
                }
                self.stage = Stage::Objected;
                self.deadline = Some(window_end(self.division, now, RESOLVE_WORKING_DAYS));
            }
            (Action::Object, _) if gas => return Err(wrong("only an electricity switch takes objections")),
            (Action::Object, _) => return Err(wrong("objections are raised in the objection window")),
            (Action::WithdrawObjection, Stage::Objected) => {
                if self.deadline.is_some_and(|d| now >= d) {
                    return Err(wrong("the resolve-or-unpick period has ended"));
                }
                let start = self.supply_start.map(day_start).unwrap_or(now);
                self.confirm_at(start.max(next_day_start(now)));
            }
            (Action::WithdrawObjection, _) => return Err(wrong("there is no standing objection")),
            (Action::Cancel, s) if s.is_irrevocable() => {
                return Err(wrong("a confirmed switch is irrevocable"));
            }
            (Action::Cancel, Stage::Withdrawn) => return Ok(None),
            (Action::Cancel, _) => {
                self.stage = Stage::Withdrawn;
                self.deadline = None;
            }
            (Action::Offer, Stage::Nominated) => {
                self.stage = Stage::Offered;
            }
            // The registration system repeating its offer, however late: already answered.
            (Action::Offer, Stage::Offered | Stage::AwaitingConfirmation)
            | (Action::Offer, Stage::Confirmed | Stage::Completing | Stage::Completed)
                if self.process == Process::GasLarge =>
            {
                return Ok(None);
            }
            (Action::Offer, _) if self.process == Process::GasLarge => {
                return Err(wrong("the offer answers a nomination"));
            }
            (Action::Offer, _) => return Err(wrong("only a large gas supply point is nominated and offered")),
            (Action::AcceptOffer, Stage::Offered) => {
                self.stage = Stage::AwaitingConfirmation;
            }
            (Action::AcceptOffer, _) => return Err(wrong("there is no offer to accept")),
            (Action::Confirm, Stage::AwaitingConfirmation) => {
                let day = london_date(now).checked_add(GAS_CONFIRMATION_TO_SWITCH_DAYS.days()).expect("in range");
                self.confirm_at(day_start(day));
            }
            (Action::Confirm, s) if gas && s.is_irrevocable() => return Ok(None),
            (Action::Confirm, _) if gas => return Err(wrong("confirmation follows the shipper's request")),
            (Action::Confirm, _) => {
                return Err(wrong("an electricity switch is confirmed by its objection window closing"));
            }
        }
        Ok(Some(Step { from, to: self.stage, at: now }))
    }

    /// Let the clock act: every deadline at or before `now` is passed, in order, each at its
    /// own instant. Returns the steps taken (none if nothing was due).
    pub fn tick(&mut self, now: Timestamp) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some(due) = self.deadline.filter(|d| *d <= now) {
            let from = self.stage;
            match from {
                Stage::ObjectionWindow => {
                    let start = self.supply_start.map(day_start).unwrap_or(due);
                    self.confirm_at(start.max(due));
                }
                Stage::Objected => {
                    self.stage = Stage::Withdrawn;
                    self.deadline = None;
                }
                Stage::Confirmed => {
                    self.stage = Stage::Completing;
                    self.deadline = None;
                }
                _ => {
                    self.deadline = None;
                    continue;
                }
            }
            steps.push(Step { from, to: self.stage, at: due });
        }
        steps
    }

    /// The hub finished the switch instant's work.
    pub fn complete(&mut self, now: Timestamp) -> Result<Step, Refused> {
        if self.stage != Stage::Completing {
            return Err(refused(
                "stage",
                format!("only a completing switch completes; this one is {}", self.stage.as_str()),
            ));
        }
        self.stage = Stage::Completed;
        self.deadline = None;
        Ok(Step { from: Stage::Completing, to: Stage::Completed, at: now })
    }
}
