//! Many rounds of fuzz, and what they found, told once per finding.
//!
//! `genconform fuzz --duration 10m` runs one round per seed (`--seed`, then
//! the next seeds) until the time is up. A round stops at its first failure
//! and shrinks it; the next round goes on. Findings are grouped by what
//! makes two of them the same ([`Finding::key`]: the property, the target
//! and the minimal case's shape), so a soak that meets one bug forty times
//! says so once, with the seeds that met it.
//!
//! ```
//! use harness::fuzz::soak::parse_duration;
//! assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
//! assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
//! assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
//! assert_eq!(parse_duration("45").unwrap().as_secs(), 45);
//! assert!(parse_duration("soon").is_err());
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::endpoint::family;
use serde::Serialize;
use serde_json::Value;

use super::{Found, FuzzReport};

/// `--duration`: a number of seconds, or a number with `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write 90s, 10m or 2h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{text}`: the unit is s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

/// The shape of a found case: its endpoint, response mode, the fields its
/// request sets, and how its script ends; not the values.
pub fn shape(found: &Found) -> String {
    let request = &found.fixture.request;
    let body = request.body.clone().unwrap_or(Value::Null);
    let mut fields: Vec<String> = body
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let rules = family(request.endpoint);
    if let Some(key) = request.endpoint.sampling_key()
        && let Some(params) = body.get(key).and_then(Value::as_object)
    {
        fields.retain(|k| k != key);
        fields.extend(params.keys().map(|k| format!("{key}.{k}")));
    }
    fields.retain(|k| k != "model" && !rules.prompt_fields().contains(&k.as_str()));
    fields.sort();
    let mode = if request.is_stream() {
        "stream"
    } else {
        "plain"
    };
    let steps = &found.fixture.engine.steps;
    let script = match steps.last() {
        None => "no script".to_string(),
        Some(last) => {
            let end = match (&last.fail, last.finish) {
                (Some(_), _) => "fail".to_string(),
                (None, Some(f)) => format!("finish {}", f.as_str()),
                (None, None) => "no finish".to_string(),
            };
            let tokens: usize = steps.iter().map(|s| s.tokens.len()).sum();
            let logprobs = if steps.iter().any(|s| s.logprobs.is_some()) {
                ", logprobs"
            } else {
                ""
            };
            format!("{} steps, {tokens} tokens{logprobs}, {end}", steps.len())
        }
    };
    let endpoint = request.endpoint.name();
    format!("{endpoint} {mode} {{{}}}, {script}", fields.join(", "))
}

/// `  known: N <what>: id (n), ...` for the registry entries a run met,
/// or nothing when it met none; a single run's summary and a soak's share it.
pub fn known_line(known: &BTreeMap<String, u64>, what: &str) -> String {
    if known.is_empty() {
        return String::new();
    }
    let cases: u64 = known.values().sum();
    let entries: Vec<String> = known.iter().map(|(id, n)| format!("{id} ({n})")).collect();
    format!("  known: {cases} {what}: {}\n", entries.join(", "))
}

/// One distinct finding of a soak, and the rounds that met it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub property: String,
    pub target: String,
    pub shape: String,
    /// The seeds whose rounds found it.
    pub seeds: Vec<u64>,
    /// The first minimal case's violation, and where its fixture went.
    pub detail: String,
    pub fixture: Option<String>,
    pub request: Value,
    pub script: Value,
}

impl Finding {
    /// What makes two findings the same one.
    pub fn key(&self) -> (String, String, String) {
        (
            self.property.clone(),
            self.target.clone(),
            self.shape.clone(),
        )
    }
}

/// Every round of a soak, summed.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub targets: Vec<String>,
    pub endpoints: String,
    pub seeds: Vec<u64>,
    /// Cases exchanged, shrinking included.
    pub cases: u64,
    pub seconds: f64,
    /// Distinct findings, the most often met first.
    pub findings: Vec<Finding>,
    /// Per registry entry, the cases where a target broke the contract
    /// exactly as the entry says.
    pub known: BTreeMap<String, u64>,
    /// The rounds that ended early for a reason of ours (a signal, rejects).
    pub incomplete: Vec<String>,
}

impl SoakReport {
    pub fn of(rounds: &[FuzzReport]) -> Self {
        let mut findings: Vec<Finding> = Vec::new();
        let mut known = BTreeMap::new();
        let mut incomplete = Vec::new();
        for r in rounds {
            for (id, n) in &r.known {
                *known.entry(id.clone()).or_insert(0) += n;
            }
            if let Some(signal) = r.interrupted {
                incomplete.push(format!("seed {}: interrupted by {signal}", r.seed));
            }
            if let Some(reason) = &r.aborted {
                incomplete.push(format!("seed {}: aborted: {reason}", r.seed));
            }
            let Some(f) = &r.found else { continue };
            let finding = Finding {
                property: f.violation.property.name().to_string(),
                target: f.target.clone(),
                shape: shape(f),
                seeds: vec![r.seed],
                detail: f.violation.detail.clone(),
                fixture: f.written.as_ref().ok().map(|p| p.display().to_string()),
                request: serde_json::to_value(&f.fixture.request).unwrap_or(Value::Null),
                script: serde_json::to_value(&f.fixture.engine).unwrap_or(Value::Null),
            };
            match findings.iter_mut().find(|x| x.key() == finding.key()) {
                Some(seen) => seen.seeds.push(r.seed),
                None => findings.push(finding),
            }
        }
        findings.sort_by_key(|f| std::cmp::Reverse(f.seeds.len()));
        let first = rounds.first();
        Self {
            targets: first.map(|r| r.targets.clone()).unwrap_or_default(),
            endpoints: first
                .map(|r| r.scope.endpoints.to_string())
                .unwrap_or_default(),
            seeds: rounds.iter().map(|r| r.seed).collect(),
            cases: rounds.iter().map(|r| r.exchanged).sum(),
            seconds: rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum(),
            findings,
            known,
            incomplete,
        }
    }

    pub fn failed(&self) -> bool {
        !self.findings.is_empty() || !self.incomplete.is_empty()
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let rate = self.cases as f64 / self.seconds.max(1e-9);
        let seeds = match (self.seeds.first(), self.seeds.last()) {
            (Some(a), Some(b)) if a != b => format!("seeds {a} to {b}"),
            (Some(a), _) => format!("seed {a}"),
            _ => "no seed".into(),
        };
        let mut s = format!(
            "soak: {} rounds, {} cases in {:.1} s ({rate:.0} cases/s), {seeds}, endpoint {}, targets {}\n",
            self.seeds.len(),
            self.cases,
            self.seconds,
            self.endpoints,
            self.targets.join(", ")
        );
        s.push_str(&known_line(&self.known, "registered differences met"));
        for line in &self.incomplete {
            s.push_str(&format!("  INCOMPLETE {line}\n"));
        }
        if self.findings.is_empty() {
            s.push_str("no property was violated\n");
            return s;
        }
        s.push_str(&format!(
            "FAILED: {} distinct findings\n",
            self.findings.len()
        ));
        for (i, f) in self.findings.iter().enumerate() {
            let seeds: Vec<String> = f.seeds.iter().map(u64::to_string).collect();
            s.push_str(&format!(
                "{}. {} against {} in {} rounds (seeds {}): {}\n   {}\n",
                i + 1,
                f.property,
                f.target,
                f.seeds.len(),
                seeds.join(", "),
                f.shape,
                f.detail
            ));
            if let Some(path) = &f.fixture {
                s.push_str(&format!("   minimal case: {path}\n"));
            }
        }
        s
    }
}
