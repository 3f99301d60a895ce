pub mod clients;
pub mod pg;
