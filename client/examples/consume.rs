//! Reads a topic from the beginning and prints its records until it has been
//! idle for two seconds.
//!
//! ```text
//! cargo run -p rivulet-client --example consume -- orders
//! ```
//! The cluster is `RIVULET_BOOTSTRAP` (default `127.0.0.1:9092`).

use std::time::{Duration, Instant};

use rivulet_client::{ClientConfig, Consumer, ConsumerConfig, SeekTo};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let topic = std::env::args().nth(1).unwrap_or_else(|| "orders".into());
    let bootstrap = std::env::var("RIVULET_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());

    let mut consumer =
        Consumer::connect(ClientConfig::new(&bootstrap), ConsumerConfig::default()).await?;
    consumer.assign(&topic, &[]).await?; // every partition
    consumer.seek(&topic, None, SeekTo::Beginning).await?;
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(2) {
        let records = consumer.poll().await?;
        if !records.is_empty() {
            idle_since = Instant::now();
        }
        for r in records {
            let key = r.key.as_deref().map(String::from_utf8_lossy);
            let value = r.value.as_deref().map(String::from_utf8_lossy);
            println!(
                "{}-{}@{} key={key:?} value={value:?}",
                r.topic, r.partition, r.offset
            );
        }
    }
    for (t, p) in consumer.assignment() {
        println!(
            "{t}-{p}: position {:?}, high watermark {:?}",
            consumer.position(&t, p),
            consumer.high_watermark(&t, p)
        );
    }
    Ok(())
}
