//! The harness's own hot paths: lexing a captured event stream, normalising
//! it into a transcript, and the bench client's event scanner.
//!
//! `cargo bench -p harness --bench hot_paths`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use harness::bench::scan::SseScanner;
use harness::normalize::{ClientValues, TranscriptBuilder};
use harness::sse::lex;

/// A vllm-rs-shaped stream of `events` one-token chunks, usage and [DONE],
/// cut into reads of `read` bytes.
fn stream(events: usize, read: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut body = Vec::new();
    for i in 0..events {
        let finish = if i + 1 == events {
            "\"length\""
        } else {
            "null"
        };
        body.extend_from_slice(
            format!(
                "data: {{\"request_id\":\"gen-5f1c9a\",\"choices\":[{{\"index\":0,\"token_ids\":[{}],\"finish_reason\":{finish}}}]}}\n\n",
                100 + i % 800
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        b"data: {\"request_id\":\"gen-5f1c9a\",\"choices\":[],\"usage\":{\"prompt_tokens\":16,\"completion_tokens\":256,\"total_tokens\":272}}\n\ndata: [DONE]\n\n",
    );
    let chunks = body.chunks(read).map(<[u8]>::to_vec).collect();
    (body, chunks)
}

fn sse_lex(c: &mut Criterion) {
    let (body, chunks) = stream(256, 1460);
    let mut g = c.benchmark_group("sse::lex");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("256 events, 1460-byte reads", |b| {
        b.iter(|| black_box(lex(black_box(&chunks))))
    });
    let one: Vec<Vec<u8>> = body.chunks(1).map(<[u8]>::to_vec).collect();
    g.bench_function("256 events, 1-byte reads", |b| {
        b.iter(|| black_box(lex(black_box(&one))))
    });
    g.finish();
}

fn normalize(c: &mut Criterion) {
    let (body, chunks) = stream(256, 1460);
    let data = lex(&chunks).data();
    let headers = vec![
        ("content-type".to_string(), "text/event-stream".to_string()),
        ("x-request-id".to_string(), "gen-5f1c9a".to_string()),
    ];
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(data.len() as u64));
    g.bench_function("256-event transcript", |b| {
        b.iter(|| {
            black_box(TranscriptBuilder::new(ClientValues::default()).build(
                Some(200),
                &headers,
                &body,
                Some(data.clone()),
                Vec::new(),
                None,
            ))
        })
    });
    g.finish();
}

fn bench_scanner(c: &mut Criterion) {
    let (body, chunks) = stream(256, 16 * 1024);
    let mut g = c.benchmark_group("bench::scan");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("256 events, 16 KiB reads", |b| {
        b.iter(|| {
            let mut scanner = SseScanner::default();
            let mut tokens = 0u32;
            for chunk in &chunks {
                scanner.feed(black_box(chunk), |e| tokens += e.tokens);
            }
            black_box(tokens)
        })
    });
    g.finish();
}

criterion_group!(benches, sse_lex, normalize, bench_scanner);
criterion_main!(benches);
