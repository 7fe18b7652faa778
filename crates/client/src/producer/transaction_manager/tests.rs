//! Unit tests of the transaction manager, no broker: the state machine against Kafka's transition table and
//! the Java client's handlers, and the sequence bookkeeping of KIP-98 / KIP-360.

use super::*;

use TransactionState::*;

const ALL: [TransactionState; 8] = [
    Uninitialized,
    Initializing,
    Ready,
    InTransaction,
    CommittingTransaction,
    AbortingTransaction,
    AbortableError,
    FatalError,
];

fn tp(topic: &str, partition: i32) -> TopicPartition {
    (topic.to_owned(), partition)
}

fn pid(producer_id: i64, epoch: i16) -> ProducerIdAndEpoch {
    ProducerIdAndEpoch { producer_id, epoch }
}

fn broker(error: ResponseError) -> ClientError {
    ClientError::broker("test", error.code(), None)
}

/// An idempotent producer with producer id 7, epoch 0.
fn idempotent() -> TransactionManager {
    let mut tm = TransactionManager::new(None);
    assert!(tm.bump_idempotent_epoch_and_reset_id_if_needed());
    assert_eq!(tm.state(), Initializing);
    tm.handle_init_producer_id(pid(7, 0), false);
    assert_eq!(tm.state(), Ready);
    tm
}

/// A transactional producer, initialized (producer id 9, epoch 3), coordinator able to bump epochs.
fn transactional() -> TransactionManager {
    let mut tm = TransactionManager::new(Some("txn-a".into()));
    tm.set_coordinator_supports_epoch_bump(true);
    tm.begin_initialize().unwrap();
    tm.handle_init_producer_id(pid(9, 3), false);
    assert_eq!(tm.state(), Ready);
    tm
}

/// A transactional producer in a transaction with `partitions` added.
fn in_transaction(partitions: &[TopicPartition]) -> TransactionManager {
    let mut tm = transactional();
    tm.begin_transaction().unwrap();
    for p in partitions {
        tm.maybe_add_partition(p).unwrap();
    }
    if !partitions.is_empty() {
        let (producer, added) = tm.take_partitions_to_add().unwrap();
        assert_eq!(producer, pid(9, 3));
        let results: Vec<_> = added.into_iter().map(|p| (p, 0)).collect();
        assert_eq!(
            tm.handle_add_partitions(&results),
            AddPartitionsResult::Added
        );
    }
    tm
}

#[test]
fn transition_table_is_kafkas() {
    // Java's `TransactionManager.State.isTransitionValid`, written out pair by pair.
    let allowed: &[(TransactionState, &[TransactionState])] = &[
        (Uninitialized, &[Ready, AbortableError]),
        (Initializing, &[Uninitialized, AbortingTransaction]),
        (
            Ready,
            &[Initializing, CommittingTransaction, AbortingTransaction],
        ),
        (InTransaction, &[Ready]),
        (CommittingTransaction, &[InTransaction]),
        (AbortingTransaction, &[InTransaction, AbortableError]),
        (
            AbortableError,
            &[
                InTransaction,
                CommittingTransaction,
                AbortableError,
                Initializing,
            ],
        ),
        (FatalError, &ALL),
    ];
    for (target, sources) in allowed {
        for source in ALL {
            assert_eq!(
                source.can_transition_to(*target),
                sources.contains(&source),
                "{source} -> {target}"
            );
        }
    }
}

