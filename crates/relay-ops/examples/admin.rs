//! A small admin tool that embeds relay-ops, as an admin panel would after saving a domain:
//! it triggers a sync, then prints the gateway's status and the run as one JSON object.
//!
//! ```sh
//! cargo run -p relay-ops --example admin -- /opt/mailserver/config/relay-sync.conf
//! ```
//!
//! It exits with the run's exit code (SPEC §8), or 2 when the config cannot be loaded.

use std::process::ExitCode;

use relay_ops::{Config, Gateway, SyncOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let path = std::env::args_os().nth(1);
    let config = match Config::load(path.as_deref().map(AsRef::as_ref), std::env::vars_os()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("admin: {error}");
            return ExitCode::from(2);
        }
    };
    let gateway = Gateway::new(config);
    let run = gateway.sync(SyncOptions::default()).await;
    let status = gateway.status().await;
    let report = serde_json::json!({
        "run": run,
        "status": relay_ops::json::status(&status, true),
    });
    match serde_json::to_string_pretty(&report) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("admin: cannot render the report: {error}"),
    }
    ExitCode::from(run.exit_code())
}
