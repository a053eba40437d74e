//! Produces keyed records and prints where each landed.
//!
//! ```text
//! rivulet topic create orders --partitions 3 --replication-factor 3
//! cargo run -p rivulet-client --example produce -- orders 10
//! ```
//! The cluster is `RIVULET_BOOTSTRAP` (default `127.0.0.1:9092`).

use rivulet_client::{ClientConfig, Producer, ProducerConfig, ProducerRecord};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "orders".into());
    let count: u32 = args.next().map_or(Ok(10), |n| n.parse())?;
    let bootstrap = std::env::var("RIVULET_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());

    let producer =
        Producer::connect(ClientConfig::new(&bootstrap), ProducerConfig::default()).await?;
    // Queue everything first (batched per partition), then await deliveries.
    let mut deliveries = Vec::new();
    for i in 0..count {
        let record = ProducerRecord::new(topic.clone(), format!("order #{i}"))
            .key(format!("customer-{}", i % 4))
            .header("source", "example");
        deliveries.push(producer.send(record).await?);
    }
    for d in deliveries {
        let m = d.await?;
        println!("{}-{} @ {:?}", m.topic, m.partition, m.offset);
    }
    Ok(())
}