#[test]
fn a_transaction_commits_through_every_state() {
    let mut tm = transactional();
    tm.begin_transaction().unwrap();
    assert_eq!(tm.state(), InTransaction);
    let p0 = tp("orders", 0);
    // KIP-98: a batch may go to a partition only once the coordinator added it.
    tm.maybe_add_partition(&p0).unwrap();
    assert!(tm.should_stop_drain(&p0, None));
    assert!(tm.has_partitions_to_add());
    let (_, partitions) = tm.take_partitions_to_add().unwrap();
    assert_eq!(partitions, vec![p0.clone()]);
    // One AddPartitionsToTxn at a time.
    tm.maybe_add_partition(&tp("orders", 1)).unwrap();
    assert!(tm.take_partitions_to_add().is_none());
    assert_eq!(
        tm.handle_add_partitions(&[(p0.clone(), 0)]),
        AddPartitionsResult::Added
    );
    assert!(!tm.should_stop_drain(&p0, None));
    assert!(tm.transaction_started());
    // The second partition goes in the next request.
    let (_, partitions) = tm.take_partitions_to_add().unwrap();
    assert_eq!(partitions, vec![tp("orders", 1)]);
    tm.handle_add_partitions(&[(tp("orders", 1), 0)]);
    tm.begin_commit().unwrap();
    assert_eq!(tm.state(), CommittingTransaction);
    // Sending during the commit is refused; nothing changes.
    assert!(matches!(
        tm.maybe_add_partition(&tp("orders", 2)),
        Err(ClientError::InvalidTransactionState { .. })
    ));
    tm.complete_transaction();
    assert_eq!(tm.state(), Ready);
    assert!(!tm.transaction_started());
    // The next transaction adds its partitions again.
    tm.begin_transaction().unwrap();
    tm.maybe_add_partition(&p0).unwrap();
    assert!(tm.should_stop_drain(&p0, None));
}

#[test]
fn calls_in_the_wrong_state_fail_and_change_nothing() {
    let mut tm = TransactionManager::new(Some("txn-a".into()));
    for (result, operation) in [
        (tm.begin_transaction(), "begin_transaction"),
        (tm.begin_commit(), "commit_transaction"),
        (tm.begin_abort(), "abort_transaction"),
        (
            tm.check_send_offsets().map(|_| ()),
            "send_offsets_to_transaction",
        ),
    ] {
        match result {
            Err(ClientError::InvalidTransactionState { operation: op, .. }) => {
                assert_eq!(op, operation)
            }
            other => panic!("{operation}: {other:?}"),
        }
    }
    assert_eq!(tm.state(), Uninitialized);
    // Sending before init_transactions.
    assert!(matches!(
        tm.maybe_add_partition(&tp("t", 0)),
        Err(ClientError::InvalidTransactionState {
            operation: "send",
            ..
        })
    ));
    let mut tm = transactional();
    // Sending outside a transaction, and a second init.
    assert!(tm.maybe_add_partition(&tp("t", 0)).is_err());
    assert!(tm.begin_initialize().is_err());
    assert!(tm.begin_commit().is_err());
    assert_eq!(tm.state(), Ready);
    // Transactional calls on an idempotent producer.
    let mut tm = idempotent();
    assert!(matches!(
        tm.begin_initialize(),
        Err(ClientError::InvalidTransactionState { .. })
    ));
    assert!(tm.begin_transaction().is_err());
    assert_eq!(tm.state(), Ready);
}

#[test]
fn fencing_is_fatal_and_every_later_call_fails_with_producer_fenced() {
    // PRODUCER_FENCED and (from an older coordinator) INVALID_PRODUCER_EPOCH, from every coordinator API.
    for api in [
        TxnApi::InitProducerId,
        TxnApi::AddPartitionsToTxn,
        TxnApi::AddOffsetsToTxn,
        TxnApi::TxnOffsetCommit,
        TxnApi::EndTxn,
    ] {
        for error in [
            ResponseError::ProducerFenced,
            ResponseError::InvalidProducerEpoch,
        ] {
            match classify(api, error.code(), "ctx", "txn-a") {
                CoordinatorOutcome::Fatal(ClientError::ProducerFenced { transactional_id }) => {
                    assert_eq!(transactional_id, "txn-a")
                }
                other => panic!("{api:?} {error:?}: {other:?}"),
            }
        }
    }
    let mut tm = in_transaction(&[tp("t", 0)]);
    tm.fail_with(classify(
        TxnApi::EndTxn,
        ResponseError::ProducerFenced.code(),
        "ctx",
        "txn-a",
    ));
    assert_eq!(tm.state(), FatalError);
    let fenced = |r: Result<(), ClientError>| matches!(r, Err(ClientError::ProducerFenced { .. }));
    assert!(fenced(tm.begin_abort()));
    assert!(fenced(tm.begin_commit()));
    assert!(fenced(tm.begin_transaction()));
    assert!(fenced(tm.maybe_add_partition(&tp("t", 0))));
    assert!(fenced(tm.check_send_offsets()));
    assert!(tm.should_stop_drain(&tp("t", 0), None));
    assert!(tm.take_partitions_to_add().is_none());
    // A produce answer of PRODUCER_FENCED is fatal too.
    let mut tm = in_transaction(&[tp("t", 0)]);
    let b = tm.assign_sequence(&tp("t", 0), 1);
    tm.handle_failed_batch(
        &tp("t", 0),
        Some(b.id),
        &broker(ResponseError::ProducerFenced),
        true,
    );
    assert!(matches!(
        tm.error_for_callers(),
        Some(ClientError::ProducerFenced { .. })
    ));
}

