//! The generated protobuf types of `provision.v1`: they are the domain model of this service.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("provision.v1");

/// The encoded descriptor set of `provision.v1`, with comments, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("provision_descriptor");
