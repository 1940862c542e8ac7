use clap::Parser;
use glance_share_broker::config::Cli;
use glance_share_broker::{startup, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `serve` is the default command.
    let mut args: Vec<String> = std::env::args().collect();
    if args.len() == 1 {
        args.push("serve".into());
    }
    let cli = Cli::parse_from(args);
    telemetry::init_logging(cli.log_format);
    match startup::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