#[test]
fn transactional_id_authorization_is_separate_from_fencing() {
    let code = ResponseError::TransactionalIdAuthorizationFailed.code();
    // InitProducerId: abortable (the producer goes back to Uninitialized and may init again).
    assert!(matches!(
        classify(TxnApi::InitProducerId, code, "ctx", "t"),
        CoordinatorOutcome::Abortable(_)
    ));
    // Elsewhere fatal, and not ProducerFenced.
    for api in [
        TxnApi::AddPartitionsToTxn,
        TxnApi::EndTxn,
        TxnApi::AddOffsetsToTxn,
    ] {
        match classify(api, code, "ctx", "t") {
            CoordinatorOutcome::Fatal(e) => assert_eq!(
                e.kafka_error(),
                Some(ResponseError::TransactionalIdAuthorizationFailed)
            ),
            other => panic!("{api:?}: {other:?}"),
        }
    }
    let mut tm = TransactionManager::new(Some("t".into()));
    tm.begin_initialize().unwrap();
    tm.transition_to_abortable(broker(ResponseError::TransactionalIdAuthorizationFailed));
    tm.transition_to_uninitialized();
    assert_eq!(tm.state(), Uninitialized);
    tm.begin_initialize().unwrap();
}

#[test]
fn coordinator_answers_map_as_the_java_handlers() {
    use CoordinatorOutcome as O;
    let c = |api, e: ResponseError| classify(api, e.code(), "ctx", "t");
    for api in [
        TxnApi::InitProducerId,
        TxnApi::AddOffsetsToTxn,
        TxnApi::EndTxn,
    ] {
        assert!(matches!(
            c(api, ResponseError::NotCoordinator),
            O::FindCoordinator
        ));
        assert!(matches!(
            c(api, ResponseError::CoordinatorNotAvailable),
            O::FindCoordinator
        ));
        assert!(matches!(
            c(api, ResponseError::ConcurrentTransactions),
            O::Retry
        ));
        assert!(matches!(
            c(api, ResponseError::CoordinatorLoadInProgress),
            O::Retry
        ));
        assert!(matches!(
            c(api, ResponseError::TransactionAbortable),
            O::Abortable(_)
        ));
    }
    assert!(matches!(
        c(TxnApi::EndTxn, ResponseError::InvalidTxnState),
        O::Fatal(_)
    ));
    assert!(matches!(
        c(TxnApi::EndTxn, ResponseError::InvalidProducerIdMapping),
        O::AbortableIfPossible(_)
    ));
    assert!(matches!(
        c(TxnApi::AddOffsetsToTxn, ResponseError::UnknownProducerId),
        O::AbortableIfPossible(_)
    ));
    assert!(matches!(
        c(
            TxnApi::AddOffsetsToTxn,
            ResponseError::GroupAuthorizationFailed
        ),
        O::Abortable(_)
    ));
    assert!(matches!(
        c(TxnApi::EndTxn, ResponseError::UnknownServerError),
        O::Fatal(_)
    ));
    // TxnOffsetCommit, answered by the group coordinator.
    assert!(matches!(
        c(TxnApi::TxnOffsetCommit, ResponseError::RequestTimedOut),
        O::FindCoordinator
    ));
    assert!(matches!(
        c(
            TxnApi::TxnOffsetCommit,
            ResponseError::UnknownTopicOrPartition
        ),
        O::Retry
    ));
    for e in [
        ResponseError::UnknownMemberId,
        ResponseError::IllegalGeneration,
        ResponseError::FencedInstanceId,
        ResponseError::GroupAuthorizationFailed,
    ] {
        assert!(
            matches!(c(TxnApi::TxnOffsetCommit, e), O::Abortable(_)),
            "{e:?}"
        );
    }
    assert!(matches!(
        c(
            TxnApi::TxnOffsetCommit,
            ResponseError::UnsupportedForMessageFormat
        ),
        O::Fatal(_)
    ));
    // FindCoordinator.
    assert!(matches!(
        c(
            TxnApi::FindCoordinator,
            ResponseError::CoordinatorNotAvailable
        ),
        O::Retry
    ));
    assert!(matches!(
        c(
            TxnApi::FindCoordinator,
            ResponseError::TransactionalIdAuthorizationFailed
        ),
        O::Fatal(_)
    ));
    assert!(matches!(classify(TxnApi::EndTxn, 0, "ctx", "t"), O::Done));
}

