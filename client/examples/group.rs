//! Reads a topic as a member of a consumer group until Ctrl-C, printing
//! assignment changes; run it in two terminals to watch the partitions split.
//! Offsets are committed automatically and on exit.
//!
//! ```text
//! cargo run -p rivulet-client --example group -- orders billing
//! ```
//! The cluster is `RIVULET_BOOTSTRAP` (default `127.0.0.1:9092`).

use rivulet_client::{ClientConfig, GroupConfig, GroupConsumer, OffsetReset, RebalanceEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let topic = std::env::args().nth(1).unwrap_or_else(|| "orders".into());
    let group = std::env::args().nth(2).unwrap_or_else(|| "example".into());
    let bootstrap = std::env::var("RIVULET_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());

    let mut config = GroupConfig::default();
    // Partitions the group never committed start at the beginning.
    config.consumer.offset_reset = OffsetReset::Earliest;
    let mut consumer =
        GroupConsumer::subscribe(ClientConfig::new(&bootstrap), &group, &[&topic], config).await?;
    let mut count = 0u64;
    loop {
        let records = tokio::select! {
            r = consumer.poll() => r?,
            _ = tokio::signal::ctrl_c() => break,
        };
        for e in consumer.take_events() {
            match e {
                RebalanceEvent::Assigned(p) => println!("assigned {p:?}"),
                RebalanceEvent::Revoked(p) => println!("revoked {p:?}"),
                RebalanceEvent::Lost(p) => println!("lost {p:?} (fenced; rejoined)"),
            }
        }
        count += records.len() as u64;
        if let Some(last) = records.last() {
            println!(
                "{count} records so far; last {}-{}@{}",
                last.topic, last.partition, last.offset
            );
        }
    }
    let (member, epoch) = consumer.member();
    consumer.close().await?; // commits and leaves: the partitions move at once
    println!("{member} (epoch {epoch}) read {count} records and left {group}");
    Ok(())
}
