//! Deliberately broken servers are caught by `genconform fuzz`, and the
//! shrunk case is written as a fixture that reproduces the break.
//!
//! Each broken server is a proxy in front of a healthy reference server (with
//! its script control channel on, so the fuzzer scripts the engine through
//! the proxy) that damages the event stream in one way.

mod common;

use common::{Damage, drop_done, spawn_broken_proxy, usage_off_by_one, usage_on_first_chunk};
use harness::fuzz::cases::Endpoints;
use harness::fuzz::oracle::Property;
use harness::fuzz::{Found, FuzzOptions, FuzzReport, fuzz, replay_fixture};
use harness::targets::TargetSpec;
use mock_engine::script::Endpoint;
use serde_json::Value;

/// A healthy reference server and a damaging proxy in front of it, on a
/// runtime of their own (the fuzzer blocks the test's thread on its own).
struct Broken {
    runtime: tokio::runtime::Runtime,
    healthy: Option<reference_server::RunningServer>,
    proxy: String,
}

impl Broken {
    fn start(damage: Damage) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (healthy, proxy) = runtime.block_on(async {
            let config = reference_server::Config {
                enable_script_control: true,
                ..reference_server::Config::default()
            };
            let healthy = reference_server::spawn(config, mock_engine::Engine::default())
                .await
                .expect("reference starts");
            let proxy = spawn_broken_proxy(healthy.base_url(), damage).await;
            (healthy, proxy)
        });
        Self {
            runtime,
            healthy: Some(healthy),
            proxy,
        }
    }

    fn healthy_url(&self) -> String {
        self.healthy.as_ref().unwrap().base_url()
    }

    fn target(&self) -> TargetSpec {
        TargetSpec::Url {
            base: self.proxy.clone(),
            name: Some("broken".into()),
        }
    }

    /// Fuzzes the proxy until something breaks; returns the shrunk failure.
    fn fuzz(&self, found_dir: &std::path::Path) -> Found {
        self.fuzz_targets(vec![self.target()], found_dir)
    }

    fn fuzz_targets(&self, targets: Vec<TargetSpec>, found_dir: &std::path::Path) -> Found {
        self.fuzz_report(targets, found_dir, FuzzOptions::default().jobs)
            .found
            .expect("checked by fuzz_report")
    }

    /// Fuzzes the proxy on one endpoint until something breaks.
    fn fuzz_endpoint(&self, endpoint: Endpoint, found_dir: &std::path::Path) -> Found {
        let options = FuzzOptions {
            endpoints: Endpoints::One(endpoint),
            ..self.options(vec![self.target()], found_dir, FuzzOptions::default().jobs)
        };
        self.fuzz_with(&options)
            .found
            .expect("checked by fuzz_with")
    }

    fn options(
        &self,
        targets: Vec<TargetSpec>,
        found_dir: &std::path::Path,
        jobs: usize,
    ) -> FuzzOptions {
        FuzzOptions {
            targets,
            cases: 300,
            seed: 5,
            found_dir: found_dir.to_path_buf(),
            jobs,
            ..FuzzOptions::default()
        }
    }

    /// Fuzzes with `jobs` cases in flight; the report has a failure.
    fn fuzz_report(
        &self,
        targets: Vec<TargetSpec>,
        found_dir: &std::path::Path,
        jobs: usize,
    ) -> FuzzReport {
        self.fuzz_with(&self.options(targets, found_dir, jobs))
    }

    fn fuzz_with(&self, options: &FuzzOptions) -> FuzzReport {
        let report = fuzz(options).expect("the fuzzer runs");
        assert_eq!(
            report.channels.last().unwrap().1,
            "control channel",
            "{}",
            report.summary()
        );
        assert!(report.found.is_some(), "not caught:\n{}", report.summary());
        report
    }

    /// The written fixture, loaded as the corpus would load it, and checked
    /// against the broken and the healthy server.
    fn reproduce(&self, found: &Found) -> (mock_engine::Fixture, Vec<Property>, Vec<Property>) {
        let path = found.written.as_ref().expect("the fixture is written");
        let fixture = mock_engine::fixture::load_file(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fixture, found.fixture);
        let check = |base: String| {
            self.runtime
                .block_on(replay_fixture(&base, &fixture, "tiny", Default::default()))
                .expect("replays")
                .into_iter()
                .map(|v| v.property)
                .collect::<Vec<_>>()
        };
        let broken = check(self.proxy.clone());
        let healthy = check(self.healthy_url());
        (fixture, broken, healthy)
    }
}

impl Drop for Broken {
    fn drop(&mut self) {
        if let Some(healthy) = self.healthy.take() {
            self.runtime.block_on(healthy.shutdown());
        }
    }
}

fn body(fixture: &mock_engine::Fixture) -> &Value {
    fixture.request.body.as_ref().expect("a JSON body")
}

