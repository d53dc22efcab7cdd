//! Generates Rust code from `proto/` with the vendored `protoc`, so that no
//! system protobuf compiler is needed. Messages and gRPC services are
//! generated apart, so that the services (and tonic) are optional.

use std::path::PathBuf;

const PROTOS: [&str; 8] = [
    "govchain/types/v1/types.proto",
    "govchain/node/v1/node.proto",
    "govchain/consensus/v1/consensus.proto",
    "govchain/blob/v1/blob.proto",
    "govchain/identity/v1/identity.proto",
    "govchain/admin/v1/admin.proto",
    "govchain/approval/v1/approval.proto",
    "govchain/directory/v1/directory.proto",
];
const PACKAGES: [(&str, &str); 8] = [
    (".govchain.types.v1", "crate::types::v1"),
    (".govchain.node.v1", "crate::node::v1"),
    (".govchain.consensus.v1", "crate::consensus::v1"),
    (".govchain.blob.v1", "crate::blob::v1"),
    (".govchain.identity.v1", "crate::identity::v1"),
    (".govchain.admin.v1", "crate::admin::v1"),
    (".govchain.approval.v1", "crate::approval::v1"),
    (".govchain.directory.v1", "crate::directory::v1"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let messages = out.join("messages");
    std::fs::create_dir_all(&messages)?;
    builder(false)
        .out_dir(&messages)
        .file_descriptor_set_path(out.join("govchain_descriptor.bin"))
        .compile_with_config(config()?, &protos, std::slice::from_ref(&root))?;
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        let services = out.join("services");
        std::fs::create_dir_all(&services)?;
        let mut builder = builder(true)
            .out_dir(&services)
            .codec_path("crate::codec::StrictCodec");
        for (package, path) in PACKAGES {
            builder = builder.extern_path(package, path);
        }
        builder.compile_with_config(config()?, &protos, std::slice::from_ref(&root))?;
    }
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}

fn builder(services: bool) -> tonic_prost_build::Builder {
    tonic_prost_build::configure()
        .build_client(services)
        .build_server(services)
        .bytes(".govchain.types.v1.TransactionEnvelope.payload")
        .bytes(".govchain.consensus.v1.PrePrepare.block")
        .bytes(".govchain.blob.v1.UploadRequest.data")
        .bytes(".govchain.blob.v1.DownloadResponse.data")
        .bytes(".govchain.identity.v1.ReadAttributeResponse.data")
        .bytes(".govchain.admin.v1.BackupChunk.data")
}

fn config() -> Result<tonic_prost_build::Config, Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    Ok(config)
}
