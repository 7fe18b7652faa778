//! Broker registration.

use super::ControllerResult;
use crate::image::{BrokerRegistration, MetadataImage};
use crate::record::MetadataRecord;

/// Registers a broker; a registration identical to the current one writes nothing, so restarts are idempotent.
pub fn register_broker(
    image: &MetadataImage,
    registration: BrokerRegistration,
) -> ControllerResult<()> {
    let records = if image.brokers.get(&registration.node_id) == Some(&registration) {
        Vec::new()
    } else {
        vec![MetadataRecord::RegisterBroker(registration)]
    };
    ControllerResult {
        records,
        response: (),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MetadataDelta;

    #[test]
    fn registration_is_idempotent() {
        let reg = BrokerRegistration {
            node_id: 1,
            host: "h".into(),
            port: 9092,
            rack: None,
        };
        let image = MetadataImage::empty("c", 1);
        let first = register_broker(&image, reg.clone());
        assert_eq!(first.records.len(), 1);
        let mut delta = MetadataDelta::new(&image);
        delta.replay(0, &first.records[0]).unwrap();
        let image = delta.apply();
        assert!(register_broker(&image, reg.clone()).records.is_empty());
        let moved = BrokerRegistration { port: 9093, ..reg };
        assert_eq!(register_broker(&image, moved).records.len(), 1);
    }
}
