use clap::Parser;
use glance_share_broker::config::{Cli, Command};
use glance_share_broker::{startup, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or_else(|| Command::serve_from_env().unwrap_or_else(|e| e.exit()));
    telemetry::init_logging(cli.log_format);
    match startup::run(command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
