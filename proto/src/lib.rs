//! The Lanes protocol: messages and service stubs generated from `proto/lanes/v1`, shared by
//! the coordinator, the agent, the gateway and the tests, and what both ends of the API must
//! agree on beyond the messages: the input limits ([`limits`]), the callback URL rules
//! ([`urls`]) and the metadata key that names a refused request's field ([`FIELD_METADATA`]).

pub mod limits;
pub mod urls;

/// gRPC metadata key of an `INVALID_ARGUMENT` status naming the request field at fault
/// (e.g. `callback_url`, `jobs[2].failure_callback_url`), so the gateway can answer its 422
/// with `field` even for checks only the coordinator can make.
pub const FIELD_METADATA: &str = "lanes-field";

/// `lanes.v1`: jobs, the agent, client, admin and schedule services.
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