#[test]
fn add_partitions_answers() {
    let p0 = tp("t", 0);
    let p1 = tp("t", 1);
    let start = |tm: &mut TransactionManager| {
        tm.maybe_add_partition(&p0).unwrap();
        tm.maybe_add_partition(&p1).unwrap();
        tm.take_partitions_to_add().unwrap()
    };
    // CONCURRENT_TRANSACTIONS on the first add of a transaction: retried after 20 ms (KAFKA-5482).
    let mut tm = in_transaction(&[]);
    start(&mut tm);
    let concurrent = ResponseError::ConcurrentTransactions.code();
    assert_eq!(
        tm.handle_add_partitions(&[(p0.clone(), concurrent), (p1.clone(), 0)]),
        AddPartitionsResult::Retry { fast: true }
    );
    // Still pending: not sendable, and no second request.
    assert!(tm.should_stop_drain(&p0, None));
    assert!(tm.take_partitions_to_add().is_none());
    // ...but not once the transaction already holds partitions.
    let mut tm = in_transaction(&[tp("u", 0)]);
    start(&mut tm);
    assert_eq!(
        tm.handle_add_partitions(&[(p0.clone(), concurrent), (p1.clone(), concurrent)]),
        AddPartitionsResult::Retry { fast: false }
    );
    assert_eq!(
        tm.handle_add_partitions(&[
            (p0.clone(), ResponseError::NotCoordinator.code()),
            (p1.clone(), 0)
        ]),
        AddPartitionsResult::FindCoordinator
    );
    // TOPIC_AUTHORIZATION_FAILED with OPERATION_NOT_ATTEMPTED for the rest: abortable, nothing added.
    let mut tm = in_transaction(&[]);
    start(&mut tm);
    assert_eq!(
        tm.handle_add_partitions(&[
            (p0.clone(), ResponseError::TopicAuthorizationFailed.code()),
            (p1.clone(), ResponseError::OperationNotAttempted.code()),
        ]),
        AddPartitionsResult::Failed
    );
    assert_eq!(tm.state(), AbortableError);
    assert_eq!(
        tm.last_error().and_then(ClientError::kafka_error),
        Some(ResponseError::TopicAuthorizationFailed)
    );
    assert!(!tm.is_send_to_partition_allowed(&p1));
    assert!(tm.begin_commit().unwrap_err().is_abortable());
    tm.begin_abort().unwrap();
    // INVALID_TXN_STATE is fatal.
    let mut tm = in_transaction(&[]);
    start(&mut tm);
    tm.handle_add_partitions(&[(p0.clone(), ResponseError::InvalidTxnState.code()), (p1, 0)]);
    assert_eq!(tm.state(), FatalError);
}

