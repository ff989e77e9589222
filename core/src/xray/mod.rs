//! OTLP spans → X-Ray segment documents. [`translate::translate_encoded`] (encoded requests, read
//! as `crate::otlp_wire` views) is the translator, [`translate`] its front for the generated types;
//! both are pure: no I/O, no clock, no globals.
//!
//! - `translate.rs`: the batch: segments vs subsegments, embedding, the 64 KiB limit.
//! - `segment.rs`: one span → the members of its (sub)segment (names, http, aws, sql, cause,
//!   annotations, metadata, links).
//! - `cause.rs`: exception events and stack traces; `ids.rs`, `names.rs`, `json.rs`: the pieces.

mod cause;
pub mod ids;
pub mod json;
pub mod names;
mod segment;
pub mod translate;

pub use translate::{Document, TranslateOptions, Translation, translate};
