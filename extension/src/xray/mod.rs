//! OTLP spans → X-Ray segment documents. [`translate`] is pure: no I/O, no clock, no globals.

pub mod translate;

pub use translate::{Document, TranslateOptions, Translation, translate};
