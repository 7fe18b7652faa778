//! DescribeTopicPartitions (key 75), v0 (KIP-966): topics and their partitions from the metadata image, with the
//! eligible leader replicas and last known ELR that Metadata does not carry, a page at a time.
//!
//! As Kafka 4.x (`DescribeTopicPartitionsRequestHandler` and the metadata cache's `describeTopicResponse`):
//! - An empty topic list means every topic in the image; otherwise the named topics (deduplicated). Either way the
//!   topics before the cursor's topic are dropped and the rest answered in name order.
//! - At most `response_partition_limit` partitions, capped by the broker's `max.request.partition.size.limit`
//!   (Kafka's default, 2000; not configurable here) and at least 1. The cursor's topic starts at the cursor's
//!   partition, every later topic at 0. When a topic does not fit, `next_cursor` names it and its first partition
//!   left out; when the limit is used up exactly, it names the next topic at partition 0 (whether it exists or not).
//! - A named topic that does not exist answers UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for an invalid
//!   name) with a zero topic id and no partitions; it takes nothing from the limit. Asking for every topic never
//!   reports errors.
//! - A cursor whose topic is not among the named topics, or whose partition is negative, is INVALID_REQUEST for
//!   every named topic (Kafka's `getErrorResponse`).
//! - Per partition: error 0, the leader, its epoch, replicas and ISR as the image has them, the ELR and last known
//!   ELR (empty lists when none), and the offline replicas.
//!
//! The leader and the offline replicas follow our Metadata handler: a leader that is not a live (registered,
//! unfenced) broker is reported as -1, and a replica on a fenced or unregistered broker is offline. Without an
//! authorizer every topic operation is allowed, so each topic carries the full set of topic operations, as
//! Metadata reports them.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::{MetadataImage, PartitionRegistration, TopicImage};
use sluice_protocol::ErrorCode;
use uuid::Uuid;

use super::metadata::{is_live, TOPIC_AUTHORIZED_OPERATIONS};
use super::RequestContext;
use crate::broker::Broker;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one response carries, whatever the
/// request asks for.
const MAX_REQUEST_PARTITION_SIZE_LIMIT: i32 = 2000;

/// Topics Kafka's `Topic.isInternal` names.
const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// Answers from this node's metadata image.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = broker.controller.image();
    describe(&image, &request)
}

/// The response to `request` from `image`.
fn describe(
    image: &MetadataImage,
    request: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let fetch_all = request.topics.is_empty();
    let cursor = request.cursor.as_ref();
    let cursor_topic: &str = cursor.map(|c| &*c.topic_name.0).unwrap_or("");
    // Sorted and deduplicated, from the cursor's topic on.
    let names: BTreeSet<&str> = if fetch_all {
        image
            .topics()
            .map(|t| t.name.as_str())
            .filter(|name| *name >= cursor_topic)
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| &*t.name.0)
            .filter(|name| *name >= cursor_topic)
            .collect()
    };
    if let Some(c) = cursor {
        if (!fetch_all && !names.contains(cursor_topic)) || c.partition_index < 0 {
            return invalid_request(request);
        }
    }

    let limit = request
        .response_partition_limit
        .clamp(1, MAX_REQUEST_PARTITION_SIZE_LIMIT);
    let mut remaining = usize::try_from(limit).unwrap_or(1);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if remaining == 0 {
            // The previous topic ended exactly at the limit: the next page starts with this one.
            next_cursor = Some(page_cursor(name, 0));
            break;
        }
        let start = match cursor {
            Some(c) if c.topic_name.0 == *name => c.partition_index,
            _ => 0,
        };
        match image.topic(name) {
            Some(topic) => {
                let start = usize::try_from(start).unwrap_or(0);
                let count = topic.partitions.len();
                let upper = count.min(start.saturating_add(remaining));
                let partitions: Vec<_> = (start..upper)
                    .map(|index| partition(image, index, &topic.partitions[index]))
                    .collect();
                remaining -= partitions.len();
                topics.push(topic_entry(topic, partitions));
                if upper < count {
                    next_cursor = Some(page_cursor(name, upper));
                    break;
                }
            }
            None if !fetch_all => {
                let error = if sluice_metadata::validate_topic_name(name).is_ok() {
                    ErrorCode::UnknownTopicOrPartition
                } else {
                    ErrorCode::InvalidTopicException
                };
                topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_error_code(error.code())
                        .with_name(Some(topic_name(name)))
                        .with_topic_id(Uuid::nil())
                        .with_is_internal(INTERNAL_TOPICS.contains(&name))
                        .with_topic_authorized_operations(TOPIC_AUTHORIZED_OPERATIONS),
                );
            }
            // Every topic: the names come from this image, so each exists (Kafka would skip one that does not).
            None => {}
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