#[test]
fn an_abortable_error_needs_an_abort_then_an_epoch_bump() {
    let p0 = tp("t", 0);
    let mut tm = in_transaction(std::slice::from_ref(&p0));
    let b0 = tm.assign_sequence(&p0, 5);
    assert_eq!((b0.base_sequence, b0.producer), (0, pid(9, 3)));
    // A batch failed for good (here MESSAGE_TOO_LARGE): the transaction is abortable, KIP-360 bump needed.
    tm.handle_failed_batch(
        &p0,
        Some(b0.id),
        &broker(ResponseError::MessageTooLarge),
        true,
    );
    assert_eq!(tm.state(), AbortableError);
    assert!(tm.epoch_bump_required());
    let err = tm.maybe_add_partition(&p0).unwrap_err();
    assert!(err.is_abortable(), "{err:?}");
    assert_eq!(err.kafka_error(), Some(ResponseError::MessageTooLarge));
    assert!(tm.begin_commit().unwrap_err().is_abortable());
    assert!(tm.check_send_offsets().is_err());
    tm.begin_abort().unwrap();
    assert_eq!(tm.state(), AbortingTransaction);
    // After EndTxn(abort): Initializing, for InitProducerId with the current id and epoch.
    tm.complete_transaction();
    assert_eq!(tm.state(), Initializing);
    tm.handle_init_producer_id(pid(9, 4), true);
    assert_eq!(tm.state(), Ready);
    assert!(!tm.epoch_bump_required());
    // Sequences restart at 0 under the new epoch, and partitions are added again.
    tm.begin_transaction().unwrap();
    tm.maybe_add_partition(&p0).unwrap();
    let (_, parts) = tm.take_partitions_to_add().unwrap();
    tm.handle_add_partitions(&[(parts[0].clone(), 0)]);
    let b1 = tm.assign_sequence(&p0, 1);
    assert_eq!((b1.base_sequence, b1.producer), (0, pid(9, 4)));
}

#[test]
fn without_epoch_bumps_unknown_producer_id_is_fatal() {
    let mut tm = in_transaction(&[]);
    tm.set_coordinator_supports_epoch_bump(false);
    tm.fail_with(classify(
        TxnApi::EndTxn,
        ResponseError::InvalidProducerIdMapping.code(),
        "ctx",
        "t",
    ));
    assert_eq!(tm.state(), FatalError);
    assert!(tm.begin_abort().unwrap_err().is_fatal());
    // With them, it is abortable and the abort skips EndTxn (the coordinator would refuse it).
    let mut tm = in_transaction(&[]);
    tm.fail_with(classify(
        TxnApi::AddOffsetsToTxn,
        ResponseError::InvalidProducerIdMapping.code(),
        "ctx",
        "t",
    ));
    assert_eq!(tm.state(), AbortableError);
    tm.begin_abort().unwrap();
    assert!(tm.abort_skips_end_txn());
    tm.handle_init_producer_id(pid(9, 4), true);
    assert_eq!(tm.state(), Ready);
    assert!(!tm.abort_skips_end_txn());
}

#[test]
fn an_abort_without_errors_keeps_the_epoch() {
    let mut tm = in_transaction(&[tp("t", 0)]);
    tm.begin_abort().unwrap();
    tm.complete_transaction();
    assert_eq!(tm.state(), Ready);
    assert_eq!(tm.producer_id_and_epoch(), pid(9, 3));
}

