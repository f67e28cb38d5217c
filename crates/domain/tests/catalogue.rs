//! The catalogue table in code agrees with the DUIS reference, row by row, and the
//! authorisation decision follows it (R-SR-1).

use domain::catalogue::{self, CATALOGUE, Critical, FutureDate, Relation, ServiceKind, TargetFacts};
use domain::{Fuel, PartyId, Role, Roles};

const REFERENCE: &str = include_str!("../../../data/reference/duis-service-catalogue.md");

fn duis_role(code: &str) -> Role {
    match code {
        "IS" => Role::ImportSupplier,
        "ES" => Role::ExportSupplier,
        "GS" => Role::GasSupplier,
        "ED" => Role::ElectricityDistributor,
        "GT" => Role::GasTransporter,
        "OU" => Role::OtherUser,
        "RSA" => Role::RegisteredSupplierAgent,
        other => panic!("unknown DUIS role {other:?} in the reference"),
    }
}

const DUIS_ROLES: [&str; 7] = ["IS", "ES", "GS", "ED", "GT", "OU", "RSA"];

/// Roles cell → Some(roles), or None when the reference says "varies".
fn parse_roles(cell: &str) -> Option<Roles> {
    let cell = cell.trim();
    if cell.starts_with("varies") {
        return None;
    }
    if cell == "all" {
        return Some(Roles::from_iter(DUIS_ROLES.map(duis_role)));
    }
    if let Some(except) = cell.strip_prefix("all but ") {
        return Some(Roles::from_iter(DUIS_ROLES.iter().filter(|r| **r != except.trim()).map(|r| duis_role(r))));
    }
    let cell = cell.split(" only").next().unwrap();
    Some(Roles::from_iter(cell.split(',').map(|r| duis_role(r.trim()))))
}

struct Row {
    code: String,
    critical: bool,
    future: FutureDate,
    roles: Option<Roles>,
}

fn reference_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for line in REFERENCE.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 6 || !cells[1].starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let codes: Vec<&str> = cells[1].split(" / ").collect();
        let criticals: Vec<&str> = cells[3].split(" / ").collect();
        let roles: Vec<&str> = cells[5].split(" / ").collect();
        let future = match cells[4] {
            "Device" => FutureDate::Device,
            "Hub" => FutureDate::Hub,
            "Hub and Device" => FutureDate::HubAndDevice,
            "–" | "-" => FutureDate::No,
            other => panic!("unknown future-date cell {other:?}"),
        };
        for (i, code) in codes.iter().enumerate() {
            let code = code.trim_end_matches(".x");
            rows.push(Row {
                code: code.to_string(),
                critical: criticals.get(i).unwrap_or(&criticals[0]).starts_with("yes"),
                future,
                roles: parse_roles(roles.get(i).unwrap_or(&roles[0])),
            });
        }
    }
    rows
}

#[test]
fn every_reference_srv_is_in_the_catalogue_with_the_same_facts() {
    let rows = reference_rows();
    assert!(rows.len() >= 36, "parsed {} rows from the reference", rows.len());
    for row in &rows {
        let s = catalogue::service(&row.code).unwrap_or_else(|| panic!("SRV {} missing", row.code));
        assert_eq!(s.kind, ServiceKind::Srv, "{}", row.code);
        assert_eq!(s.critical == Critical::Yes, row.critical, "critical flag of {}", row.code);
        assert_eq!(s.future_date, row.future, "future date of {}", row.code);
        if let Some(roles) = row.roles {
            assert_eq!(s.roles(), with_extensions(&row.code, roles), "roles of {}", row.code);
        } else {
            // "varies, incl. RSA": the union we use must include RSA.
            assert!(s.roles().contains(Role::RegisteredSupplierAgent), "{}", row.code);
        }
    }
    let srvs = CATALOGUE.iter().filter(|s| s.kind == ServiceKind::Srv).count();
    assert_eq!(srvs, rows.len(), "the catalogue has SRVs the reference does not");
}

