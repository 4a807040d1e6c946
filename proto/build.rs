//! Generates the prost types from `switchboard.proto` with protox (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=switchboard.proto");
    let fds = protox::compile(["switchboard.proto"], ["."])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
