//! The load benchmark of provisiond (DESIGN.md section 6): the echo server that sets the ceiling,
//! the Set load generator, and what `bench-run` uses to drive them against provisiond.

#[path = "../../benches/fixtures/mod.rs"]
pub mod fixtures;

pub mod echo;
pub mod load;

/// `message` as a gRPC request body: a zero compression flag, the big-endian length, the bytes.
pub fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let length = u32::try_from(bytes.len()).expect("message under 4 GiB");
    let mut frame = Vec::with_capacity(5 + bytes.len());
    frame.push(0);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&bytes);
    frame
}
