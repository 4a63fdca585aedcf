//! The engine's script stepping under tokio: how fast `Engine::submit`
//! streams hand out the steps of unpaced scripts; and the engine core's
//! encoding of a step's outputs into one `EngineCoreOutputs` message.
//!
//! `cargo bench -p mock-engine --bench engine`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use mock_engine::script::{FinishReason, Script, Step};
use mock_engine::{Engine, EngineRequest};

const TOKENS: u32 = 256;

fn unpaced_script() -> Script {
    Script {
        steps: (0..TOKENS)
            .map(|i| Step {
                tokens: vec![100 + i],
                finish: (i + 1 == TOKENS).then_some(FinishReason::Length),
                ..Step::default()
            })
            .collect(),
        ..Script::default()
    }
}

fn submit(c: &mut Criterion) {
    let engine = Engine::default();
    engine.register(vec![1, 2, 3], unpaced_script());
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("Engine::submit");
    g.throughput(Throughput::Elements(u64::from(TOKENS)));
    g.bench_function("one scripted request, 256 steps", |b| {
        b.iter(|| {
            single.block_on(async {
                let stream = engine.submit(EngineRequest::new("r", vec![1, 2, 3]));
                black_box(stream.count().await)
            })
        })
    });
    g.bench_function("one generated request, 256 tokens", |b| {
        b.iter(|| {
            single.block_on(async {
                let mut request = EngineRequest::new("g", vec![7, 8, 9]);
                request.max_tokens = Some(TOKENS);
                black_box(engine.submit(request).count().await)
            })
        })
    });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .unwrap();
    g.throughput(Throughput::Elements(64 * u64::from(TOKENS)));
    g.bench_function("64 concurrent scripted requests, 256 steps", |b| {
        b.iter(|| {
            multi.block_on(async {
                let tasks: Vec<_> = (0..64)
                    .map(|i| {
                        let stream =
                            engine.submit(EngineRequest::new(format!("r{i}"), vec![1, 2, 3]));
                        tokio::spawn(stream.count())
                    })
                    .collect();
                for t in tasks {
                    black_box(t.await.unwrap());
                }
            })
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    use mock_engine::wire::{EngineCoreOutput, OutputsWriter, VllmVersion};
    let outputs: Vec<EngineCoreOutput> = (0..256)
        .map(|i| EngineCoreOutput::tokens(format!("cmpl-{i:08x}-0"), vec![1000 + i]))
        .collect();
    let mut g = c.benchmark_group("OutputsWriter");
    g.throughput(Throughput::Elements(outputs.len() as u64));
    g.bench_function("a step of 256 one-token outputs", |b| {
        let mut writer = OutputsWriter::new(VllmVersion::V0_32_0.layout());
        b.iter(|| {
            for o in &outputs {
                writer.push(o);
            }
            black_box(writer.finish(0, 1.0))
        })
    });
    g.finish();
}

criterion_group!(benches, submit, encode);
criterion_main!(benches);
