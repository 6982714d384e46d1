//! What a Produce answer means for the batch it answers.
//!
//! The broker answers each batch with an error code. Most codes say whether
//! to try again; two say more because batches are numbered (see
//! [`super::writer`]): a duplicate is a batch written before, by an attempt
//! whose answer was lost, so it counts as written; a gap in the numbering
//! behind a batch that is itself being retried only means "wait your turn",
//! while a gap at the head of the line means the broker no longer follows
//! this numbering, and the writer starts a new one.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ProduceResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, HeaderVersion};

/// Why a batch was not written this time.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    /// Worth another attempt with the same numbering; `moved` when the
    /// leader may have changed or the connection is gone.
    Retry { reason: String, moved: bool },
    /// Worth another attempt under a new producer id.
    Renumber(String),
    /// No attempt can succeed.
    Permanent(String),
    /// The cluster does not allow this client to write here: no record of
    /// this producer can succeed, so it takes no more.
    Refused(String),
}

#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// Written at this base offset (-1: written earlier, offset no longer known).
    Written(i64),
    Failed(Failure),
}

/// One partition's part of a Produce answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PartitionAnswer {
    pub(super) error_code: i16,
    pub(super) base_offset: i64,
    pub(super) message: Option<String>,
}

/// A partition's answer, or why none came (the connection failed, the
/// answer was overdue or unreadable).
pub(super) type Answer = Result<PartitionAnswer, String>;

/// Each partition's part of a Produce answer, in the order they came.
pub(super) fn partition_answers(
    mut frame: Bytes,
    version: i16,
) -> Result<Vec<(i32, PartitionAnswer)>, String> {
    ResponseHeader::decode(&mut frame, ProduceResponse::header_version(version))
        .and_then(|_| ProduceResponse::decode(&mut frame, version))
        .map_err(|e| format!("unreadable answer: {e}"))
        .map(|response| {
            response
                .responses
                .into_iter()
                .flat_map(|t| t.partition_responses)
                .map(|p| {
                    let answer = PartitionAnswer {
                        error_code: p.error_code,
                        base_offset: p.base_offset,
                        message: p.error_message.map(|m| m.to_string()),
                    };
                    (p.index, answer)
                })
                .collect()
        })
}

/// What an answer means for its batch; `first` when no earlier batch of the
/// partition is still unwritten (a gap in the numbering is then the
/// broker's, not ours).
pub(super) fn outcome(answer: Answer, first: bool) -> Outcome {
    match answer {
        Ok(answer) => {
            let detail = answer
                .message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            classify(answer.error_code, answer.base_offset, first, &detail)
        }
        Err(reason) => Outcome::Failed(Failure::Retry {
            reason,
            moved: true,
        }),
    }
}

/// What a Produce error code means for the batch; see the module documentation.
fn classify(code: i16, base_offset: i64, first: bool, detail: &str) -> Outcome {
    use ResponseError as E;
    let Some(error) = ResponseError::try_from_code(code) else {
        return Outcome::Written(base_offset);
    };
    let reason = format!("{error}{detail}");
    let failure = match error {
        // Written before, by an attempt whose answer was lost, and too long ago to be answered with its offsets.
        E::DuplicateSequenceNumber => return Outcome::Written(-1),
        // The batch ahead of this one is not written yet: this one waits its turn.
        E::OutOfOrderSequenceNumber if !first => Failure::Retry {
            reason,
            moved: false,
        },
        E::OutOfOrderSequenceNumber
        | E::UnknownProducerId
        | E::InvalidProducerEpoch
        | E::ProducerFenced => Failure::Renumber(reason),
        E::NotLeaderOrFollower
        | E::LeaderNotAvailable
        | E::UnknownTopicOrPartition
        | E::FencedLeaderEpoch
        | E::UnknownLeaderEpoch
        | E::BrokerNotAvailable
        | E::ReplicaNotAvailable
        | E::KafkaStorageError => Failure::Retry {
            reason,
            moved: true,
        },
        error if error.is_retriable() => Failure::Retry {
            reason,
            moved: false,
        },
        error if crate::kafka::admin::is_refusal(error) => Failure::Refused(reason),
        _ => Failure::Permanent(reason),
    };
    Outcome::Failed(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(error: ResponseError) -> i16 {
        error.code()
    }

    fn kind(outcome: Outcome) -> &'static str {
        match outcome {
            Outcome::Written(_) => "written",
            Outcome::Failed(Failure::Retry { moved: true, .. }) => "retry elsewhere",
            Outcome::Failed(Failure::Retry { moved: false, .. }) => "retry",
            Outcome::Failed(Failure::Renumber(_)) => "renumber",
            Outcome::Failed(Failure::Permanent(_)) => "fail",
            Outcome::Failed(Failure::Refused(_)) => "refused",
        }
    }

    #[test]
    fn a_batch_the_broker_already_wrote_counts_as_written() {
        assert!(matches!(classify(0, 120, true, ""), Outcome::Written(120)));
        let duplicate = classify(code(ResponseError::DuplicateSequenceNumber), -1, true, "");
        assert_eq!(kind(duplicate), "written");
    }

    #[test]
    fn transient_errors_are_retried_and_permanent_ones_are_not() {
        let first = |e| kind(classify(code(e), -1, true, ""));
        assert_eq!(first(ResponseError::NotEnoughReplicas), "retry");
        assert_eq!(first(ResponseError::RequestTimedOut), "retry");
        assert_eq!(first(ResponseError::NotLeaderOrFollower), "retry elsewhere");
        assert_eq!(first(ResponseError::MessageTooLarge), "fail");
        assert_eq!(first(ResponseError::TopicAuthorizationFailed), "refused");
        assert_eq!(first(ResponseError::InvalidRecord), "fail");
    }

    #[test]
    fn a_gap_behind_an_unwritten_batch_waits_but_a_gap_at_the_head_renumbers() {
        let gap = code(ResponseError::OutOfOrderSequenceNumber);
        assert_eq!(kind(classify(gap, -1, false, "")), "retry");
        assert_eq!(kind(classify(gap, -1, true, "")), "renumber");
        let forgotten = code(ResponseError::UnknownProducerId);
        assert_eq!(kind(classify(forgotten, -1, true, "")), "renumber");
    }
}
