//! `kube-emulator --listen 127.0.0.1:0 --crds DIR_OR_FILE --kubeconfig OUT_PATH [--simulate-workloads 2s [--stepped-rollouts]] [--watch-delay 50ms-500ms]`
//!
//! Serves the emulated API over HTTP, prints its URL, writes a kubeconfig, and runs until
//! SIGTERM/SIGINT.
//!
//! `kube-emulator cel-cost DIR_OR_FILE...` prints the API server's estimated cost of every
//! CEL rule of the CRDs and exits 1 if a real server would refuse one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kube_emulator::Emulator;

const USAGE: &str = "usage: kube-emulator [--listen ADDR] [--crds DIR_OR_FILE]... [--kubeconfig OUT_PATH] [--simulate-workloads DURATION [--stepped-rollouts]] [--watch-delay MIN[-MAX]]\n\
  --listen              address to listen on (default 127.0.0.1:0 = a free port)\n\
  --crds                CRD YAML file or directory of *.yaml files to install (repeatable)\n\
  --kubeconfig          write a kubeconfig pointing at the server to this path\n\
  --simulate-workloads  report Deployments/StatefulSets/DaemonSets rolled out after this delay (e.g. 2s, 500ms)\n\
  --stepped-rollouts    with --simulate-workloads: half way, report part of the replicas updated first\n\
  --watch-delay         deliver watch events after a random delay in MIN-MAX (e.g. 50ms-500ms): stale informers\n\
       kube-emulator cel-cost DIR_OR_FILE...   print the estimated CEL cost of every rule of the CRDs";

struct Args {
    listen: SocketAddr,
    crds: Vec<PathBuf>,
    kubeconfig: Option<PathBuf>,
    simulate: Option<Duration>,
    stepped: bool,
    watch_delay: Option<(Duration, Duration)>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:0".parse().expect("static"),
        crds: vec![],
        kubeconfig: None,
        simulate: None,
        stepped: false,
        watch_delay: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--crds" => args.crds.push(PathBuf::from(value()?)),
            "--kubeconfig" => args.kubeconfig = Some(PathBuf::from(value()?)),
            "--simulate-workloads" => args.simulate = Some(parse_duration(&value()?)?),
            "--stepped-rollouts" => args.stepped = true,
            "--watch-delay" => {
                let v = value()?;
                let (min, max) = v.split_once('-').unwrap_or((&v, &v));
                args.watch_delay = Some((parse_duration(min)?, parse_duration(max)?));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
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
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("cel-cost") {
        let mut files = Vec::new();
        for p in &argv[1..] {
            let path = std::path::Path::new(p);
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
                files.push(p.clone());
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
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
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
        None if args.stepped => {
            eprintln!("--stepped-rollouts needs --simulate-workloads");
            std::process::exit(2);
        }
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
