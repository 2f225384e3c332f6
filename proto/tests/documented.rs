//! Every field of every `lanes.v1` request message carries a comment, so `grpcurl describe`
//! (server reflection serves `FILE_DESCRIPTOR_SET`, comments included) tells a caller what
//! to send without the .proto files.

use prost::Message;
use prost_types::FileDescriptorSet;

/// `FileDescriptorProto.message_type` and `DescriptorProto.field` field numbers: a
/// source location path [4, message, 2, field] points at one field.
const MESSAGE_TYPE: i32 = 4;
const FIELD: i32 = 2;

#[test]
fn every_request_field_is_documented() {
    let set = FileDescriptorSet::decode(lanes_proto::FILE_DESCRIPTOR_SET).expect("descriptor");
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in set.file.iter().filter(|f| f.package() == "lanes.v1") {
        let info = file.source_code_info.as_ref().expect("source info kept");
        for (m, msg) in file.message_type.iter().enumerate() {
            if !msg.name().ends_with("Request") {
                continue;
            }
            for (f, field) in msg.field.iter().enumerate() {
                checked += 1;
                let path = [MESSAGE_TYPE, m as i32, FIELD, f as i32];
                let documented = info
                    .location
                    .iter()
                    .any(|l| l.path == path && l.leading_comments().trim().len() > 3);
                if !documented {
                    missing.push(format!("{}: {}.{}", file.name(), msg.name(), field.name()));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} request fields found");
    assert!(
        missing.is_empty(),
        "request fields without a comment: {missing:#?}"
    );
}
