//! Generates the prost types from `switchboard.proto` with protox (no system `protoc`), and
//! their proto3 JSON mapping (serde) with pbjson-build from the same descriptors.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=switchboard.proto");
    let fds = protox::compile(["switchboard.proto"], ["."])?;
    let descriptors = fds.encode_to_vec();
    prost_build::Config::new()
        .bytes(["."])
        .btree_map(["."])
        // The one large member: boxed so that `Message` stays small.
        .boxed(".switchboard.Message.message.stream_open")
        .compile_fds(fds)?;
    // Default values are written out (`"result": "OK"` rather than nothing), so that JSON
    // clients see every field; unknown fields are refused on input.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .emit_fields()
        .btree_map(["."])
        .build(&[".switchboard"])?;
    Ok(())
}
