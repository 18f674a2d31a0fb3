//! `plexus-apiserver`: runs the Kubernetes API stand-in (see `e2e/STANDIN.md`).
//!
//! Prints one line, `plexus-apiserver ready url=URL kubeconfig=PATH`, once it
//! serves, and runs until SIGTERM or SIGINT.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use plexus_e2e::apiserver::{ApiServer, Config, parse_seed};

const USAGE: &str = "usage: plexus-apiserver --kubeconfig PATH [--port N] [--host IP] \
[--token TOKEN] [--seed FILE]... [--nad-crd] [--log-requests]

  --kubeconfig PATH  write a kubeconfig for this server to PATH (required)
  --port N           port to listen on (default 0: any free port)
  --host IP          address to listen on (default 127.0.0.1)
  --token TOKEN      the admin's bearer token (system:masters; default: random)
  --seed FILE        JSON or YAML objects to create at start (repeatable)
  --nad-crd          create the NetworkAttachmentDefinition CRD at start
  --log-requests     print one line per request to stderr (with the user, for
                     ServiceAccount tokens)";

fn parse_args() -> Result<Config, String> {
    let mut config = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--kubeconfig" => config.kubeconfig = Some(PathBuf::from(value("--kubeconfig")?)),
            "--port" => {
                config.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--host" => {
                config.host = value("--host")?
                    .parse::<IpAddr>()
                    .map_err(|e| format!("--host: {e}"))?
            }
            "--token" => config.token = Some(value("--token")?),
            "--seed" => {
                let path = value("--seed")?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                config
                    .seed
                    .extend(parse_seed(&text).map_err(|e| format!("{path}: {e}"))?);
            }
            "--nad-crd" => config.nad_crd = true,
            "--log-requests" => config.log_to_stderr = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if config.kubeconfig.is_none() {
        return Err(format!("--kubeconfig is required\n{USAGE}"));
    }
    Ok(config)
}

async fn run(config: Config) -> Result<(), String> {
    let server = ApiServer::start(config).await.map_err(|e| e.to_string())?;
    let kubeconfig = server
        .kubeconfig_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "plexus-apiserver ready url={} kubeconfig={kubeconfig}",
        server.url()
    )
    .and_then(|()| out.flush())
    .map_err(|e| e.to_string())?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("plexus-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexus-apiserver: {e}");
            ExitCode::FAILURE
        }
    }
}
