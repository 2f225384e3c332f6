//! Compiles `lanes/v1/*.proto` and KEDA's `externalscaler/externalscaler.proto` with protox
//! (pure Rust), so no system `protoc` is needed, and writes the descriptor set that the
//! coordinator serves through gRPC reflection.
use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "lanes/v1/jobs.proto",
    "lanes/v1/agent.proto",
    "lanes/v1/client.proto",
    "lanes/v1/admin.proto",
    "lanes/v1/schedules.proto",
    "externalscaler/externalscaler.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("lanes_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
