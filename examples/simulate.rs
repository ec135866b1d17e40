//! `cargo run --release --example simulate -- [ARGS]`: the same as `baton simulate`,
//! usable before (and independently of) the CLI wiring.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: mirror_baton::sim::SimulateArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = mirror_baton::sim::run_simulate(cli.args)?;
    std::process::exit(code);
}
