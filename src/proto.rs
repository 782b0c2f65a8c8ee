//! The protobuf schema (`proto/voicegw.proto`) compiled to Rust: the CallEvent and the control
//! plane's resources. The JSON API mirrors these messages field for field.

/// Package `voicegw.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/voicegw.v1.rs"));
}

/// The encoded `FileDescriptorSet` of the schema (for checks that the JSON API matches it).
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/voicegw_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn call_events_round_trip_through_protobuf() {
        let mut data = prost_types::Struct::default();
        data.fields.insert(
            "digit".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("5".into())),
            },
        );
        let list = v1::CallEventList {
            events: vec![v1::CallEvent {
                call_id: "c".into(),
                seq: 3,
                at_us: 1_700_000_000_000_000,
                r#type: "dtmf".into(),
                data: Some(data),
            }],
            next_cursor: Some("1700000000000000.3".into()),
        };
        let bytes = list.encode_to_vec();
        assert_eq!(v1::CallEventList::decode(bytes.as_slice()).unwrap(), list);
    }

    #[test]
    fn the_descriptor_set_names_every_resource() {
        let set = prost_types::FileDescriptorSet::decode(DESCRIPTOR_SET).unwrap();
        let file = set
            .file
            .iter()
            .find(|f| f.name() == "voicegw.proto")
            .unwrap();
        let names: Vec<&str> = file.message_type.iter().map(|m| m.name()).collect();
        for name in [
            "CallEvent",
            "CallEventList",
            "Call",
            "CallList",
            "Tenant",
            "ApiKey",
            "PhoneNumber",
            "Script",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }
}
