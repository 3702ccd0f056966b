//! Compiles the protos with protox (pure Rust: a fresh machine needs no `protoc`) and writes the
//! descriptor set, with source info so reflection clients show the comments.
use std::{env, error::Error, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/provision/v1/provision_policy.proto",
    "proto/provision/v1/provision_policy_service.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    // tonic-prost-build 0.14 stores `emit_rerun_if_changed` but never prints it.
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("provision_descriptor.bin"),
        protox::prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
