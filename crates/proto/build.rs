//! Generates Rust code from `proto/` with the vendored `protoc`, so that no
//! system protobuf compiler is needed.

use std::path::PathBuf;

const PROTOS: [&str; 3] = [
    "govchain/types/v1/types.proto",
    "govchain/node/v1/node.proto",
    "govchain/consensus/v1/consensus.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(out.join("govchain_descriptor.bin"))
        .bytes(".govchain.types.v1.TransactionEnvelope.payload")
        .bytes(".govchain.consensus.v1.PrePrepare.block")
        .compile_with_config(config, &protos, std::slice::from_ref(&root))?;
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}
