//! Cluster metadata: records, image, controller logic.
