//! Generates the tonic/prost code from `proto/`. Uses the `protoc` binary
//! vendored by `protoc-bin-vendored` unless `PROTOC` is set, so a fresh machine
//! (or a Docker build) needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let protos = [
        "proto/rivulet/v1/common.proto",
        "proto/rivulet/v1/raft.proto",
        "proto/rivulet/v1/controller.proto",
        "proto/rivulet/v1/broker.proto",
        "proto/rivulet/v1/groups.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // For gRPC server reflection: generic tools discover the API.
        .file_descriptor_set_path(out_dir.join("rivulet_descriptor.bin"))
        // Record batches travel as `bytes::Bytes`: fetched batches go from the
        // log to the wire without a copy.
        .bytes(".rivulet.v1")
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
