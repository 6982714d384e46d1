//! `metrocloud topics ...`

use clap::Subcommand;

use super::CliError;
use crate::cluster::Principal;
use crate::cluster::secure::acl_plan;
use crate::config::Config;
use crate::kafka::admin::{AdminClient, Timeouts};
use crate::kafka::topics::{self, Ensured, TopicError};

#[derive(Debug, Subcommand)]
pub(crate) enum TopicsCommand {
    /// Create the topic from KAFKA_* settings if missing; check an existing one is as strong.
    Ensure,
    /// On a cluster that authorizes: create every pipeline topic, and the
    /// least-privilege ACLs of the users producer, consumer, console,
    /// gateway and pipeline (see the README's table). Needs a super user (admin).
    Grant,
    /// Print partitions, leaders, replicas, ISR and durability configs.
    Describe {
        /// Topic to describe [default: KAFKA_TOPIC_NAME].
        #[arg(long)]
        topic: Option<String>,
    },
}

pub(crate) async fn run(command: TopicsCommand, config: &Config) -> Result<(), CliError> {
    let admin = AdminClient::new(config.brokers(), Timeouts::default());
    match command {
        TopicsCommand::Ensure => {
            let spec = config.sensor_topic();
            let outcome = topics::ensure_topic(&admin, &spec).await.map_err(failure)?;
            match outcome {
                Ensured::Created => println!(
                    "created topic {}: {} partitions, replication factor {}, min.insync.replicas={}",
                    spec.name, spec.partitions, spec.replication_factor, spec.min_insync_replicas
                ),
                Ensured::AlreadyExisted { notes } => {
                    println!(
                        "topic {} already exists and matches the configuration",
                        spec.name
                    );
                    for note in notes {
                        println!("note: {note}");
                    }
                }
            }
            let description = topics::describe_topic(&admin, &spec.name)
                .await
                .map_err(failure)?;
            print!("{description}");
            Ok(())
        }
        TopicsCommand::Grant => {
            for spec in config.pipeline_topics() {
                let outcome = topics::ensure_topic(&admin, &spec).await.map_err(failure)?;
                let done = match outcome {
                    Ensured::Created => "created",
                    Ensured::AlreadyExisted { .. } => "already there",
                };
                println!("topic {}: {done}", spec.name);
            }
            let plan = acl_plan(&config.pipeline_names());
            admin
                .create_acls(&plan)
                .await
                .map_err(|e| CliError::Failed(format!("cannot create the ACLs: {e}")))?;
            let users: Vec<&str> = Principal::ALL
                .iter()
                .map(|p| p.name())
                .filter(|name| plan.iter().any(|entry| entry.user == *name))
                .collect();
            println!("{} ACL entries for {}", plan.len(), users.join(", "));
            Ok(())
        }
        TopicsCommand::Describe { topic } => {
            let name = topic.unwrap_or_else(|| config.topic.clone());
            let description = topics::describe_topic(&admin, &name)
                .await
                .map_err(failure)?;
            print!("{description}");
            Ok(())
        }
    }
}

fn failure(e: TopicError) -> CliError {
    match e {
        TopicError::Unsafe { .. } => CliError::Usage(e.to_string()),
        other => CliError::Failed(other.to_string()),
    }
}