/// One existing topic with the partitions of this page.
fn topic_entry(
    topic: &TopicImage,
    partitions: Vec<DescribeTopicPartitionsResponsePartition>,
) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(0)
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(topic.internal)
        .with_partitions(partitions)
        .with_topic_authorized_operations(TOPIC_AUTHORIZED_OPERATIONS)
}

/// One partition as the image has it.
fn partition(
    image: &MetadataImage,
    index: usize,
    p: &PartitionRegistration,
) -> DescribeTopicPartitionsResponsePartition {
    let ids = |ids: &[i32]| ids.iter().map(|&r| BrokerId(r)).collect::<Vec<_>>();
    let leader = if is_live(image, p.leader) {
        p.leader
    } else {
        -1
    };
    let offline: Vec<BrokerId> = p
        .replicas
        .iter()
        .filter(|&&r| !is_live(image, r))
        .map(|&r| BrokerId(r))
        .collect();
    DescribeTopicPartitionsResponsePartition::default()
        .with_error_code(0)
        .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(p.leader_epoch)
        .with_replica_nodes(ids(&p.replicas))
        .with_isr_nodes(ids(&p.isr))
        // Kafka sends the lists, empty when there are none, never null.
        .with_eligible_leader_replicas(Some(ids(&p.elr)))
        .with_last_known_elr(Some(ids(&p.last_known_elr)))
        .with_offline_replicas(offline)
}

/// Kafka's answer to a request it rejects (`DescribeTopicPartitionsRequest.getErrorResponse`): every named topic
/// with INVALID_REQUEST and nothing else.
fn invalid_request(request: &DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(ErrorCode::InvalidRequest.code())
                .with_name(Some(t.name.clone()))
                .with_is_internal(false)
        })
        .collect();
    DescribeTopicPartitionsResponse::default().with_topics(topics)
}