#[test]
fn codes_are_unique_and_every_grant_is_consistent() {
    for (i, s) in CATALOGUE.iter().enumerate() {
        assert!(CATALOGUE[..i].iter().all(|o| o.code != s.code), "duplicate {}", s.code);
        assert!(!s.grants.is_empty(), "{} grants nobody", s.code);
        for g in s.grants {
            if g.relation != Relation::None {
                assert!(s.targets_mpxn, "{}: a relationship grant needs a metering point", s.code);
            }
        }
    }
}

fn pid(s: &str) -> PartyId {
    PartyId::parse(s).unwrap()
}

// R-SR-1: role and relationship at the instant, from the one table; refusals say why.
#[test]
fn authorisation_table() {
    let supplier = pid("acme");
    let other_supplier = pid("brightside");
    let dno = pid("dno-14");
    let other_dno = pid("dno-20");
    let consenting = pid("esco-ok");
    let at = "2026-01-01T00:00:00Z".parse().unwrap();
    let (esco_no, regp, op) = (pid("esco-no"), pid("reg"), pid("op"));
    let consents = [consenting.clone()];
    let elec = TargetFacts {
        mpxn: "1312345678907",
        fuel: Fuel::Electricity,
        at,
        registered_supplier: Some(&supplier),
        export_supplier: None,
        network_operator: Some(&dno),
        consent_holders: &consents,
        appointed_agents: &[],
        former_suppliers: &[],
    };
    let gas = TargetFacts { mpxn: "3938424403", fuel: Fuel::Gas, ..elec };
    let is = Roles::from_iter([Role::ImportSupplier]);
    let isgs = Roles::from_iter([Role::ImportSupplier, Role::GasSupplier]);
    let ed = Roles::from_iter([Role::ElectricityDistributor]);
    let ou = Roles::from_iter([Role::OtherUser]);
    let reg = Roles::from_iter([Role::RegistrationService]);
    let hubop = Roles::from_iter([Role::HubOperator]);

    // (service, party, roles, target, Ok | Err(missing))
    type Case<'a> = (&'a str, &'a PartyId, Roles, Option<&'a TargetFacts<'a>>, Result<(), &'a str>);
    let cases: Vec<Case> = vec![
        ("4.1.1", &supplier, is, Some(&elec), Ok(())),
        ("4.1.1", &other_supplier, is, Some(&elec), Err("relationship")),
        ("4.1.1", &dno, ed, Some(&elec), Ok(())),
        ("4.1.1", &other_dno, ed, Some(&elec), Err("relationship")),
        ("4.1.1", &consenting, ou, Some(&elec), Err("role")),
        ("4.8.1", &consenting, ou, Some(&elec), Ok(())),
        ("4.8.1", &esco_no, ou, Some(&elec), Err("relationship")),
        // An import supplier is not the gas supplier, even when named in the gas record.
        ("4.1.1", &supplier, is, Some(&gas), Err("relationship")),
        ("4.1.1", &supplier, isgs, Some(&gas), Ok(())),
        ("7.1", &supplier, isgs, Some(&gas), Err("relationship")),
        ("7.1", &supplier, is, Some(&elec), Ok(())),
        ("7.2", &dno, ed, Some(&elec), Err("role")),
        ("registry.write", &supplier, is, Some(&elec), Err("role")),
        ("registry.write", &regp, reg, Some(&elec), Ok(())),
        ("registry.read", &supplier, is, Some(&elec), Ok(())),
        ("registry.read", &other_supplier, is, Some(&elec), Err("relationship")),
        ("registry.read", &op, hubop, Some(&elec), Ok(())),
        ("clock.advance", &supplier, is, None, Err("role")),
        ("clock.advance", &op, hubop, None, Ok(())),
        ("party.manage", &regp, reg, None, Err("role")),
        ("catalogue.read", &consenting, ou, None, Ok(())),
        // A relationship grant with no metering point never applies.
        ("4.1.1", &supplier, is, None, Err("relationship")),
    ];
    for (code, party, roles, target, want) in cases {
        let s = catalogue::service(code).unwrap();
        let got = catalogue::authorize(s, party, roles, target).map(|_| ()).map_err(|r| r.missing());
        assert_eq!(got, want, "{code} by {party} [{}]", roles.codes());
    }

    let refusal = catalogue::authorize(catalogue::service("4.1.1").unwrap(), &other_supplier, is, Some(&elec))
        .unwrap_err()
        .to_string();
    assert!(refusal.contains("brightside") && refusal.contains("registered supplier"), "{refusal}");
    assert!(refusal.contains("1312345678907") && refusal.contains("2026-01-01"), "{refusal}");
    let refusal =
        catalogue::authorize(catalogue::service("7.2").unwrap(), &dno, ed, Some(&elec)).unwrap_err().to_string();
    assert!(refusal.contains("IS,GS") && refusal.contains("[ED]"), "{refusal}");
}

