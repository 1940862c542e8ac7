use clap::Parser;
use glance_share_broker::config::{Cli, Command};
use glance_share_broker::{startup, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or_else(|| Command::serve_from_env().unwrap_or_else(|e| e.exit()));
    let telemetry = match telemetry::init_logging(cli.log_format, &cli.otel) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: starting logging and trace export: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ran = startup::run(command).await;
    // Requests and jobs have finished: their last spans go out now.
    telemetry.shutdown().await;
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
