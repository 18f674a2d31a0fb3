//! `plexus-podresources`: runs the kubelet PodResources stand-in (`plexus_e2e::podresources`) on a unix
//! socket until SIGTERM or SIGINT. Prints `plexus-podresources ready socket=PATH` once it serves.

use std::{io::Write, path::PathBuf, process::ExitCode};

use plexus_e2e::podresources::{Allocations, Seed, bind, serve};

const USAGE: &str = "usage: plexus-podresources --socket PATH [--seed FILE]

  --socket PATH  the unix socket to serve v1.PodResourcesLister on (e.g. a copy of
                 /var/lib/kubelet/pod-resources/kubelet.sock for plexus's podResourcesSocket)
  --seed FILE    JSON: {\"get\": true, \"pods\": [{\"namespace\": \"ns\", \"name\": \"pod\",
                 \"containers\": [{\"name\": \"c\", \"devices\": [{\"resourceName\": \"intel.com/vf\",
                 \"deviceIDs\": [\"0000:03:00.2\"]}]}]}]}; \"get\": false answers Get with
                 Unimplemented, as kubelets before Kubernetes 1.27 do";

fn parse_args() -> Result<(PathBuf, Allocations), String> {
    let (mut socket, mut seed) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--seed" => seed = Some(PathBuf::from(value("--seed")?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let socket = socket.ok_or("--socket is required")?;
    let allocations = match seed {
        None => Allocations {
            get: true,
            ..Allocations::default()
        },
        Some(p) => {
            let text =
                std::fs::read_to_string(&p).map_err(|e| format!("--seed {}: {e}", p.display()))?;
            serde_json::from_str::<Seed>(&text)
                .map_err(|e| format!("--seed {}: {e}", p.display()))?
                .into()
        }
    };
    Ok((socket, allocations))
}

fn main() -> ExitCode {
    let (socket, allocations) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("plexus-podresources: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plexus-podresources: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        let listener = bind(&socket)?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "plexus-podresources ready socket={}", socket.display());
        let _ = out.flush();
        drop(out);
        serve(listener, allocations, stop).await;
        let _ = std::fs::remove_file(&socket);
        Ok::<(), std::io::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexus-podresources: {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}
