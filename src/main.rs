use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rdscred", version, about = "Database credentials on AWS, owned end to end")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CRDs as YAML, or write them into a directory.
    Crd {
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow_free::Result {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out_dir: None } => print!("{}", rdscred::crd::crds_yaml()),
        Command::Crd { out_dir: Some(dir) } => {
            for (name, yaml) in rdscred::crd::crd_files() {
                std::fs::write(dir.join(name), yaml)?;
            }
        }
    }
    Ok(())
}

mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
