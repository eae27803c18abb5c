//! `kube-emulator --listen 127.0.0.1:0 --crds DIR_OR_FILE --kubeconfig OUT_PATH [--simulate-workloads 2s [--stepped-rollouts]] [--watch-delay 50ms-500ms]`
//! (`--help` for all flags; durations are Go durations, parsed by `kube::core::Duration`)
//!
//! Serves the emulated API over HTTP, prints its URL, writes a kubeconfig, and runs until
//! SIGTERM/SIGINT.
//!
//! `kube-emulator cel-cost DIR_OR_FILE...` prints the API server's estimated cost of every
//! CEL rule of the CRDs and exits 1 if a real server would refuse one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube_emulator::Emulator;

/// Serves the emulated Kubernetes API over HTTP.
#[derive(Parser)]
#[command(name = "kube-emulator", args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (127.0.0.1:0 = a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// CRD YAML file or directory of *.yaml files to install (repeatable).
    #[arg(long)]
    crds: Vec<PathBuf>,
    /// Write a kubeconfig pointing at the server to this path.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Report Deployments/StatefulSets/DaemonSets rolled out after this delay (a Go duration:
    /// 2s, 500ms).
    #[arg(long = "simulate-workloads", value_parser = go_duration)]
    simulate: Option<Duration>,
    /// With --simulate-workloads: half way, report part of the replicas updated first.
    #[arg(long = "stepped-rollouts", requires = "simulate")]
    stepped: bool,
    /// Deliver watch events after a random delay in MIN-MAX (e.g. 50ms-500ms): stale informers.
    #[arg(long = "watch-delay", value_parser = delay_range)]
    watch_delay: Option<(Duration, Duration)>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the estimated CEL cost of every rule of the CRDs; exit 1 if a real API server
    /// would refuse one.
    CelCost {
        /// CRD YAML files or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// A Go duration (`500ms`, `2s`, `1m30s`), as the API server and kubectl write them.
fn go_duration(s: &str) -> Result<Duration, String> {
    s.parse::<kube::core::Duration>()
        .map(Duration::from)
        .map_err(|e| format!("{s:?}: {e}"))
}

/// `MIN-MAX` or a single duration (`MIN` = `MAX`).
fn delay_range(s: &str) -> Result<(Duration, Duration), String> {
    let (min, max) = s.split_once('-').unwrap_or((s, s));
    let (min, max) = (go_duration(min)?, go_duration(max)?);
    if min > max {
        return Err(format!("{s:?}: the minimum is larger than the maximum"));
    }
    Ok((min, max))
}

/// `cel-cost`: one line per rule (cost = per call × cardinality), a total per schema, and the
/// refusals a real API server would give.
fn cel_cost(paths: &[String]) -> Result<bool, String> {
    use kube_emulator::cel_cost::{crd_schemas, estimate_schema};
    use serde::Deserialize;
    let mut ok = true;
    for path in paths {
        let yaml = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for doc in serde_yaml::Deserializer::from_str(&yaml) {
            let crd = serde_json::Value::deserialize(doc).map_err(|e| format!("{path}: {e}"))?;
            let name = crd
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or("?");
            for (field, schema) in crd_schemas(&crd) {
                let cost = estimate_schema(schema, &field);
                println!("{name}");
                for r in &cost.rules {
                    let at = r.field.strip_prefix(&field).unwrap_or(&r.field);
                    println!(
                        "  {:>15} = {:>9} x {:<9} {at}\n  {:>15}   {}",
                        r.cost, r.per_call, r.cardinality, "", r.rule
                    );
                }
                println!(
                    "  {:>15}   total (limits: 10000000 per rule, 100000000 per CRD)",
                    cost.total
                );
                for refusal in cost.refusals(&field) {
                    ok = false;
                    println!("  REFUSED: {refusal}");
                }
            }
        }
    }
    Ok(ok)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    if let Some(Command::CelCost { paths }) = &args.command {
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                let mut entries: Vec<String> = std::fs::read_dir(path)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .map(|e| e.path().display().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                entries.retain(|f| f.ends_with(".yaml") || f.ends_with(".yml"));
                entries.sort();
                files.extend(entries);
            } else {
                files.push(path.display().to_string());
            }
        }
        match cel_cost(&files) {
            Ok(true) => std::process::exit(0),
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
    let emu = Emulator::new();
    for p in &args.crds {
        if let Err(e) = emu.install_crds_path(p) {
            eprintln!("installing CRDs from {}: {e}", p.display());
            std::process::exit(1);
        }
    }
    match args.simulate {
        Some(d) if args.stepped => emu.simulate_stepped_workload_controllers(d),
        Some(d) => emu.simulate_workload_controllers(d),
        None => {}
    }
    emu.set_watch_delay(args.watch_delay);
    let served = match emu.serve(args.listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("listening on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    if let Some(path) = &args.kubeconfig
        && let Err(e) = std::fs::write(path, served.kubeconfig_yaml())
    {
        eprintln!("writing {}: {e}", path.display());
        std::process::exit(1);
    }
    println!("{}", served.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    served.stop().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_the_demo_uses_them() {
        let a = Args::try_parse_from([
            "kube-emulator",
            "--listen",
            "127.0.0.1:0",
            "--crds",
            "crds",
            "--crds=more",
            "--simulate-workloads",
            "2s",
            "--stepped-rollouts",
            "--watch-delay=50ms-500ms",
        ])
        .unwrap();
        assert_eq!(a.crds, vec![PathBuf::from("crds"), PathBuf::from("more")]);
        assert_eq!(a.simulate, Some(Duration::from_secs(2)));
        assert!(a.stepped);
        assert_eq!(
            a.watch_delay,
            Some((Duration::from_millis(50), Duration::from_millis(500)))
        );
        assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn almost_valid_flags_are_refused() {
        for argv in [
            vec!["kube-emulator", "--stepped-rollouts"],
            vec!["kube-emulator", "--simulate-workloads", "2"],
            vec!["kube-emulator", "--watch-delay", "500ms-50ms"],
            vec!["kube-emulator", "--listen", "localhost"],
            vec!["kube-emulator", "--bogus"],
            vec!["kube-emulator", "cel-cost"],
        ] {
            assert!(Args::try_parse_from(&argv).is_err(), "{argv:?}");
        }
        let cost = Args::try_parse_from(["kube-emulator", "cel-cost", "crds"]).unwrap();
        assert!(matches!(cost.command, Some(Command::CelCost { .. })));
    }
}
