//! The flush policy: a pure state machine with an injected clock (being written).