/// How a DUIS role relates to a metering point, by the DUIS convention (not read from the
/// code's table): suppliers as registered supplier, distributors and transporters as
/// network operator, other users by consent, agents by appointment.
/// The reference's roles for an SRV plus the catalogue's documented extensions.
fn with_extensions(code: &str, roles: Roles) -> Roles {
    let mut all: Vec<Role> = Role::ALL.into_iter().filter(|r| roles.contains(*r)).collect();
    all.extend(catalogue::EXTENSIONS.iter().filter(|(c, ..)| *c == code).map(|(_, r, _)| *r));
    Roles::from_iter(all)
}

fn duis_relation(role: Role) -> Relation {
    match role {
        Role::MeterAssetProvider => Relation::AppointedAgent,
        Role::ImportSupplier | Role::GasSupplier => Relation::RegisteredSupplier,
        Role::ExportSupplier => Relation::RegisteredExportSupplier,
        Role::ElectricityDistributor | Role::GasTransporter => Relation::NetworkOperator,
        Role::OtherUser => Relation::ConsentHolder,
        Role::RegisteredSupplierAgent => Relation::AppointedAgent,
        _ => Relation::None,
    }
}

// R-SR-1: the authorisation matrix, generated from the reference catalogue: every SRV ×
// every role × every relationship a party can stand in, on both fuels. Whatever the
// catalogue code says must match what the reference and the DUIS relationships say.
#[test]
fn authorisation_matrix_from_the_reference() {
    let me = pid("me");
    let someone = pid("someone-else");
    let at = "2026-01-01T00:00:00Z".parse().unwrap();
    // (name, facts builder): the relationships `me` may hold.
    let relations: [(&str, Relation); 7] = [
        ("registered supplier", Relation::RegisteredSupplier),
        ("registered export supplier", Relation::RegisteredExportSupplier),
        ("network operator", Relation::NetworkOperator),
        ("consent holder", Relation::ConsentHolder),
        ("appointed agent", Relation::AppointedAgent),
        ("unrelated", Relation::None),
        ("other party holds them all", Relation::None),
    ];
    let mut checked = 0;
    for row in reference_rows() {
        let service = catalogue::service(&row.code).unwrap();
        let Some(reference_roles) = row.roles else { continue };
        for fuel in [Fuel::Electricity, Fuel::Gas] {
            for role in Role::ALL {
                for (name, holds) in relations {
                    let mine = [me.clone()];
                    let pick = |r: Relation| {
                        if holds == r && name != "other party holds them all" { Some(&me) } else { Some(&someone) }
                    };
                    let facts = TargetFacts {
                        mpxn: "x",
                        fuel,
                        at,
                        registered_supplier: pick(Relation::RegisteredSupplier),
                        export_supplier: pick(Relation::RegisteredExportSupplier),
                        network_operator: pick(Relation::NetworkOperator),
                        consent_holders: if holds == Relation::ConsentHolder { &mine } else { &[] },
                        appointed_agents: if holds == Relation::AppointedAgent { &mine } else { &[] },
                        former_suppliers: if holds == Relation::FormerSupplier { &mine } else { &[] },
                    };
                    let roles = Roles::from_iter([role]);
                    let got = catalogue::authorize(service, &me, roles, Some(&facts)).is_ok();
                    let fuel_ok = role.fuel().is_none_or(|f| f == fuel);
                    let want = with_extensions(&row.code, reference_roles).contains(role)
                        && fuel_ok
                        && duis_relation(role) == holds
                        && holds != Relation::None;
                    assert_eq!(got, want, "SRV {} by {role} as {name} on {fuel}", row.code);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 5000, "{checked} cases");
}