#[test]
fn sequences_are_per_partition_consecutive_and_kept_by_retries() {
    let mut tm = idempotent();
    let (a, b) = (tp("t", 0), tp("t", 1));
    let a0 = tm.assign_sequence(&a, 3);
    let a1 = tm.assign_sequence(&a, 2);
    let b0 = tm.assign_sequence(&b, 4);
    assert_eq!(
        (a0.base_sequence, a1.base_sequence, b0.base_sequence),
        (0, 3, 0)
    );
    assert_eq!(a0.producer, pid(7, 0));
    // NOT_LEADER_OR_FOLLOWER: retried with the same sequence.
    assert!(tm.can_retry(&a, a0.id, &broker(ResponseError::NotLeaderOrFollower), -1));
    assert_eq!(tm.in_flight_batch(&a, a0.id).unwrap().base_sequence, 0);
    // The retry of the lowest sequence may go; a retry of a later one waits for it.
    assert!(!tm.should_stop_drain(&a, Some(a0.id)));
    assert!(tm.should_stop_drain(&a, Some(a1.id)));
    // New batches are not held back by in-flight ones of the same epoch (up to 5 in flight).
    assert!(!tm.should_stop_drain(&a, None));
    tm.handle_completed_batch(&a, a0.id, 100);
    assert!(!tm.should_stop_drain(&a, Some(a1.id)));
    tm.handle_completed_batch(&a, a1.id, 103);
    let a2 = tm.assign_sequence(&a, 1);
    assert_eq!(a2.base_sequence, 5);
    // DUPLICATE_SEQUENCE_NUMBER completes without an offset.
    tm.handle_completed_batch(&a, a2.id, -1);
    assert!(tm.in_flight_batch(&a, a2.id).is_none());
    assert_eq!(tm.in_flight_batch(&b, b0.id).unwrap().base_sequence, 0);
}

#[test]
fn out_of_order_after_an_earlier_failure_is_retried_without_a_bump() {
    let mut tm = idempotent();
    let a = tp("t", 0);
    let a0 = tm.assign_sequence(&a, 2);
    let a1 = tm.assign_sequence(&a, 2);
    tm.handle_completed_batch(&a, a0.id, 0);
    let a2 = tm.assign_sequence(&a, 2);
    // a2 is not the next sequence (a1 is): the broker refused it because a1 is missing; retry, no bump.
    let oos = broker(ResponseError::OutOfOrderSequenceNumber);
    assert!(tm.can_retry(&a, a2.id, &oos, 0));
    assert!(!tm.epoch_bump_required());
    // a1 itself out of order: a real gap. The idempotent producer bumps its epoch (KIP-360).
    assert!(tm.can_retry(&a, a1.id, &oos, 0));
    assert!(tm.epoch_bump_required());
    assert!(!tm.bump_idempotent_epoch_and_reset_id_if_needed());
    assert_eq!(tm.producer_id_and_epoch(), pid(7, 1));
    // In-flight batches are renumbered from 0 under the new epoch, in order, and marked as reset.
    let (r1, r2) = (
        tm.in_flight_batch(&a, a1.id).unwrap(),
        tm.in_flight_batch(&a, a2.id).unwrap(),
    );
    assert_eq!(
        (r1.producer, r1.base_sequence, r1.sequence_reset),
        (pid(7, 1), 0, true)
    );
    assert_eq!((r2.producer, r2.base_sequence), (pid(7, 1), 2));
    // A reset batch answered out of order again is simply retried.
    assert!(tm.can_retry(&a, a2.id, &oos, 0));
    assert!(!tm.epoch_bump_required());
    let a3 = tm.assign_sequence(&a, 1);
    assert_eq!((a3.producer, a3.base_sequence), (pid(7, 1), 4));
}

#[test]
fn a_transactional_producer_does_not_retry_a_real_gap() {
    let a = tp("t", 0);
    let mut tm = in_transaction(std::slice::from_ref(&a));
    let a0 = tm.assign_sequence(&a, 1);
    let oos = broker(ResponseError::OutOfOrderSequenceNumber);
    assert!(!tm.can_retry(&a, a0.id, &oos, 0));
    tm.handle_failed_batch(&a, Some(a0.id), &oos, true);
    assert_eq!(tm.state(), AbortableError);
}

