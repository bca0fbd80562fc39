//! Configuration: schema, environment substitution, includes and validation.
pub mod duration;