#[test]
fn a_server_that_drops_done_is_caught_and_shrunk_to_a_fixture() {
    let broken = Broken::start(drop_done);
    let dir = tempfile::tempdir().unwrap();
    let found = broken.fuzz(dir.path());
    assert_eq!(found.violation.property, Property::Done, "{found:#?}");
    let (fixture, on_broken, on_healthy) = broken.reproduce(&found);
    assert!(
        fixture.description.contains("one-done-last"),
        "{}",
        fixture.description
    );
    assert!(fixture.request.is_stream(), "{fixture:#?}");
    assert!(on_broken.contains(&Property::Done), "{on_broken:?}");
    assert_eq!(on_healthy, [], "the healthy server keeps every property");
    // Shrunk: nothing the break does not need is left in the request.
    let b = body(&fixture).as_object().unwrap();
    let mut keys: Vec<&str> = b.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["sampling_params", "stream", "token_ids"], "{b:?}");
    assert!(fixture.request.headers.is_empty(), "{fixture:#?}");
}

#[test]
fn usage_on_the_wrong_chunk_is_caught_and_shrunk_to_a_fixture() {
    // Moves the usage object from the usage-only event onto the first event.
    let broken = Broken::start(usage_on_first_chunk);
    let dir = tempfile::tempdir().unwrap();
    let found = broken.fuzz(dir.path());
    let usage_properties = [
        Property::UsageEvent,
        Property::ContinuousUsage,
        Property::UsageArithmetic,
    ];
    assert!(
        usage_properties.contains(&found.violation.property),
        "{found:#?}"
    );
    let (fixture, on_broken, on_healthy) = broken.reproduce(&found);
    assert!(
        on_broken.contains(&found.violation.property),
        "{on_broken:?}"
    );
    assert_eq!(on_healthy, [], "the healthy server keeps every property");
    assert_eq!(
        body(&fixture).pointer("/stream_options/include_usage"),
        Some(&Value::Bool(true)),
        "{fixture:#?}"
    );
}

#[test]
fn a_usage_count_off_by_one_is_caught_on_every_endpoint() {
    let broken = Broken::start(usage_off_by_one);
    for endpoint in Endpoint::ALL {
        let dir = tempfile::tempdir().unwrap();
        let found = broken.fuzz_endpoint(endpoint, dir.path());
        assert_eq!(found.fixture.request.endpoint, endpoint, "{found:#?}");
        assert_eq!(
            found.violation.property,
            Property::UsageArithmetic,
            "{endpoint}: {found:#?}"
        );
        let (_, on_broken, on_healthy) = broken.reproduce(&found);
        assert!(
            on_broken.contains(&Property::UsageArithmetic),
            "{endpoint}: {on_broken:?}"
        );
        assert_eq!(
            on_healthy,
            [],
            "{endpoint}: the healthy server keeps every property"
        );
    }
}

#[test]
fn the_same_seed_finds_the_same_minimal_case() {
    let broken = Broken::start(drop_done);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = broken.fuzz(a.path());
    let second = broken.fuzz(b.path());
    assert_eq!(first.case, second.case);
    assert_eq!(first.fixture, second.fixture);
}

#[test]
fn cases_in_flight_together_find_what_a_serial_run_finds() {
    let broken = Broken::start(drop_done);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let serial = broken.fuzz_report(vec![broken.target()], a.path(), 1);
    let together = broken.fuzz_report(vec![broken.target()], b.path(), 8);
    // The same cases judged, in the same order, up to the same first failure.
    assert_eq!(serial.ran, together.ran);
    assert_eq!(serial.generated, together.generated);
    let (serial, together) = (serial.found.unwrap(), together.found.unwrap());
    assert_eq!(serial.case, together.case);
    assert_eq!(serial.fixture, together.fixture);
    assert_eq!(serial.violation.property, together.violation.property);
}

#[test]
fn a_difference_no_invariant_covers_is_caught_by_comparing_targets() {
    // Every invariant still holds; only the reference does not send this field.
    let broken = Broken::start(|events| {
        events
            .into_iter()
            .map(
                |e| match serde_json::from_str::<Value>(e.trim_start_matches("data: ")) {
                    Ok(Value::Object(mut m)) => {
                        m.insert("system_fingerprint".into(), "fp".into());
                        format!("data: {}", Value::Object(m))
                    }
                    _ => e,
                },
            )
            .collect()
    });
    let dir = tempfile::tempdir().unwrap();
    let found = broken.fuzz_targets(vec![TargetSpec::Reference, broken.target()], dir.path());
    assert_eq!(
        found.violation.property,
        Property::Differential,
        "{found:#?}"
    );
    assert_eq!(found.target, "broken");
    assert!(
        found.violation.detail.contains("system_fingerprint"),
        "{}",
        found.violation.detail
    );
    let fixture = mock_engine::fixture::load_file(found.written.as_ref().unwrap()).unwrap();
    assert!(fixture.request.is_stream(), "{fixture:#?}");
    assert!(
        fixture.description.contains("targets-agree"),
        "{}",
        fixture.description
    );
}