fn page_cursor(topic: &str, partition_index: usize) -> Cursor {
    Cursor::default()
        .with_topic_name(topic_name(topic))
        .with_partition_index(i32::try_from(partition_index).unwrap_or(i32::MAX))
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_topic_partitions_request::{self, TopicRequest};
    use sluice_metadata::{BrokerRegistration, MetadataDelta, MetadataRecord};

    /// Brokers 1 and 2 live, 3 fenced, 4 never registered. Topics `a` (3 partitions), `b` (5), `c` (2), all on
    /// [1, 2, 3]; `b`'s partition 1 has ISR [1], ELR [2, 3] and last known ELR [3]; `c`'s partition 0 is led by
    /// the fenced broker 3. `__consumer_offsets` (1 partition) is internal.
    fn image() -> MetadataImage {
        let mut records = Vec::new();
        for (node_id, fenced) in [(1, false), (2, false), (3, true)] {
            records.push(MetadataRecord::RegisterBroker(BrokerRegistration {
                node_id,
                host: format!("b{node_id}"),
                port: 9092,
                fenced,
                ..Default::default()
            }));
        }
        let topics = [
            ("a", 3, false),
            ("b", 5, false),
            ("c", 2, false),
            ("__consumer_offsets", 1, true),
        ];
        for (i, (name, partitions, internal)) in topics.into_iter().enumerate() {
            let topic_id = Uuid::from_u128(100 + i as u128);
            records.push(MetadataRecord::Topic {
                name: name.into(),
                topic_id,
                internal,
            });
            for partition in 0..partitions {
                let mut registration = PartitionRegistration {
                    replicas: vec![1, 2, 4],
                    isr: vec![1, 2],
                    leader: 1,
                    leader_epoch: 7,
                    partition_epoch: 9,
                    ..Default::default()
                };
                if name == "b" && partition == 1 {
                    registration.replicas = vec![1, 2, 3];
                    registration.isr = vec![1];
                    registration.elr = vec![2, 3];
                    registration.last_known_elr = vec![3];
                }
                if name == "c" && partition == 0 {
                    registration.replicas = vec![3, 1];
                    registration.isr = vec![3];
                    registration.leader = 3;
                }
                records.push(MetadataRecord::Partition {
                    topic_id,
                    partition,
                    registration,
                });
            }
        }
        let base = MetadataImage::empty("cluster", 1);
        let mut delta = MetadataDelta::new(&base);
        for (offset, record) in records.iter().enumerate() {
            delta.replay(offset as i64, record).unwrap();
        }
        delta.apply()
    }

    fn request(
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(topic_name(t)))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                describe_topic_partitions_request::Cursor::default()
                    .with_topic_name(topic_name(t))
                    .with_partition_index(p)
            }))
    }

    /// (topic, [partition indexes]) per topic, and the next cursor.
    type Page = (Vec<(String, Vec<i32>)>, Option<(String, i32)>);

    fn page(response: &DescribeTopicPartitionsResponse) -> Page {
        let topics = response
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().unwrap().0.to_string(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        let cursor = response
            .next_cursor
            .as_ref()
            .map(|c| (c.topic_name.0.to_string(), c.partition_index));
        (topics, cursor)
    }

    fn owned(topics: &[(&str, &[i32])], cursor: Option<(&str, i32)>) -> Page {
        (
            topics
                .iter()
                .map(|(t, p)| (t.to_string(), p.to_vec()))
                .collect(),
            cursor.map(|(t, p)| (t.to_string(), p)),
        )
    }

    #[test]
    fn pages_through_topics_and_partitions_with_the_cursor() {
        let image = image();
        // Named out of order and twice: answered once each, by name. 3 + 5 + 2 partitions, 4 per page.
        let named = ["c", "b", "a", "b"];
        let first = describe(&image, &request(&named, 4, None));
        assert_eq!(
            page(&first),
            owned(&[("a", &[0, 1, 2]), ("b", &[0])], Some(("b", 1)))
        );
        let second = describe(&image, &request(&named, 4, Some(("b", 1))));
        assert_eq!(
            page(&second),
            owned(&[("b", &[1, 2, 3, 4])], Some(("c", 0)))
        );
        let third = describe(&image, &request(&named, 4, Some(("c", 0))));
        assert_eq!(page(&third), owned(&[("c", &[0, 1])], None));

        // Every topic (empty list), internal ones included, in name order; a limit of 0 or less counts as 1.
        let all = describe(&image, &request(&[], 0, None));
        assert_eq!(
            page(&all),
            owned(&[("__consumer_offsets", &[0])], Some(("a", 0)))
        );
        assert!(all.topics[0].is_internal);
        let rest = describe(&image, &request(&[], 100, Some(("a", 2))));
        assert_eq!(
            page(&rest),
            owned(
                &[("a", &[2]), ("b", &[0, 1, 2, 3, 4]), ("c", &[0, 1])],
                None
            )
        );
        // A topic that ends exactly at the limit with nothing after it: no cursor.
        let exact = describe(&image, &request(&["a"], 3, None));
        assert_eq!(page(&exact), owned(&[("a", &[0, 1, 2])], None));
        // A cursor past a topic's end: the topic with no partitions, then the next one.
        let past = describe(&image, &request(&["a", "c"], 10, Some(("a", 9))));
        assert_eq!(page(&past), owned(&[("a", &[]), ("c", &[0, 1])], None));
        // Far above the broker's cap: capped at 2000, all 11 partitions fit.
        let big = describe(&image, &request(&[], i32::MAX, None));
        assert_eq!(
            big.topics.iter().map(|t| t.partitions.len()).sum::<usize>(),
            11
        );
        assert!(big.next_cursor.is_none());
    }

    #[test]
    fn the_broker_caps_the_limit_at_2000_partitions() {
        let id = Uuid::from_u128(7);
        let mut records = vec![MetadataRecord::Topic {
            name: "wide".into(),
            topic_id: id,
            internal: false,
        }];
        for partition in 0..2001 {
            records.push(MetadataRecord::Partition {
                topic_id: id,
                partition,
                registration: PartitionRegistration {
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    ..Default::default()
                },
            });
        }
        let base = MetadataImage::empty("cluster", 1);
        let mut delta = MetadataDelta::new(&base);
        for (offset, record) in records.iter().enumerate() {
            delta.replay(offset as i64, record).unwrap();
        }
        let image = delta.apply();
        // The request's default limit is 2000 too.
        for limit in [
            5000,
            DescribeTopicPartitionsRequest::default().response_partition_limit,
        ] {
            let response = describe(&image, &request(&["wide"], limit, None));
            assert_eq!(response.topics[0].partitions.len(), 2000);
            assert_eq!(
                page(&response).1,
                Some(("wide".to_string(), 2000)),
                "limit {limit}"
            );
        }
        let last = describe(&image, &request(&["wide"], 5000, Some(("wide", 2000))));
        assert_eq!(page(&last), owned(&[("wide", &[2000])], None));
    }

    #[test]
    fn unknown_and_invalid_topics_and_bad_cursors() {
        let image = image();
        let response = describe(&image, &request(&["nope", "a", "bad/name"], 2, None));
        // In name order: "a" (cut at the limit) stops the page before the others.
        assert_eq!(page(&response), owned(&[("a", &[0, 1])], Some(("a", 2))));
        let response = describe(&image, &request(&["nope", "bad/name", "zz"], 2, None));
        let errors: Vec<_> = response
            .topics
            .iter()
            .map(|t| (t.name.as_ref().unwrap().0.to_string(), t.error_code))
            .collect();
        assert_eq!(
            errors,
            vec![
                (
                    "bad/name".to_string(),
                    ErrorCode::InvalidTopicException.code()
                ),
                ("nope".into(), ErrorCode::UnknownTopicOrPartition.code()),
                ("zz".into(), ErrorCode::UnknownTopicOrPartition.code()),
            ]
        );
        for t in &response.topics {
            assert!(t.topic_id.is_nil() && t.partitions.is_empty() && !t.is_internal);
            assert_eq!(t.topic_authorized_operations, TOPIC_AUTHORIZED_OPERATIONS);
        }
        assert!(response.next_cursor.is_none());
        // Unknown topics take nothing from the limit; a used-up limit puts the cursor on the next name.
        let response = describe(&image, &request(&["a", "b", "nope"], 8, None));
        assert_eq!(
            page(&response),
            owned(
                &[("a", &[0, 1, 2]), ("b", &[0, 1, 2, 3, 4])],
                Some(("nope", 0))
            )
        );
        let response = describe(&image, &request(&["nope", "zz"], 8, Some(("nope", 0))));
        assert_eq!(
            response
                .topics
                .iter()
                .map(|t| t.error_code)
                .collect::<Vec<_>>(),
            vec![ErrorCode::UnknownTopicOrPartition.code(); 2]
        );
        // Every topic: the topics named before the cursor are dropped, and nothing is an error.
        let response = describe(&image, &request(&[], 100, Some(("bb", 0))));
        assert_eq!(page(&response), owned(&[("c", &[0, 1])], None));

        // A cursor on a topic that is not asked for, or on a negative partition: INVALID_REQUEST throughout.
        for bad in [
            request(&["a", "b"], 10, Some(("c", 0))),
            request(&["a", "b"], 10, Some(("b", -1))),
        ] {
            let response = describe(&image, &bad);
            assert_eq!(
                response
                    .topics
                    .iter()
                    .map(|t| (t.name.as_ref().unwrap().0.to_string(), t.error_code))
                    .collect::<Vec<_>>(),
                vec![
                    ("a".to_string(), ErrorCode::InvalidRequest.code()),
                    ("b".to_string(), ErrorCode::InvalidRequest.code())
                ]
            );
            assert!(response.topics.iter().all(|t| t.partitions.is_empty()));
            assert!(response.next_cursor.is_none());
        }
        let response = describe(&image, &request(&[], 10, Some(("a", -1))));
        assert!(response.topics.is_empty());
    }

    #[test]
    fn partitions_carry_the_elr_and_offline_replicas_from_the_image() {
        let image = image();
        let response = describe(&image, &request(&["b", "c"], 100, None));
        let b = &response.topics[0];
        assert_eq!(b.error_code, 0);
        assert_eq!(b.topic_id, Uuid::from_u128(101));
        assert!(!b.is_internal);
        assert_eq!(b.topic_authorized_operations, TOPIC_AUTHORIZED_OPERATIONS);
        let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
        let p1 = &b.partitions[1];
        assert_eq!((p1.error_code, p1.partition_index), (0, 1));
        assert_eq!((p1.leader_id.0, p1.leader_epoch), (1, 7));
        assert_eq!(ids(&p1.replica_nodes), vec![1, 2, 3]);
        assert_eq!(ids(&p1.isr_nodes), vec![1]);
        assert_eq!(
            ids(p1.eligible_leader_replicas.as_ref().unwrap()),
            vec![2, 3]
        );
        assert_eq!(ids(p1.last_known_elr.as_ref().unwrap()), vec![3]);
        // 3 is fenced.
        assert_eq!(ids(&p1.offline_replicas), vec![3]);
        // No ELR: empty lists, not null; 4 never registered, so offline.
        let p0 = &b.partitions[0];
        assert_eq!(p0.eligible_leader_replicas, Some(vec![]));
        assert_eq!(p0.last_known_elr, Some(vec![]));
        assert_eq!(ids(&p0.offline_replicas), vec![4]);
        // A fenced leader is no leader, as in Metadata; the partition itself has no error.
        let c0 = &response.topics[1].partitions[0];
        assert_eq!((c0.error_code, c0.leader_id.0), (0, -1));
        assert_eq!(ids(&c0.offline_replicas), vec![3]);

        // The response encodes at v0 and decodes back the same.
        use kafka_protocol::protocol::{Decodable, Encodable};
        let mut buf = bytes::BytesMut::new();
        response.encode(&mut buf, 0).unwrap();
        let decoded = DescribeTopicPartitionsResponse::decode(&mut buf.freeze(), 0).unwrap();
        assert_eq!(decoded, response);
    }
}