#[test]
fn unknown_producer_id_after_retention_restarts_sequences() {
    let a = tp("t", 0);
    let unknown = broker(ResponseError::UnknownProducerId);
    // Idempotent: the log start offset passed the last acknowledged offset; bump and retry.
    let mut tm = idempotent();
    let a0 = tm.assign_sequence(&a, 1);
    tm.handle_completed_batch(&a, a0.id, 10);
    let a1 = tm.assign_sequence(&a, 1);
    assert!(tm.can_retry(&a, a1.id, &unknown, 50));
    assert!(tm.epoch_bump_required());
    // Without a log start offset: just retry until one comes.
    let mut tm = idempotent();
    let a0 = tm.assign_sequence(&a, 1);
    assert!(tm.can_retry(&a, a0.id, &unknown, -1));
    assert!(!tm.epoch_bump_required());
    // Transactional: the same epoch, sequences from 0, retried (the transaction goes on).
    let mut tm = in_transaction(std::slice::from_ref(&a));
    let a0 = tm.assign_sequence(&a, 3);
    tm.handle_completed_batch(&a, a0.id, 10);
    let a1 = tm.assign_sequence(&a, 2);
    assert!(tm.can_retry(&a, a1.id, &unknown, 50));
    let r = tm.in_flight_batch(&a, a1.id).unwrap();
    assert_eq!(
        (r.producer, r.base_sequence, r.sequence_reset),
        (pid(9, 3), 0, true)
    );
    assert_eq!(tm.state(), InTransaction);
    // Transactional, real data loss (log start not past what was acknowledged): not retried.
    let mut tm = in_transaction(std::slice::from_ref(&a));
    let a0 = tm.assign_sequence(&a, 3);
    tm.handle_completed_batch(&a, a0.id, 10);
    let a1 = tm.assign_sequence(&a, 2);
    assert!(!tm.can_retry(&a, a1.id, &unknown, 0));
}

#[test]
fn a_new_batch_waits_for_older_epoch_batches() {
    let mut tm = idempotent();
    let (a, b) = (tp("t", 0), tp("t", 1));
    let a0 = tm.assign_sequence(&a, 1);
    let _b0 = tm.assign_sequence(&b, 1);
    // A definite failure on partition b asks for an epoch bump; a's in-flight batch keeps epoch 0.
    let b1 = tm.assign_sequence(&b, 1);
    tm.handle_failed_batch(
        &b,
        Some(b1.id),
        &broker(ResponseError::CorruptMessage),
        true,
    );
    tm.bump_idempotent_epoch_and_reset_id_if_needed();
    assert_eq!(tm.producer_id_and_epoch(), pid(7, 1));
    // Partition a: a new batch would start epoch 1 at sequence 0 while epoch 0 is in flight: it waits.
    assert!(tm.should_stop_drain(&a, None));
    tm.handle_completed_batch(&a, a0.id, 0);
    assert!(!tm.should_stop_drain(&a, None));
    let a1 = tm.assign_sequence(&a, 1);
    assert_eq!((a1.producer, a1.base_sequence), (pid(7, 1), 0));
}

#[test]
fn unresolved_sequences_hold_the_partition_until_settled() {
    let a = tp("t", 0);
    let mut tm = idempotent();
    let a0 = tm.assign_sequence(&a, 2);
    let a1 = tm.assign_sequence(&a, 2);
    // a0 expired after being sent: the broker may or may not have it.
    tm.mark_sequence_unresolved(&a, a0.id);
    tm.handle_failed_batch(
        &a,
        Some(a0.id),
        &broker(ResponseError::RequestTimedOut),
        false,
    );
    assert!(tm.should_stop_drain(&a, None));
    // a1 written: so a0 was too (sequences are gapless). Resolved without a bump.
    tm.handle_completed_batch(&a, a1.id, 7);
    tm.maybe_resolve_sequences();
    assert!(!tm.should_stop_drain(&a, None));
    assert!(!tm.epoch_bump_required());
    // Nothing after the lost batch got through: the idempotent producer bumps its epoch.
    let mut tm = idempotent();
    let a0 = tm.assign_sequence(&a, 2);
    tm.mark_sequence_unresolved(&a, a0.id);
    tm.handle_failed_batch(
        &a,
        Some(a0.id),
        &broker(ResponseError::RequestTimedOut),
        false,
    );
    tm.maybe_resolve_sequences();
    assert!(tm.epoch_bump_required());
    // Transactional: the transaction must be aborted.
    let mut tm = in_transaction(std::slice::from_ref(&a));
    let a0 = tm.assign_sequence(&a, 2);
    tm.mark_sequence_unresolved(&a, a0.id);
    tm.handle_failed_batch(
        &a,
        Some(a0.id),
        &broker(ResponseError::RequestTimedOut),
        false,
    );
    tm.maybe_resolve_sequences();
    assert_eq!(tm.state(), AbortableError);
}

