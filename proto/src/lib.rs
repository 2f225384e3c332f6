//! The Lanes protocol: messages and service stubs generated from `proto/lanes/v1`, shared by
//! the coordinator, the agent, the gateway and the tests, and the API's input limits.

pub mod limits;

/// `lanes.v1`: jobs, the agent, client and admin services.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("lanes.v1");
}

/// `externalscaler`: KEDA's external scaler protocol, served by the coordinator so KEDA can
/// scale agents with the work (down to zero).
pub mod externalscaler {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("externalscaler");
}

/// The encoded `FileDescriptorSet` of every `lanes.v1` file and of `externalscaler`, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lanes_descriptor.bin"));
