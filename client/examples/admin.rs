//! Creates a topic (if missing) and describes it and the cluster.
//!
//! ```text
//! cargo run -p rivulet-client --example admin -- orders
//! ```
//! The cluster is `RIVULET_BOOTSTRAP` (default `127.0.0.1:9092`).

use rivulet_client::{Admin, ClientConfig, ErrorCode};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let topic = std::env::args().nth(1).unwrap_or_else(|| "orders".into());
    let bootstrap = std::env::var("RIVULET_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let admin = Admin::connect(ClientConfig::new(&bootstrap)).await?;

    let configs = [("min.insync.replicas".to_owned(), "1".to_owned())];
    match admin.create_topic(&topic, 3, 1, &configs).await {
        Ok(_) => println!("created {topic}"),
        Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => println!("{topic} exists"),
        Err(e) => return Err(e.into()),
    }
    let cluster = admin.describe_cluster().await?;
    println!(
        "cluster {} controller {:?}",
        cluster.cluster_id, cluster.controller_leader
    );
    for b in &cluster.brokers {
        println!("  broker {} at {} fenced={}", b.id, b.address, b.fenced);
    }
    let t = admin.describe_topic(&topic).await?;
    for p in &t.partitions {
        let o = admin.partition_offsets(&topic, p.partition).await?;
        println!(
            "  {topic}-{}: leader {:?} isr {:?} log [{}, {})",
            p.partition, p.leader, p.isr, o.log_start_offset, o.high_watermark
        );
    }
    Ok(())
}