#[test]
fn a_failed_transactional_batch_moves_later_sequences_down() {
    let a = tp("t", 0);
    let mut tm = in_transaction(std::slice::from_ref(&a));
    let a0 = tm.assign_sequence(&a, 2);
    let a1 = tm.assign_sequence(&a, 3);
    let a2 = tm.assign_sequence(&a, 1);
    tm.handle_failed_batch(
        &a,
        Some(a1.id),
        &broker(ResponseError::MessageTooLarge),
        true,
    );
    assert_eq!(tm.in_flight_batch(&a, a0.id).unwrap().base_sequence, 0);
    assert_eq!(tm.in_flight_batch(&a, a2.id).unwrap().base_sequence, 2);
    assert_eq!(tm.assign_sequence(&a, 1).base_sequence, 3);
}

#[test]
fn an_exhausted_epoch_asks_for_a_new_producer_id() {
    let mut tm = TransactionManager::new(None);
    assert!(tm.bump_idempotent_epoch_and_reset_id_if_needed());
    tm.handle_init_producer_id(pid(7, i16::MAX), false);
    let a = tp("t", 0);
    let a0 = tm.assign_sequence(&a, 1);
    tm.handle_failed_batch(
        &a,
        Some(a0.id),
        &broker(ResponseError::OutOfOrderSequenceNumber),
        true,
    );
    assert!(tm.epoch_bump_required());
    assert!(tm.bump_idempotent_epoch_and_reset_id_if_needed());
    assert_eq!(tm.state(), Initializing);
    assert!(!tm.producer_id_and_epoch().is_valid());
    assert!(tm.should_stop_drain(&a, None));
    tm.handle_init_producer_id(pid(8, 0), false);
    assert_eq!(tm.assign_sequence(&a, 1).base_sequence, 0);
}

#[test]
fn an_idempotent_producer_fails_sends_only_when_fatal() {
    let mut tm = idempotent();
    // An ordinary batch failure changes no state.
    let a = tp("t", 0);
    let a0 = tm.assign_sequence(&a, 1);
    tm.handle_failed_batch(&a, Some(a0.id), &broker(ResponseError::InvalidRecord), true);
    assert_eq!(tm.state(), Ready);
    tm.maybe_add_partition(&a).unwrap();
    let a1 = tm.assign_sequence(&a, 1);
    tm.handle_failed_batch(
        &a,
        Some(a1.id),
        &broker(ResponseError::ClusterAuthorizationFailed),
        true,
    );
    assert_eq!(tm.state(), FatalError);
    assert!(tm.maybe_add_partition(&a).unwrap_err().is_fatal());
    // The InitProducerId request given up leaves the state ready to ask again.
    let mut tm = TransactionManager::new(None);
    assert!(tm.bump_idempotent_epoch_and_reset_id_if_needed());
    assert!(!tm.bump_idempotent_epoch_and_reset_id_if_needed());
    tm.abandon_idempotent_init();
    assert!(tm.bump_idempotent_epoch_and_reset_id_if_needed());
}

#[test]
fn sequences_wrap_at_i32_max() {
    assert_eq!(increment_sequence(5, 3), 8);
    assert_eq!(increment_sequence(i32::MAX, 1), 0);
    assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
}
