//! Local Lambda (being written).
