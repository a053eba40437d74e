//! Metadata: the cluster as this node's image has it.

use std::sync::Arc;

use rivulet_metadata::image::MetadataImage;
use rivulet_metadata::security::{Access, Operation, ResourceType};

use super::BrokerApi;
use crate::control::CATCH_UP_TIMEOUT;

/// The image to answer from and the names it does not know.
#[derive(Debug)]
pub struct MetadataView {
    /// The image (caught up with the controller if a name was unknown).
    pub image: Arc<MetadataImage>,
    /// The active controller's id, when known.
    pub controller_id: Option<u64>,
    /// Requested topics the image does not hold (or the caller may not
    /// describe).
    pub unknown_topics: Vec<String>,
    /// Requested topics the caller may not describe.
    pub unauthorized_topics: Vec<String>,
    /// The topics the caller may describe: the ones to answer with.
    pub described: std::collections::BTreeSet<String>,
}

impl BrokerApi {
    /// The image for a Metadata answer about `topics` (empty: all). A topic
    /// this node does not know may have been created through another node a
    /// moment ago: the node catches up with the controller before calling it
    /// unknown (KIP-631's "fresh after a write").
    /// Topics `access` may not describe are left out (as unknown, so their
    /// existence is not told either).
    pub async fn metadata(&self, topics: &[String], access: &Access) -> MetadataView {
        let may_describe = |image: &MetadataImage, name: &str| {
            access.allows(image, Operation::Describe, ResourceType::Topic, name)
        };
        let mut image = self.mgr.image();
        if topics.iter().any(|n| image.topic(n).is_none())
            && self.mgr.control.catch_up(CATCH_UP_TIMEOUT).await
        {
            image = self.mgr.image();
        }
        let unknown_topics = topics
            .iter()
            .filter(|n| image.topic(n).is_none() && may_describe(&image, n))
            .cloned()
            .collect();
        let unauthorized_topics = topics
            .iter()
            .filter(|n| !may_describe(&image, n))
            .cloned()
            .collect();
        let described = image
            .topics()
            .keys()
            .filter(|n| may_describe(&image, n))
            .cloned()
            .collect();
        MetadataView {
            described,
            unauthorized_topics,
            controller_id: self.mgr.control.controller().and_then(|(id, _)| id),
            image,
            unknown_topics,
        }
    }
}
