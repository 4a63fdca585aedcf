use clap::Parser;
#[derive(Parser)]
struct W {
    #[command(flatten)]
    a: harness::fuzz::FuzzArgs,
}
#[test]
fn scratch() {
    let args: Vec<String> = std::env::var("FUZZ_ARGS")
        .unwrap()
        .split(' ')
        .map(String::from)
        .collect();
    let w = W::parse_from(std::iter::once("x".to_string()).chain(args));
    let code = harness::fuzz::fuzz_command(w.a);
    println!("{code:?}");
}
