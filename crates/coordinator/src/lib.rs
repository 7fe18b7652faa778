//! Group coordinator as a pure state machine over `__consumer_offsets`.
